"""The workspace folder that every stage reads from and writes to.

Layout::

    WORKSPACE/
      config.yaml          the resolved config of the last writing command
      .lock                held (flock) by the process that writes the workspace
      stages/NAME.json     one record per finished stage: its cache key, figures
                           and the size and BLAKE2b digest of every output file
      NAME/                the stage's output files

A stage writes into a hidden temporary folder and is committed by renaming that
folder into place and then writing its record. A record is the only proof that
a stage finished: outputs without a matching record, or whose digests no
longer match it, are never used.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import errno
import fcntl
import hashlib
import io
import json
import os
import shlex
import shutil
import signal
import socket
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from mnist_curate.errors import BadInputError, CurateError, WorkspaceLockedError

DEFAULT_WORKSPACE = "mnist-curate-workspace"
WORKSPACE_VARIABLE = "MNIST_CURATE_WORKSPACE"
TEMP_MARK = ".tmp-"
HASH_CHUNK_BYTES = 1 << 20


def now_iso() -> str:
    return dt.datetime.now(dt.timezone.utc).astimezone().isoformat(timespec="seconds")


# Atomic file writes ---------------------------------------------------------

def _temp_path(path: Path) -> Path:
    return path.with_name(f".{path.name}{TEMP_MARK}{os.getpid()}")


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write a file so that readers see either the old or the complete new content."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = _temp_path(path)
    try:
        with open(temp, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            temp.unlink()
        raise
    _fsync_dir(path.parent)


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: Path, payload: Any) -> None:
    atomic_write_text(path, json.dumps(payload, indent=2, sort_keys=False) + "\n")


def save_npy(path: Path, array: np.ndarray) -> None:
    """Save an array as a plain .npy file (loadable with np.load(mmap_mode="r"))."""
    buffer = io.BytesIO()
    np.save(buffer, np.ascontiguousarray(array), allow_pickle=False)
    atomic_write_bytes(path, buffer.getvalue())


def _fsync_dir(folder: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


_interrupt_received = False


def raise_interrupt(signum: int, frame: Any) -> None:
    """Handle SIGINT: remember it, then raise KeyboardInterrupt as Python's default handler does.

    A library may swallow the KeyboardInterrupt (matplotlib 3's pyplot import,
    seen here, catches it when Ctrl-C lands mid-import), so ``commit_stage``
    checks the flag and never commits the result of an interrupted stage.
    """
    global _interrupt_received
    _interrupt_received = True
    raise KeyboardInterrupt


def interrupt_received() -> bool:
    return _interrupt_received


def forget_interrupt() -> None:
    """Clear the SIGINT flag, for code that handles Ctrl-C as a normal end (the review)."""
    global _interrupt_received
    _interrupt_received = False


@contextlib.contextmanager
def handling_interrupts() -> Iterator[None]:
    """Install ``raise_interrupt`` for SIGINT for the block, with the flag cleared (main thread only)."""
    global _interrupt_received
    _interrupt_received = False
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, raise_interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


@contextlib.contextmanager
def interrupts_deferred() -> Iterator[None]:
    """Hold Ctrl-C until the block ends, so that the renames that commit a result are never cut in half.

    Python runs signal handlers in the main thread only, so elsewhere the
    block runs unchanged.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: received.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if received and callable(previous):
        previous(signal.SIGINT, None)


