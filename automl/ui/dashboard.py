"""optuna-dashboard on the study storage, with the trials' artifacts.

The dashboard polls the storage, so per-epoch intermediate values appear while trials run.
We serve it with wsgiref's threaded server (as optuna-dashboard's own CLI does) rather than
``optuna_dashboard.run_server`` because that one cannot be stopped from another thread, which
tests and embedding callers need. It has no authentication and can delete studies, hence the
loopback default and the explicit opt-in for anything else.
"""

from __future__ import annotations

import errno
import ipaddress
import logging
import socket
import threading
from pathlib import Path
from socketserver import ThreadingMixIn
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import optuna
import optuna_dashboard
from optuna.artifacts import FileSystemArtifactStore

from automl.errors import UserError

log = logging.getLogger(__name__)


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback addresses (127.0.0.0/8, ::1)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class _ThreadingWSGIServer(ThreadingMixIn, WSGIServer):
    # the dashboard's page fires several API calls at once; answer them in parallel
    daemon_threads = True


class _ThreadingWSGIServer6(_ThreadingWSGIServer):
    address_family = socket.AF_INET6


class _QuietHandler(WSGIRequestHandler):
    """Logs failed requests only: the page polls the API every few seconds."""

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        if str(code).isdigit() and int(code) >= 400:
            log.warning("dashboard: %s -> %s", self.requestline, code)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        log.debug("dashboard: " + format, *args)


class DashboardServer:
    """optuna-dashboard bound to ``host:port``; ``port=0`` picks a free port.

    Use :meth:`serve_forever` to block, or :meth:`start` / :meth:`stop` (or ``with``) to
    run it in a background thread.
    """

    def __init__(
        self,
        storage_url: str,
        host: str = "127.0.0.1",
        port: int = 8080,
        artifact_dir: Path | None = None,
        allow_remote: bool = False,
    ) -> None:
        if not allow_remote and not is_loopback(host):
            raise UserError(
                f"refusing to serve the dashboard on {host!r}: it has no authentication and "
                "can delete studies. Bind to 127.0.0.1 (and tunnel, e.g. `ssh -L 8080:"
                "127.0.0.1:8080 host`), or pass --host explicitly to expose it"
            )
        if not 0 <= port <= 65535:
            raise UserError(f"port {port} is out of range: use 1-65535 (or 0 for any free port)")
        # RDBStorage (not the dashboard's own opener) so a fresh PostgreSQL database gets
        # its tables instead of failing every API call until the first run creates them
        self.storage = optuna.storages.RDBStorage(storage_url)
        store = None
        if artifact_dir is not None:  # may not exist yet: files are opened on request
            store = FileSystemArtifactStore(Path(artifact_dir))
        app = optuna_dashboard.wsgi(self.storage, artifact_store=store)
        server_class = _ThreadingWSGIServer6 if ":" in host else _ThreadingWSGIServer
        try:
            self._httpd = make_server(
                host, port, app, server_class=server_class, handler_class=_QuietHandler
            )
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise UserError(
                    f"port {port} on {host} is already in use (another dashboard?): "
                    "pass --port with a free port"
                ) from exc
            raise UserError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from exc
        self.host = host
        self.port = self._httpd.server_port
        self._thread: threading.Thread | None = None
        self._serving = threading.Event()

    @property
    def url(self) -> str:
        shown = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{shown}:{self.port}/dashboard"

    def serve_forever(self) -> None:
        """Block until :meth:`stop` is called from another thread (or Ctrl-C)."""
        self._serving.set()
        try:
            self._httpd.serve_forever(poll_interval=0.2)
        finally:
            self._httpd.server_close()

    def start(self) -> DashboardServer:
        """Serve in a daemon thread; returns self."""
        self._thread = threading.Thread(
            target=self.serve_forever, name="optuna-dashboard", daemon=True
        )
        self._thread.start()
        self._serving.wait(5.0)
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Stop serving and release the port and the database connections."""
        if self._serving.is_set():
            self._httpd.shutdown()  # waits for serve_forever to return
        else:
            self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        self.storage.engine.dispose()

    def __enter__(self) -> DashboardServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def serve_dashboard(
    storage_url: str,
    host: str = "127.0.0.1",
    port: int = 8080,
    artifact_dir: Path | None = None,
    allow_remote: bool = False,
) -> None:
    """Serve optuna-dashboard on ``storage_url`` until interrupted (blocking).

    ``artifact_dir`` is the FileSystemArtifactStore the trials uploaded into
    (``<workspace>/artifacts``); without it the dashboard hides artifacts.
    """
    server = DashboardServer(storage_url, host, port, artifact_dir, allow_remote)
    print(f"optuna-dashboard: {server.url}  (Ctrl-C to stop)", flush=True)
    server.serve_forever()


CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = (
    "--no-sandbox",
    "--headless",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
)


def capture_screenshot(
    server: DashboardServer,
    study_name: str,
    path: Path,
    chromium: Path = CHROMIUM,
    timeout_s: float = 60.0,
) -> Path:
    """Save a full-page PNG of the study's dashboard page (for READMEs and reports).

    Drives Debian's chromium through Playwright (a test dependency, imported here only);
    waits until the intermediate-values chart is drawn when any trial reported an epoch.
    """
    try:
        from playwright.sync_api import sync_playwright
    except ImportError as exc:
        raise UserError(
            "screenshots need Playwright: pip install playwright (no browser download "
            f"needed, it drives {chromium})"
        ) from exc
    if not chromium.exists():
        raise UserError(f"screenshots need Chromium at {chromium}: apt-get install chromium")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    study_id = server.storage.get_study_id_from_name(study_name)
    has_curves = any(t.intermediate_values for t in server.storage.get_all_trials(study_id))
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(chromium), args=list(CHROMIUM_ARGS))
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.set_default_timeout(timeout_s * 1000)
            page.goto(f"{server.url}/studies/{study_id}")
            page.get_by_role("heading", name="History").wait_for()
            if has_curves:
                page.locator("#graph-intermediate-values .legendtext").first.wait_for()
            page.wait_for_timeout(500)  # let plotly finish its transitions
            page.screenshot(path=str(path), full_page=True)
        finally:
            browser.close()
    return path
