"""The Docker launcher: one container per trial, through the Docker SDK.

The container runs ``job.command`` in the configured image (the bundled trainer image, or
NVIDIA's TAO PyTorch container: nothing here knows which), with no network, the trial's
GPUs as a device request, the results folder bind-mounted read-write and datasets
read-only, each at its own host path so a rendered spec is valid inside and out. It runs
as a non-root user (the invoking user, so results belong to them) under Docker's init,
which forwards SIGTERM to the job and reaps its workers.

A trial runs someone's training code on someone's data, so its container is also locked
down by default: every capability dropped, no privilege gain through set-uid binaries
(``no-new-privileges``), and a read-only root filesystem with a tmpfs at ``/tmp`` for
scratch (``HOME`` points there too: Triton, torch and matplotlib caches). The options
``drop_capabilities``, ``no_new_privileges`` and ``read_only_root`` turn each off for an
image that needs it (one that writes into its own tree, say).

A thread follows the container's output into ``job.log_path`` (appended), where the
monitor tails it. Containers carry labels (study, trial, worker, results dir, log path):
after a worker dies, :meth:`DockerLauncher.reap_orphans` finds its containers by label,
and :meth:`DockerLauncher.attach` picks one up again, finished or running.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import math
import os
import re
import secrets
import shlex
import threading
from pathlib import Path
from typing import Any, Callable

import docker
import docker.errors
from docker.models.containers import Container
from docker.types import DeviceRequest, LogConfig, Mount, Ulimit

from automl.errors import UserError
from automl.launchers.base import JobResult, JobSpec, wait_by_polling
from automl.launchers.records import (
    JOB_RECORD,
    LiveJobs,
    now,
    read_record,
    record_result,
    update_record,
    worker_id,
    write_record,
)

DEFAULT_IMAGE = "dino-automl/trainer:latest"
LABEL_STUDY = "automl.study"
LABEL_TRIAL = "automl.trial"
LABEL_WORKER = "automl.worker"
LABEL_RESULTS = "automl.results_dir"
LABEL_LOG = "automl.log_path"
# The user a container runs as when root launches it into a root-owned results folder.
UNPRIVILEGED_USER = "1000:1000"
_ENDED = {"exited", "dead"}
SCRATCH = "/tmp"  # the tmpfs of a read-only container, and its HOME
# exec: Triton and torch.compile load the kernels they build from their caches there
_SCRATCH_OPTIONS = "rw,exec,nosuid,nodev,mode=1777"


class DockerLauncherError(UserError):
    """The Docker engine or the image is not usable as configured."""


def _container_name(study: str, trial: int) -> str:
    safe = re.sub(r"[^A-Za-z0-9_.-]", "-", study).strip("-.")[:40] or "study"
    return f"automl-{safe}-trial{trial}-{secrets.token_hex(3)}"


def _absolute(path: str | os.PathLike[str]) -> Path:
    """Absolute, ``..`` removed, symlinks kept: the path as the job's command names it."""
    return Path(os.path.abspath(path))


def _bind(path: Path, read_only: bool) -> Mount:
    """``path`` inside, at the name the job uses, from its real location on the host."""
    return Mount(target=str(path), source=str(path.resolve()), type="bind", read_only=read_only)


def _covered(path: Path, mounts: list[Mount]) -> bool:
    return any(path == Path(m["Target"]) or Path(m["Target"]) in path.parents for m in mounts)


class _LogPump(threading.Thread):
    """Appends a container's stdout/stderr to a host file as the bytes arrive.

    ``skip``: bytes of the container's output already in the file (a re-attach after the
    worker that followed it died); Docker replays the output from the start, identically.
    """

    def __init__(self, container: Container, log_path: Path, skip: int = 0) -> None:
        super().__init__(name=f"docker-logs-{container.short_id}", daemon=True)
        self._container = container
        self._log_path = log_path
        self._skip = skip
        self.error: Exception | None = None

    def run(self) -> None:
        try:
            stream = self._container.logs(stream=True, follow=True)
            with open(self._log_path, "ab", buffering=0) as log:
                for chunk in stream:
                    if self._skip:
                        dropped = min(self._skip, len(chunk))
                        chunk, self._skip = chunk[dropped:], self._skip - dropped
                    if chunk:
                        log.write(chunk)
        except Exception as exc:  # noqa: BLE001 - reported when the job's result is read
            self.error = exc


