"""Trial artifacts (spec.yaml, log tail, ...) in an Optuna artifact store.

Files land in a ``FileSystemArtifactStore`` under ``<workspace>/artifacts``; their metadata
lands in the study storage as trial system attributes, which is how optuna-dashboard (started
with the same store, see :mod:`automl.ui.dashboard`) lists them on each trial's page. The
objective may run in another process than the one that created the trial, so uploads are
addressed by storage + trial id rather than by a live ``optuna.Trial``.
"""

from __future__ import annotations

import mimetypes
import shutil
import tempfile
from pathlib import Path

import optuna
from optuna.artifacts import FileSystemArtifactStore, get_all_artifact_meta, upload_artifact
from optuna.storages import BaseStorage
from optuna.trial import FrozenTrial, Trial

from automl.optuna_private import ArtifactMeta, storage_of
from automl.optuna_private import trial_id as storage_trial_id

# Extensions Python's mimetypes does not know but the browser should show as text
# instead of downloading (the dashboard links each artifact by its MIME type).
_TEXT_SUFFIXES = {".yaml", ".yml", ".log", ".txt", ".out", ".err", ".cfg", ".ini", ".toml"}

StudyOrStorage = optuna.Study | BaseStorage | str
TrialRef = int | Trial | FrozenTrial


def guess_mimetype(filename: str) -> str:
    """MIME type for ``filename``: text/plain for specs and logs, else mimetypes' guess."""
    if Path(filename).suffix.lower() in _TEXT_SUFFIXES:
        return "text/plain"
    return mimetypes.guess_type(filename)[0] or "application/octet-stream"


class ArtifactRecorder:
    """Uploads files of a trial into ``artifact_dir`` and links them to the trial.

    One recorder per process; storages opened from URLs are cached so a study of many
    trials does not open a new database engine per upload.
    """

    def __init__(self, artifact_dir: Path) -> None:
        self.artifact_dir = Path(artifact_dir)
        self.artifact_dir.mkdir(parents=True, exist_ok=True)
        self.store = FileSystemArtifactStore(self.artifact_dir)
        self._storages: dict[str, BaseStorage] = {}

    def storage_of(self, study_or_storage: StudyOrStorage) -> BaseStorage:
        """The storage behind a study, a storage object or a storage URL."""
        if isinstance(study_or_storage, optuna.Study):
            return storage_of(study_or_storage)
        if isinstance(study_or_storage, BaseStorage):
            return study_or_storage
        if study_or_storage not in self._storages:
            self._storages[study_or_storage] = optuna.storages.get_storage(study_or_storage)
        return self._storages[study_or_storage]

    def _unfinished_trial(self, storage: BaseStorage, trial: TrialRef) -> FrozenTrial:
        tid = trial if isinstance(trial, int) else storage_trial_id(trial)
        frozen = storage.get_trial(tid)
        if frozen.state.is_finished():
            raise ValueError(
                f"trial {frozen.number} (id {tid}) is already {frozen.state.name}: "
                "Optuna only links artifacts to unfinished trials, so upload the spec and "
                "log tail before telling the study the trial's result"
            )
        return frozen

    def upload(
        self,
        study_or_storage: StudyOrStorage,
        trial_id: TrialRef,
        path: Path,
        name: str | None = None,
        mimetype: str | None = None,
    ) -> str:
        """Upload the file at ``path`` to the trial; returns the artifact id.

        ``trial_id`` is the storage id (:func:`automl.optuna_private.trial_id`), not ``trial.number``; a
        ``Trial``/``FrozenTrial`` is accepted too. ``name`` renames the file as the
        dashboard shows it (default: the file's own name).
        """
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"artifact to upload does not exist: {path}")
        storage = self.storage_of(study_or_storage)
        frozen = self._unfinished_trial(storage, trial_id)
        filename = name or path.name
        with tempfile.TemporaryDirectory(prefix="automl-artifact-") as tmp:
            # upload_artifact names the artifact after the file's basename
            source = path
            if filename != path.name:
                source = Path(shutil.copy(path, Path(tmp) / filename))
            return upload_artifact(
                artifact_store=self.store,
                file_path=str(source),
                study_or_trial=frozen,
                storage=storage,
                mimetype=mimetype or guess_mimetype(filename),
            )

    def upload_text(
        self, study_or_storage: StudyOrStorage, trial_id: TrialRef, text: str, name: str
    ) -> str:
        """Upload ``text`` (e.g. the last lines of a job's log) as a file called ``name``."""
        with tempfile.TemporaryDirectory(prefix="automl-artifact-") as tmp:
            path = Path(tmp) / name
            path.write_text(text, encoding="utf-8")
            return self.upload(study_or_storage, trial_id, path)

    def artifacts_of(
        self, study_or_storage: StudyOrStorage, trial_id: TrialRef
    ) -> list[ArtifactMeta]:
        """Metadata of the trial's artifacts (order not guaranteed)."""
        storage = self.storage_of(study_or_storage)
        tid = trial_id if isinstance(trial_id, int) else storage_trial_id(trial_id)
        return get_all_artifact_meta(storage.get_trial(tid), storage=storage)

    def find(
        self, study_or_storage: StudyOrStorage, trial_id: TrialRef, filename: str
    ) -> ArtifactMeta | None:
        """The trial's artifact called ``filename``, or None."""
        for meta in self.artifacts_of(study_or_storage, trial_id):
            if meta.filename == filename:
                return meta
        return None

    def read_bytes(self, artifact_id: str) -> bytes:
        """Content of an artifact (raises optuna's ArtifactNotFound if its file is gone)."""
        with self.store.open_reader(artifact_id) as f:
            return f.read()
