"""`mnist-curate review`: prepare the dataset, serve the FiftyOne App, and save the reviewer's tags.

The review ends when the reviewer presses Ctrl-C in the terminal, closes the
App's last browser tab (local sessions), or the process gets SIGTERM or SIGHUP
(e.g. the SSH session that runs it closes). Each of these is a normal end: the
tags are merged into the decision file and the command exits 0.
"""

from __future__ import annotations

import contextlib
import getpass
import os
import signal
import socket
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from mnist_curate.config import Config
from mnist_curate.errors import BadInputError, CurateError
from mnist_curate.fiftyone_env import check_port_free, fiftyone_for
from mnist_curate.review import (CANDIDATES_VIEW, DIGIT_TAG_PREFIX, IDK_TAG, KEEP_TAG, SAVED_VIEWS, build_dataset,
                                 check_upstream, decisions_digest, describe_build, load_workspace_dataset, read_state,
                                 report_sync, sync_tags, write_state)
from mnist_curate.ui import Reporter
from mnist_curate.workspace import Workspace, command_line, forget_interrupt

LOOPBACK_NAMES = ("127.0.0.1", "localhost", "::1")


@dataclass(frozen=True)
class ReviewOptions:
    decisions_path: Path
    port: int
    address: str
    remote: bool = False
    launch: bool = True
    sync_only: bool = False


def default_decisions_path(workspace: Workspace) -> Path:
    from mnist_curate.relabel import workspace_decisions_path

    return workspace_decisions_path(workspace)


def conventions(decisions_path: Path, workspace: Workspace) -> str:
    return (
        "Review conventions: add these tags to samples in the App (grid or expanded view):\n"
        f"  {IDK_TAG:<6} the digit cannot be read: it moves to the IDK class\n"
        f"  {KEEP_TAG:<6} reviewed: the given label is right\n"
        f"  {DIGIT_TAG_PREFIX}N   this is really digit N (e.g. {DIGIT_TAG_PREFIX}7)\n"
        f"Tags that name two labels (IDK and keep, or two digits) are reported as conflicts and left undecided.\n"
        f"When the review ends (Ctrl-C here) the tags are merged into {decisions_path}; "
        f"{workspace.command('review --sync')} does it at any time.")


def run_review(workspace: Workspace, config: Config, reporter: Reporter, options: ReviewOptions) -> None:
    """Build or update the dataset, then sync only, stop, or serve the App until the review ends and sync."""
    # Checked before the lock and the database start, so a mistyped -w creates nothing.
    workspace.check_is_folder()
    if options.sync_only:
        if read_state(workspace) is None:
            raise BadInputError(_no_dataset_message(workspace))
    else:
        check_upstream(config, workspace)
        if options.launch:
            check_address(options.address)
            check_port_free(options.address, options.port)
    with workspace.locked(command_line()) as lock:
        if lock.recovered_from:
            reporter.warn(f"recovered a stale workspace lock left by {lock.recovered_from.describe()}")
        with fiftyone_for(workspace) as fo:
            if options.sync_only:
                sync_workspace(fo, workspace, options.decisions_path, reporter)
                return

            result = build_dataset(fo, workspace, config, reporter, decisions_path=options.decisions_path)
            reporter.info(describe_build(result))
            if not options.launch:
                reporter.info(f"saved views: {', '.join(view.name for view in SAVED_VIEWS)}")
                reporter.info(f"ready; {workspace.command('review')} opens the App on it")
                return

            serve_app(fo, workspace, result.dataset, reporter, options)
            sync_workspace(fo, workspace, options.decisions_path, reporter)


def sync_workspace(fo: Any, workspace: Workspace, decisions_path: Path, reporter: Reporter) -> None:
    """Merge the dataset's review tags into the decision file and record that the dataset shows it."""
    state = read_state(workspace)
    dataset = load_workspace_dataset(fo, workspace)
    if dataset is None or state is None:
        raise BadInputError(_no_dataset_message(workspace))
    try:
        result = sync_tags(dataset, decisions_path, reporter)
    except BadInputError as error:
        raise BadInputError(f"{error}\nThe review tags are kept in the FiftyOne dataset; after fixing the file, "
                            f"run {workspace.command('review --sync')}.") from None
    report_sync(result, reporter)
    if "decisions" in state["groups"]:
        state["groups"]["decisions"] = decisions_digest(decisions_path)
        write_state(workspace, state)