def file_digest(path: Path) -> str:
    digest = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as handle:
        while chunk := handle.read(HASH_CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def describe_outputs(folder: Path) -> dict[str, dict[str, Any]]:
    """Return {relative path: {size, blake2b}} for every file under a folder."""
    outputs = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        outputs[path.relative_to(folder).as_posix()] = {"size": path.stat().st_size, "blake2b": file_digest(path)}
    return outputs


# Lock -----------------------------------------------------------------------

@dataclass
class LockHolder:
    pid: int
    command: str
    since: str
    host: str

    def describe(self) -> str:
        return f"pid {self.pid} on {self.host}, running `{self.command}` since {self.since}"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class WorkspaceLock:
    """An exclusive flock on WORKSPACE/.lock with the holder's pid, command and start time.

    The kernel drops a flock when its process dies, so a lock left by a crashed
    or killed process is recovered by the next one; the holder details it left
    behind are reported as a recovered stale lock.
    """

    def __init__(self, path: Path, command: str):
        self.path = path
        self.command = command
        self._fd: int | None = None
        self.recovered_from: LockHolder | None = None

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as error:
            os.close(fd)
            if error.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise
            holder = self.read_holder()
            who = holder.describe() if holder else "another process (no holder details written yet)"
            raise WorkspaceLockedError(
                f"workspace {self.path.parent} is in use by {who}. "
                "Wait for it to finish, or use another --workspace.") from None

        previous = self.read_holder()
        if previous is not None and previous.pid != os.getpid():
            self.recovered_from = previous
        holder = {"pid": os.getpid(), "command": self.command, "since": now_iso(), "host": socket.gethostname()}
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(holder) + "\n").encode(), 0)
        os.fsync(fd)
        self._fd = fd

    def read_holder(self) -> LockHolder | None:
        try:
            raw = json.loads(self.path.read_text() or "null")
            return LockHolder(int(raw["pid"]), str(raw["command"]), str(raw["since"]), str(raw.get("host", "?")))
        except (OSError, ValueError, TypeError, KeyError):
            return None

    def release(self) -> None:
        if self._fd is None:
            return
        with contextlib.suppress(OSError):
            os.ftruncate(self._fd, 0)
        fcntl.flock(self._fd, fcntl.LOCK_UN)
        os.close(self._fd)
        self._fd = None


# Workspace ------------------------------------------------------------------

@dataclass
class StageRecord:
    stage: str
    key: str
    version: str
    started_at: str
    finished_at: str
    duration_s: float
    inputs: dict[str, Any]
    figures: dict[str, Any]
    outputs: dict[str, dict[str, Any]]

    @classmethod
    def from_json(cls, raw: Any) -> "StageRecord":
        if not isinstance(raw, dict):
            raise ValueError("record is not a JSON object")
        fields = cls.__dataclass_fields__
        missing = [name for name in fields if name not in raw]
        if missing:
            raise ValueError(f"record lacks {', '.join(missing)}")
        return cls(**{name: raw[name] for name in fields})


