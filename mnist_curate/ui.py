"""The one rich console that every command writes its messages to.

Messages and progress bars go to stderr, so that stdout carries only machine
output (``--json``). ``--quiet`` keeps warnings, errors and the result
lines of a command (its summary), dropping progress and log lines.
"""

from __future__ import annotations

import contextlib
import re
import time
from typing import Iterator

from rich.console import Console
from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TaskProgressColumn, TextColumn,
                           TimeElapsedColumn, TimeRemainingColumn)


# Square brackets that do not open one of the styles that messages use, so that a path
# or a review tag such as `w[/x]` prints as it is instead of being read as markup.
_NOT_A_STYLE = re.compile(r"\[(?!/?(?:bold|dim|green|yellow|red)\]|/\])")


def safe_markup(message: str) -> str:
    """Escape every square bracket of ``message`` except those of the styles messages use."""
    return _NOT_A_STYLE.sub(r"\[", message)


class Reporter:
    """Console output of one command: log lines, warnings and progress bars."""

    def __init__(self, *, quiet: bool = False, verbose: bool = False, console: Console | None = None):
        # soft_wrap: long messages stay one line in logs instead of being cut at 80 columns.
        self.console = console or Console(stderr=True, highlight=False, soft_wrap=True)
        self.quiet = quiet
        self.verbose = verbose
        self.warnings: list[str] = []

    def info(self, message: str) -> None:
        if not self.quiet:
            self.console.print(safe_markup(message))

    def detail(self, message: str) -> None:
        if self.verbose and not self.quiet:
            self.console.print(f"[dim]{safe_markup(message)}[/dim]")

    def warn(self, message: str) -> None:
        self.warnings.append(message)
        self.console.print(f"[yellow]warning:[/yellow] {safe_markup(message)}")

    def print(self, renderable: object) -> None:
        if not self.quiet:
            self.result(renderable)

    def result(self, renderable: object) -> None:
        """Print a command's result, which --quiet keeps."""
        self.console.print(safe_markup(renderable) if isinstance(renderable, str) else renderable)

    @contextlib.contextmanager
    def progress(self) -> Iterator[Progress]:
        """Return a progress display; disabled in quiet mode, plain when stderr is not a terminal."""
        progress = Progress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TaskProgressColumn(),
            TimeElapsedColumn(), TimeRemainingColumn(), TextColumn("{task.fields[status]}"),
            console=self.console, disable=self.quiet or not self.console.is_terminal, transient=False,
        )
        with progress:
            yield progress


def format_duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(int(round(seconds)), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


class Stopwatch:
    def __init__(self) -> None:
        self.started = time.perf_counter()

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self.started