class DockerJob:
    """A trial's container (implements :class:`automl.launchers.base.JobHandle`)."""

    def __init__(self, job: JobSpec, container: Container, pump: _LogPump) -> None:
        self.job = job
        self._container = container
        self._pump = pump
        self._result: JobResult | None = None
        self._lock = threading.Lock()

    @property
    def id(self) -> str:
        return self._container.short_id

    @property
    def container(self) -> Container:
        return self._container

    @property
    def result(self) -> JobResult | None:
        return self._result

    def _state(self) -> dict[str, Any] | None:
        """The container's State, or None when it no longer exists."""
        try:
            self._container.reload()
        except docker.errors.NotFound:
            return None
        return self._container.attrs["State"]

    def poll(self) -> JobResult | None:
        with self._lock:
            if self._result is None:
                state = self._state()
                if state is None or state["Status"] in _ENDED:
                    self._finish(state, stopped=False)
            return self._result

    def wait(self, timeout: float | None = None) -> JobResult:
        return wait_by_polling(self, timeout, 0.1)

    def stop(self, grace_period: float = 10.0) -> JobResult:
        """SIGTERM (forwarded by Docker's init), SIGKILL after ``grace_period`` s, remove."""
        with self._lock:
            if self._result is not None:
                return self._result
            state = self._state()
            running = state is not None and state["Status"] not in _ENDED
            if running:
                with contextlib.suppress(docker.errors.NotFound):
                    # Docker counts whole seconds; never less than asked.
                    self._container.stop(timeout=max(0, math.ceil(grace_period)))
                state = self._state()
            self._finish(state, stopped=running)
            return self._result  # type: ignore[return-value]

    def _finish(self, state: dict[str, Any] | None, stopped: bool) -> None:
        """Read the result, let the log thread drain, then remove the container."""
        self._pump.join(timeout=10.0)
        if state is None:
            result = JobResult(exit_code=-1, stopped=stopped)
            note = f"container {self.id} disappeared (removed outside this launcher); exit code unknown"
        else:
            result = JobResult(
                exit_code=int(state.get("ExitCode", -1)),
                oom_killed=bool(state.get("OOMKilled", False)),
                stopped=stopped,
            )
            note = f"container {self.id} ended: exit code {result.exit_code}" + (
                ", killed by the out-of-memory killer" if result.oom_killed else ""
            ) + (", stopped by the orchestrator" if stopped else "")
        if self._pump.is_alive() or self._pump.error is not None:
            note += f"; log streaming incomplete ({self._pump.error or 'still streaming after 10 s'})"
        with contextlib.suppress(OSError), open(self.job.log_path, "ab") as log:
            log.write(f"[automl] {now()} {note}\n".encode())
        with contextlib.suppress(docker.errors.NotFound, docker.errors.APIError):
            self._container.remove(force=True)
        self._result = result
        record_result(self.job.results_dir / JOB_RECORD, result, _describes(self.id))


def _describes(container_id: str) -> Callable[[dict[str, Any]], bool]:
    """Accepts the ``job.json`` of this container only (a later launch may have replaced it)."""
    return lambda record: record.get("container_id") == container_id


def _output_written(job: JobSpec, container: Container, log_size: int) -> int | None:
    """How many bytes of the container's output the log already holds: everything after
    the offset recorded at launch (only our pump wrote there). None if unknown."""
    record = read_record(job.results_dir / JOB_RECORD)
    if record is None or not _describes(container.short_id)(record):
        return None
    offset = record.get("log_offset")
    if not isinstance(offset, int) or not 0 <= offset <= log_size:
        return None
    return log_size - offset