def _no_dataset_message(workspace: Workspace) -> str:
    return (f"workspace {workspace.root} has no review dataset yet, so there are no tags to sync; "
            f"run {workspace.command('review')} first")


# Serving the App ---------------------------------------------------------------------

def serve_app(fo: Any, workspace: Workspace, dataset: Any, reporter: Reporter, options: ReviewOptions) -> None:
    """Serve the App on the candidates view until the review ends."""
    check_address(options.address)
    check_port_free(options.address, options.port)
    remote = options.remote
    if not remote and not has_display():
        reporter.info("no display found (DISPLAY is unset), so the App is served without opening a browser, "
                      "as with --remote")
        remote = True

    reporter.info(conventions(options.decisions_path, workspace))
    session = None
    try:
        with _signals_end_review():
            session = _launch(fo, dataset, options, remote)
            reporter.info(f"[bold]FiftyOne App[/bold] serving {dataset.name}, view '{CANDIDATES_VIEW}', at "
                          f"{app_url(options.address, options.port)}")
            if remote:
                reporter.info(tunnel_instructions(options.address, options.port))
            reporter.info("Press Ctrl-C to end the review and save the tags.")
            # A remote session has no browser tab to wait for; a local one ends when its last tab closes.
            session.wait(-1 if remote else 3)
    except KeyboardInterrupt:
        # Ctrl-C is how a review ends, not an interruption of the command.
        forget_interrupt()
    finally:
        reporter.info("review ended; saving the tags")
        if session is not None:
            with contextlib.suppress(Exception):
                session.close()


def _launch(fo: Any, dataset: Any, options: ReviewOptions, remote: bool) -> Any:
    try:
        return fo.launch_app(dataset, view=dataset.load_saved_view(CANDIDATES_VIEW), port=options.port,
                             address=options.address, remote=remote, auto=False)
    except KeyboardInterrupt:
        raise
    except Exception as error:  # noqa: BLE001 - FiftyOne's service layer raises many types for one cause
        raise CurateError(f"the FiftyOne App server did not start on {options.address}:{options.port}: "
                          f"{type(error).__name__}: {error}. Check that --address names this machine, "
                          "or try another --port.") from None


def check_address(address: str) -> None:
    try:
        socket.getaddrinfo(address, None)
    except (socket.gaierror, UnicodeError):
        raise BadInputError(f"--address {address!r} is not a host name or IP address of this machine; "
                            "use 127.0.0.1 (this machine only) or 0.0.0.0 (every network interface)") from None


def has_display() -> bool:
    if sys.platform != "linux":
        return True
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def app_url(address: str, port: int) -> str:
    if address in LOOPBACK_NAMES:
        host = "localhost"
    elif address == "0.0.0.0":
        host = socket.gethostname()
    else:
        host = address
    return f"http://{host}:{port}/"


def tunnel_instructions(address: str, port: int) -> str:
    target = "127.0.0.1" if address in (*LOOPBACK_NAMES, "0.0.0.0") else address
    server = f"{getpass.getuser()}@{socket.gethostname()}"
    return (f"To review from your laptop, run there (with the host name you use for ssh):\n"
            f"  ssh -N -L {port}:{target}:{port} {server}\n"
            f"then open http://localhost:{port}/ in the laptop's browser.")


@contextlib.contextmanager
def _signals_end_review() -> Iterator[None]:
    """Make SIGTERM and SIGHUP end the review like Ctrl-C, so the tags are still saved."""

    def end_review(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    handled = [signal.SIGTERM] + ([signal.SIGHUP] if hasattr(signal, "SIGHUP") else [])
    # A signal ignored on purpose (nohup ignores SIGHUP) stays ignored.
    previous = {signum: signal.signal(signum, end_review) for signum in handled
                if signal.getsignal(signum) is not signal.SIG_IGN}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