class Workspace:
    """A workspace folder: stage folders, stage records, the saved config and the lock."""

    def __init__(self, root: Path):
        self.root = Path(root).expanduser().absolute()
        self._lock: WorkspaceLock | None = None

    @property
    def config_path(self) -> Path:
        return self.root / "config.yaml"

    @property
    def records_dir(self) -> Path:
        return self.root / "stages"

    def stage_dir(self, stage: str) -> Path:
        return self.root / stage

    def record_path(self, stage: str) -> Path:
        return self.records_dir / f"{stage}.json"

    def exists(self) -> bool:
        return self.root.is_dir()

    def command(self, arguments: str) -> str:
        """Return `mnist-curate ARGUMENTS -w WORKSPACE` for a message, the path shell-quoted.

        The -w option is left out for the workspace that the plain command
        finds: MNIST_CURATE_WORKSPACE if set, else the default folder.
        """
        text = f"mnist-curate {arguments}"
        from_environment = os.environ.get(WORKSPACE_VARIABLE)
        plain_finds_it = Path(from_environment).expanduser().absolute() if from_environment else None
        if self.root != (plain_finds_it or Path(DEFAULT_WORKSPACE).absolute()):
            text += f" -w {shlex.quote(str(self.root))}"
        return f"`{text}`"

    def check_is_folder(self) -> None:
        """Raise BadInputError when the workspace path exists but is not a folder (creates nothing)."""
        if self.root.exists() and not self.root.is_dir():
            raise BadInputError(f"workspace path {self.root} exists and is not a folder; "
                                "pass another --workspace")

    def check_writable(self) -> None:
        self.check_is_folder()
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise BadInputError(f"cannot create workspace {self.root}: {error.strerror}; "
                                "pass a writable --workspace") from None
        if not os.access(self.root, os.W_OK):
            raise BadInputError(f"workspace {self.root} is not writable; pass a writable --workspace")

    # Locking and clean-up

    @contextlib.contextmanager
    def locked(self, command: str) -> Iterator[WorkspaceLock]:
        self.check_writable()
        lock = WorkspaceLock(self.root / ".lock", command)
        lock.acquire()
        self._lock = lock
        try:
            self.remove_temporaries()
            yield lock
        finally:
            self._lock = None
            lock.release()

    @property
    def is_locked_by_us(self) -> bool:
        return self._lock is not None

    def remove_temporaries(self) -> list[Path]:
        """Delete temp files and folders that interrupted runs left (only under our lock)."""
        removed = []
        for path in list(self.root.rglob(f"*{TEMP_MARK}*")) + list(self.root.glob(".*.old-*")):
            if not path.name.startswith("."):
                continue
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            else:
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
            removed.append(path)
        return removed

    # Records

    def read_record(self, stage: str) -> StageRecord | None:
        """Return the stage's record, or None when it is missing or unreadable."""
        path = self.record_path(stage)
        try:
            return StageRecord.from_json(json.loads(path.read_text(encoding="utf-8")))
        except FileNotFoundError:
            return None
        except (OSError, ValueError, TypeError) as error:
            raise CorruptRecordError(f"{path}: {error}") from None

    def verify_outputs(self, record: StageRecord) -> str | None:
        """Return why a record's output files no longer match it, or None when they all do."""
        folder = self.stage_dir(record.stage)
        for relative, expected in record.outputs.items():
            path = folder / relative
            try:
                size = path.stat().st_size
            except FileNotFoundError:
                return f"{path} is missing"
            if size != expected["size"]:
                return f"{path} has {size} bytes, expected {expected['size']}"
            if file_digest(path) != expected["blake2b"]:
                return f"{path} has changed since the stage wrote it"
        return None

    def start_stage(self, stage: str) -> Path:
        """Return an empty temporary folder for a stage's outputs (requires the lock)."""
        if not self.is_locked_by_us:
            raise CurateError("internal error: a stage ran without holding the workspace lock")
        temp = self.root / f".{stage}{TEMP_MARK}{os.getpid()}"
        if temp.exists():
            shutil.rmtree(temp)
        temp.mkdir(parents=True)
        return temp

    def commit_stage(self, temp: Path, record: StageRecord) -> StageRecord:
        """Move a finished stage's temporary folder into place, then write its record."""
        if _interrupt_received:
            raise KeyboardInterrupt
        record.outputs = describe_outputs(temp)
        with interrupts_deferred():
            with contextlib.suppress(FileNotFoundError):
                self.record_path(record.stage).unlink()
            final = self.stage_dir(record.stage)
            if final.exists():
                old = self.root / f".{record.stage}.old-{os.getpid()}"
                os.replace(final, old)
                os.replace(temp, final)
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.replace(temp, final)
            _fsync_dir(self.root)
            atomic_write_json(self.record_path(record.stage), record.__dict__)
        return record

    def forget_stage(self, stage: str) -> None:
        """Drop a stage's record so that it counts as missing (its files are left for the next run)."""
        with contextlib.suppress(FileNotFoundError):
            self.record_path(stage).unlink()


class CorruptRecordError(CurateError):
    """A stage record that exists but cannot be parsed."""


def command_line() -> str:
    """Return this process's command line as `mnist-curate ...` (also under `python -m`), for the lock holder."""
    return " ".join(["mnist-curate", *sys.argv[1:]])