class DockerLauncher:
    """Runs each job in a container of ``image``; options come from the run config.

    ``user``: ``None`` picks the invoking user's ``uid:gid``; when that is root, the
    first non-root owner of the results folder or a folder above it, else ``1000:1000``;
    root hands the results folder to that user. ``""`` keeps the image's own user.
    ``shm_size``/``mem_limit``: Docker sizes (``"8g"``); ``mem_limit`` makes an
    over-budget job end with ``oom_killed``. ``ulimits``: e.g. ``{"memlock": -1,
    "stack": 67108864}`` as NVIDIA advises for multi-GPU PyTorch (the engine must be
    allowed to raise them). ``drop_capabilities`` (``--cap-drop ALL``),
    ``no_new_privileges`` and ``read_only_root`` (with a tmpfs at ``/tmp``, of
    ``scratch_size`` if given, else the engine's default: half the host's memory, counted
    against ``mem_limit``) are on by default; turn one off only for an image that needs it.
    """

    name = "docker"

    def __init__(
        self,
        image: str = DEFAULT_IMAGE,
        shm_size: str = "8g",
        user: str | None = None,
        mem_limit: str | None = None,
        extra_env: dict[str, str] | None = None,
        ulimits: dict[str, int] | None = None,
        reap_grace_period: float = 10.0,
        drop_capabilities: bool = True,
        no_new_privileges: bool = True,
        read_only_root: bool = True,
        scratch_size: str | None = None,
        *,
        client: docker.DockerClient | None = None,
    ) -> None:
        self.image = image
        self.shm_size = shm_size
        self.user = user
        self.mem_limit = mem_limit
        self.extra_env = dict(extra_env or {})
        self.ulimits = dict(ulimits or {})
        self.reap_grace_period = reap_grace_period
        self.drop_capabilities = drop_capabilities
        self.no_new_privileges = no_new_privileges
        self.read_only_root = read_only_root
        self.scratch_size = scratch_size
        self.client = client or _connect()
        self._live: LiveJobs[DockerJob] = LiveJobs()
        self.check_image()

    # -- set-up checks ---------------------------------------------------------------

    def check_image(self) -> None:
        """Fail before any trial when the image is not on this engine."""
        try:
            self.client.images.get(self.image)
        except docker.errors.ImageNotFound:
            if self.image.startswith("dino-automl/trainer"):
                how = (
                    "build it from the repository root: docker/build_trainer.sh --from-venv .venv "
                    "(CPU/CI; see docker/trainer.Dockerfile for the CUDA production build)"
                )
            else:
                how = f"pull it first: docker pull {self.image} (NGC images need `docker login nvcr.io`)"
            raise DockerLauncherError(
                f"launcher docker: image {self.image!r} is not on this Docker engine; {how}; "
                f"or set launcher.options.image to an image that is"
            ) from None

    # -- launching -------------------------------------------------------------------

    def _container_user(self, results_dir: Path) -> str | None:
        if self.user is not None:
            return self.user or None
        if os.getuid() != 0:
            return f"{os.getuid()}:{os.getgid()}"
        # root: whoever owns the workspace (the orchestrator itself may have created the
        # trial folders as root), else an unprivileged uid
        for folder in (results_dir, *results_dir.parents):
            if folder.exists() and (st := folder.stat()).st_uid != 0:
                return f"{st.st_uid}:{st.st_gid}"
        return UNPRIVILEGED_USER

    def _mounts(self, job: JobSpec, user: str | None = None) -> list[Mount]:
        """Each path at the path the job names it by (the target), from its real location."""
        results = _absolute(job.results_dir)
        mounts = [_bind(results, read_only=False)]
        for raw in job.read_only_paths:
            path = _absolute(raw)
            if not path.exists():
                raise DockerLauncherError(
                    f"launcher docker: read-only path {path} of trial {job.trial_number} does not "
                    f"exist on this host, so it cannot be mounted; stage the data first"
                )
            problem = _unreadable(path, user)
            if problem:
                raise DockerLauncherError(
                    f"launcher docker: read-only path {path} of trial {job.trial_number} is not readable "
                    f"by the container user {user} ({problem}); make it readable (chmod -R a+rX {path}) "
                    f"or set launcher.options.user"
                )
            if all(Path(m["Target"]) != path for m in mounts):
                mounts.append(_bind(path, read_only=True))
        for raw in job.cache_dirs:  # shared, writable: compiled kernels outlive the container
            cache = _absolute(raw)
            cache.mkdir(parents=True, exist_ok=True)
            if all(Path(m["Target"]) != cache for m in mounts):  # nested in a read-only one is fine
                mounts.append(_bind(cache, read_only=False))
        if job.workdir is not None:
            workdir = _absolute(job.workdir)
            if workdir.exists() and not _covered(workdir, mounts):
                mounts.append(_bind(workdir, read_only=True))
        return mounts

    def _environment(self, job: JobSpec, user: str | None) -> dict[str, str]:
        env = {"PYTHONUNBUFFERED": "1"}  # progress reaches the log as it happens
        if user is not None or self.read_only_root:
            env["HOME"] = SCRATCH  # an arbitrary uid has no home in the image; a read-only one no writable home
        env.update(self.extra_env)
        env.update(job.env)
        # The slot wins over the image: NGC images set NVIDIA_VISIBLE_DEVICES=all, which an
        # engine whose default runtime is nvidia would honour beside the device request.
        if job.devices:
            env["NVIDIA_VISIBLE_DEVICES"] = ",".join(str(d) for d in job.devices)
        else:
            env.update(NVIDIA_VISIBLE_DEVICES="void", CUDA_VISIBLE_DEVICES="")
        return env

    def _security(self) -> dict[str, Any]:
        """The container's lock-down (``containers.create`` arguments), per the options."""
        options: dict[str, Any] = {}
        if self.drop_capabilities:
            options["cap_drop"] = ["ALL"]
        if self.no_new_privileges:
            options["security_opt"] = ["no-new-privileges:true"]
        if self.read_only_root:
            size = f",size={self.scratch_size}" if self.scratch_size else ""
            options.update(read_only=True, tmpfs={SCRATCH: _SCRATCH_OPTIONS + size})
        return options

    def launch(self, job: JobSpec) -> DockerJob:
        results = _absolute(job.results_dir)
        user = self._container_user(results)  # before mkdir: a new folder would be root's
        results.mkdir(parents=True, exist_ok=True)
        job.log_path.parent.mkdir(parents=True, exist_ok=True)
        if os.getuid() == 0:
            _hand_over(results, user)
            for cache in job.cache_dirs:  # the container user writes the shared caches too
                _absolute(cache).mkdir(parents=True, exist_ok=True)
                _hand_over(_absolute(cache), user)
        mounts = self._mounts(job, user)
        labels = {
            LABEL_STUDY: job.study_name,
            LABEL_TRIAL: str(job.trial_number),
            LABEL_WORKER: worker_id(),
            LABEL_RESULTS: str(results),
            LABEL_LOG: str(_absolute(job.log_path)),
        }
        devices = (
            [DeviceRequest(device_ids=[str(d) for d in job.devices], capabilities=[["gpu"]])]
            if job.devices
            else None
        )
        with open(job.log_path, "ab", buffering=0) as log:
            log.write(
                f"[automl] {now()} trial {job.trial_number} of study {job.study_name!r} in "
                f"{self.image} as {user or 'the image user'}: {shlex.join(job.command)}\n".encode()
            )
            log_offset = log.tell()  # the container's output starts here
        try:
            container = self.client.containers.create(
                self.image,
                command=list(job.command),
                name=_container_name(job.study_name, job.trial_number),
                labels=labels,
                environment=self._environment(job, user),
                working_dir=str(_absolute(job.workdir) if job.workdir else results),
                user=user or "",
                mounts=mounts,
                network_mode="none",
                shm_size=self.shm_size,
                mem_limit=self.mem_limit,
                device_requests=devices,
                init=True,  # forwards SIGTERM to the job, reaps data-loader workers
                ulimits=[Ulimit(name=k, soft=v, hard=v) for k, v in self.ulimits.items()] or None,
                # unrotated, so that a re-attach can replay the output from its first byte
                log_config=LogConfig(type="json-file", config={}),
                **self._security(),
            )
        except docker.errors.ImageNotFound:
            self.check_image()
            raise
        except docker.errors.APIError as exc:
            raise DockerLauncherError(
                f"launcher docker: cannot create the container of trial {job.trial_number}: "
                f"{exc.explanation or exc}"
            ) from None
        try:
            container.start()
        except docker.errors.APIError as exc:
            with contextlib.suppress(docker.errors.APIError):
                container.remove(force=True)
            raise DockerLauncherError(_start_error(job, exc)) from None
        pump = _LogPump(container, job.log_path)
        pump.start()
        handle = DockerJob(job, container, pump)
        _write_record(results / JOB_RECORD, self.image, container, job, user, log_offset)
        self._live.add(container.id, handle)
        return handle

    # -- recovery --------------------------------------------------------------------

    def _study_containers(self, study_name: str, trial: int | None = None) -> list[Container]:
        labels = [f"{LABEL_STUDY}={study_name}"]
        if trial is not None:
            labels.append(f"{LABEL_TRIAL}={trial}")
        found = self.client.containers.list(all=True, filters={"label": labels})
        # a label filter matches on key=value exactly; re-check against look-alikes anyway
        return [c for c in found if c.labels.get(LABEL_STUDY) == study_name]

    def reap_orphans(self, study_name: str, keep_trial_numbers: set[int]) -> list[str]:
        """Stop and remove containers of ``study_name`` whose trial is not kept.

        Containers this launcher started and still watches are never touched. Stops run
        in parallel, each with ``reap_grace_period`` s between SIGTERM and SIGKILL.
        Returns the short ids of the removed containers.
        """
        doomed = []
        for container in self._study_containers(study_name):
            trial = container.labels.get(LABEL_TRIAL, "")
            if trial.isdigit() and int(trial) in keep_trial_numbers:
                continue
            if self._live.running(container.id) is not None:
                continue
            doomed.append(container)
        if not doomed:
            return []

        def reap(container: Container) -> str:
            with contextlib.suppress(docker.errors.NotFound):
                if container.status not in _ENDED:
                    container.stop(timeout=max(0, math.ceil(self.reap_grace_period)))
                container.remove(force=True)
            return container.short_id

        with concurrent.futures.ThreadPoolExecutor(max_workers=min(8, len(doomed))) as pool:
            return list(pool.map(reap, doomed))

    def attach(self, job: JobSpec) -> DockerJob | None:
        """The container of ``job``'s trial left by a dead worker, running or finished.

        The output the dead worker had not copied yet is appended to the log; a result
        (exit code, OOM) is read as for a container launched here. Older duplicates of
        the same trial are removed. None when there is no such container.
        """
        found = sorted(
            self._study_containers(job.study_name, job.trial_number),
            key=lambda c: c.attrs.get("Created", ""),
        )
        found = [c for c in found if c.id not in self._live]
        if not found:
            return None
        *older, container = found
        for stale in older:
            with contextlib.suppress(docker.errors.APIError):
                stale.remove(force=True)
        with open(job.log_path, "ab", buffering=0) as log:
            written = _output_written(job, container, log.tell())
            note = f"[automl] {now()} re-attached to container {container.short_id} by {worker_id()}"
            if written is None:
                note += " (where the previous worker stopped reading is unknown: output may repeat)"
            log.write(f"{note}\n".encode())
            offset = log.tell() - (written or 0)  # where the container's output starts, as at launch
            update_record(job.results_dir / JOB_RECORD, _describes(container.short_id), log_offset=offset)
        pump = _LogPump(container, job.log_path, skip=written or 0)
        pump.start()
        handle = DockerJob(job, container, pump)
        self._live.add(container.id, handle)
        return handle


