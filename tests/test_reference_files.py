"""The TAO reference files: a bare clone skips the tests that read them, saying where it
looked; CI (``CI=true``) fails them instead, so they cannot silently drop out there."""

from __future__ import annotations

import pytest

import reference_files
from reference_files import tao_file


@pytest.fixture
def no_reference(tmp_path, monkeypatch):
    empty = tmp_path / "no-reference"
    empty.mkdir()
    monkeypatch.setattr(reference_files, "TAO_DIR", empty)
    monkeypatch.setenv(reference_files.ENV, str(empty))
    return empty


def test_a_missing_file_skips_with_where_it_looked_and_how_to_fix(no_reference, monkeypatch):
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception) as info:
        tao_file("train.schema.json")
    reason = str(info.value)
    assert f"train.schema.json not found at {no_reference / 'train.schema.json'}" in reason
    assert "AUTOML_TAO_REFERENCE" in reason


@pytest.mark.parametrize("value", ["true", "TRUE", "1"])
def test_on_ci_a_missing_file_fails_instead_of_skipping(no_reference, monkeypatch, value):
    monkeypatch.setenv("CI", value)
    with pytest.raises(pytest.fail.Exception, match="CI=true requires them"):
        tao_file("spec_template_train.yaml")


def test_ci_false_still_skips(no_reference, monkeypatch):
    monkeypatch.setenv("CI", "false")
    with pytest.raises(pytest.skip.Exception):
        tao_file("spec_template_train.yaml")


def test_a_present_file_is_returned(tmp_path, monkeypatch):
    monkeypatch.setattr(reference_files, "TAO_DIR", tmp_path)
    monkeypatch.setenv("CI", "true")
    (tmp_path / "skill_info.yaml").write_text("name: dino\n")
    assert tao_file("skill_info.yaml") == tmp_path / "skill_info.yaml"


def test_the_environment_variable_names_the_folder(tmp_path, monkeypatch):
    monkeypatch.setenv(reference_files.ENV, str(tmp_path))
    assert reference_files._find() == tmp_path
