"""Fixtures of the orchestrator tests (helpers live in orchestrator_utils.py)."""

import uuid

import pytest

from orchestrator_utils import write_coco

PG = dict(host="127.0.0.1", port=5432, user="postgres")


@pytest.fixture
def coco_dirs(tmp_path):
    return write_coco(tmp_path / "data" / "train"), write_coco(tmp_path / "data" / "val", 4)


@pytest.fixture
def pg_url():
    """A fresh database on the real PostgreSQL server (dropped afterwards); its URL."""
    psycopg2 = pytest.importorskip("psycopg2")
    try:
        admin = psycopg2.connect(dbname="postgres", connect_timeout=5, **PG)
    except psycopg2.OperationalError as exc:
        pytest.fail(f"PostgreSQL on 127.0.0.1:5432 is not reachable (scripts/test_services.sh starts it): {exc}")
    admin.autocommit = True
    name = f"automl_test_{uuid.uuid4().hex[:8]}"
    with admin.cursor() as cur:
        cur.execute(f"CREATE DATABASE {name}")
    yield f"postgresql+psycopg2://postgres@127.0.0.1:5432/{name}"
    with admin.cursor() as cur:
        cur.execute(f"DROP DATABASE {name} WITH (FORCE)")
    admin.close()