def _connect() -> docker.DockerClient:
    """A client for DOCKER_HOST (or the local socket), or an error saying what to do."""
    try:
        client = docker.from_env(max_pool_size=64)
        client.ping()
        return client
    except docker.errors.DockerException as exc:
        where = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
        text = str(exc)
        if "Permission denied" in text:
            fix = "add this user to the docker group (then log in again) or run as root"
        else:
            fix = (
                "start it (`sudo systemctl start docker`, or `.ci/docker.sh` from this repository) "
                "or point DOCKER_HOST at a running engine"
            )
        raise DockerLauncherError(
            f"launcher docker: cannot reach the Docker daemon at {where} ({text}); {fix}"
        ) from None


def _unreadable(path: Path, user: str | None) -> str | None:
    """Why ``uid:gid`` could not read ``path`` by its mode bits, or None (unknown users pass)."""
    match = re.fullmatch(r"(\d+):(\d+)", user or "")
    if match is None or match.group(1) == "0":
        return None
    uid, gid = int(match.group(1)), int(match.group(2))
    st = path.stat()
    shift = 6 if st.st_uid == uid else 3 if st.st_gid == gid else 0
    needed = 0o5 if path.is_dir() else 0o4
    if (st.st_mode >> shift) & needed != needed:
        return f"mode {st.st_mode & 0o777:04o}, owner {st.st_uid}:{st.st_gid}"
    return None


def _start_error(job: JobSpec, exc: docker.errors.APIError) -> str:
    text = str(exc.explanation or exc)
    if job.devices and ("device driver" in text or "nvidia" in text.lower()):
        return (
            f"launcher docker: trial {job.trial_number} asks for GPUs {list(job.devices)} but the "
            f"Docker engine cannot provide them ({text}); install the NVIDIA Container Toolkit "
            f"and restart dockerd, or run without GPUs"
        )
    return f"launcher docker: cannot start the container of trial {job.trial_number}: {text}"


def _hand_over(results_dir: Path, user: str | None) -> None:
    """Root launching for a non-root container user: that user must be able to write
    the results folder (root created it, or a previous run as another user did)."""
    match = re.fullmatch(r"(\d+):(\d+)", user or "")
    if match is None or match.group(1) == "0":
        return  # the image's user or a user name: nothing to hand over that we can know
    uid, gid = int(match.group(1)), int(match.group(2))
    for root, dirs, files in os.walk(results_dir):
        for name in (root, *(os.path.join(root, d) for d in dirs), *(os.path.join(root, f) for f in files)):
            with contextlib.suppress(FileNotFoundError):
                if os.lstat(name).st_uid != uid:
                    os.lchown(name, uid, gid)


def _write_record(
    path: Path, image: str, container: Container, job: JobSpec, user: str | None, log_offset: int
) -> None:
    """``<results_dir>/job.json``: which container ran this trial, for people and tools;
    ``log_offset`` (where its output starts in the log) lets a later worker re-attach."""
    record = {
        "launcher": "docker",
        "study": job.study_name,
        "trial": job.trial_number,
        "container_id": container.short_id,
        "container_name": container.name,
        "image": image,
        "user": user,
        "worker": worker_id(),
        "command": list(job.command),
        "devices": list(job.devices),
        "log_path": str(job.log_path),
        "log_offset": log_offset,
        "started_at": now(),
    }
    with contextlib.suppress(OSError):
        write_record(path, record)
