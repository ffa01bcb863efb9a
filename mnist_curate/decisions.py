"""The decision file: the curated label of each reviewed sample, kept in git.

A decision records, for one sample id, the label of the curated dataset:
``IDK``, or a digit. A digit equal to the sample's given label means
"reviewed, keep"; any other digit corrects the label. Each decision also
stores where it came from (``review`` in the FiftyOne App, ``rule`` for an
accepted candidate, ``manual`` for a hand edit), when, and an optional note.

YAML is the default format, one decision per line, so that diffs and merge
conflicts show one sample each::

    version: 1
    decisions:
      - {sample_id: train-00042, label: IDK, source: review, decided_at: "2026-12-04T20:00:00+00:00", note: "two digits"}

CSV is accepted too (by the ``.csv`` suffix), with the columns
``sample_id,label,source,note,decided_at`` and an optional ``# version: 1``
line before the header.

Reading checks the whole file before returning anything and raises a
``DecisionFileError`` that lists every problem with its line number.
Writing merges instead of replacing, is atomic and keeps the previous file as
``NAME.bak``.
"""

from __future__ import annotations

import contextlib
import csv
import datetime as dt
import gc
import hashlib
import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator

import yaml

from mnist_curate.data import SPLITS, parse_sample_id
from mnist_curate.errors import BadInputError
from mnist_curate.workspace import atomic_write_bytes, atomic_write_text

FORMAT_VERSION = 1
IDK = "IDK"
LABELS = tuple(str(digit) for digit in range(10)) + (IDK,)
SOURCES = ("review", "rule", "manual")
HUMAN_SOURCES = ("review", "manual")
# Hand-written entries without a source were typed by a person.
DEFAULT_SOURCE = "manual"
FIELDS = ("sample_id", "label", "source", "decided_at", "note")
MAX_LISTED_PROBLEMS = 20
BACKUP_SUFFIX = ".bak"


@dataclass(frozen=True)
class Decision:
    sample_id: str
    label: str  # "IDK" or "0".."9" (a digit equal to the given label = reviewed, keep)
    source: str  # "review", "rule" or "manual"
    note: str = ""
    decided_at: str = ""  # ISO 8601 timestamp

    @property
    def is_human(self) -> bool:
        return self.source in HUMAN_SOURCES


class DecisionFileError(BadInputError):
    """A decision file with problems; ``problems`` lists each as "path:line: message"."""

    def __init__(self, path: Path, problems: list[str]):
        self.path = path
        self.problems = problems
        listed = "\n".join(f"  - {problem}" for problem in problems[:MAX_LISTED_PROBLEMS])
        more = len(problems) - MAX_LISTED_PROBLEMS
        if more > 0:
            listed += f"\n  ... and {more} more"
        count = f"{len(problems)} problem" + ("s" if len(problems) != 1 else "")
        super().__init__(f"invalid decision file {path} ({count}, nothing applied):\n{listed}\n"
                         "Fix the listed lines; README.md (section 'The decision file') describes the format.")


@dataclass
class MergeResult:
    decisions: dict[str, Decision]
    added: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)  # human decisions kept against an incoming "rule" one

    @property
    def modified(self) -> bool:
        return bool(self.added or self.changed)

    def describe(self) -> str:
        return (f"{len(self.added)} added, {len(self.changed)} changed, {len(self.unchanged)} unchanged, "
                f"{len(self.kept)} human decisions kept")


def now_timestamp() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def sort_key(sample_id: str) -> tuple[int, int]:
    """Order sample ids as the workspace arrays do: training samples, then test samples, by index."""
    parsed = parse_sample_id(sample_id)
    if parsed is None:
        return (len(SPLITS), 0)
    split, index = parsed
    return (SPLITS.index(split), index)


def file_digest(path: Path) -> str:
    """Return the SHA-256 of a file's bytes (what relabel's cache key records)."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


# Reading ----------------------------------------------------------------------

def read_decisions(path: Path) -> dict[str, Decision]:
    """Read and validate a decision file (CSV when the suffix is .csv, else YAML).

    Returns {sample_id: Decision}. Raises DecisionFileError listing every
    problem when anything is wrong, so that nothing is applied from a file
    that is only partly valid.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise BadInputError(f"decision file {path} not found; check the path given to --decisions") from None
    except OSError as error:
        raise BadInputError(f"cannot read the decision file {path}: {error.strerror}") from None
    return parse_decisions(data, path)


def parse_decisions(data: bytes, path: Path) -> dict[str, Decision]:
    """Validate the bytes of a decision file; ``path`` names it in messages and picks the format."""
    try:
        # utf-8-sig drops the byte order mark that some Windows editors write.
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line = data[:error.start].count(b"\n") + 1
        raise DecisionFileError(path, [f"{path}:{line}: not valid UTF-8 (byte {error.start}); "
                                       "save the file as UTF-8"]) from None

    problems: list[str] = []
    with _garbage_collector_paused():
        if path.suffix.lower() == ".csv":
            entries = _entries_from_csv(text, path, problems)
        else:
            entries = _entries_from_yaml(text, path, problems)
        decisions = _check_entries(entries, path, problems)
    if problems:
        raise DecisionFileError(path, sorted(problems, key=lambda problem: _line_of(problem, path)))
    return decisions


@contextlib.contextmanager
def _garbage_collector_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector while a file's objects are built.

    Reading only allocates (no cycles to free), and with the collector on,
    its repeated scans of the growing tree made reading all 70,000 samples
    about 5 times slower.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _check_entries(entries: list[tuple[int, dict[str, str | None]]], path: Path,
                   problems: list[str]) -> dict[str, Decision]:
    decisions: dict[str, Decision] = {}
    first_line: dict[str, int] = {}
    for line, values in entries:
        decision = _check_entry(values, f"{path}:{line}", problems)
        if decision is None:
            continue
        earlier = decisions.get(decision.sample_id)
        if earlier is not None and earlier.label != decision.label:
            problems.append(f"{path}:{line}: {decision.sample_id} has label {decision.label}, but line "
                            f"{first_line[decision.sample_id]} gives it {earlier.label}; keep one of them")
            continue
        if earlier is None:
            first_line[decision.sample_id] = line
        decisions[decision.sample_id] = decision
    return decisions


def _line_of(problem: str, path: Path) -> int:
    """Return the line number in a "path:line: message" problem (0 when it names no line)."""
    number = problem[len(str(path)) + 1:].partition(":")[0]
    return int(number) if number.isdigit() else 0


def _entries_from_yaml(text: str, path: Path, problems: list[str]) -> list[tuple[int, dict[str, str | None]]]:
    """Return (line, {field: raw text or None}) per entry of a YAML decision file."""
    try:
        root = _compose(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None) or getattr(error, "context_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        reason = getattr(error, "problem", None) or str(error)
        return _fail(problems, f"{where}: not valid YAML ({reason})")
    if root is None:
        return []  # an empty file (or only comments) contains no decisions
    if root.kind != "mapping":
        return _fail(problems, f"{path}:{root.line}: expected a mapping with `version: {FORMAT_VERSION}` "
                               "and `decisions:`, found " + root.describe())

    top = _mapping_fields(root, path, problems)
    for key, (key_node, _) in top.items():
        if key not in ("version", "decisions"):
            problems.append(f"{path}:{key_node.line}: unknown top-level key {key!r}; expected version and decisions")
    _check_version(top.get("version"), path, problems)

    decisions_node = top["decisions"][1] if "decisions" in top else None
    if decisions_node is None or decisions_node.is_null:
        return []
    if decisions_node.kind != "sequence":
        return _fail(problems, f"{path}:{decisions_node.line}: `decisions` must be a list of entries, "
                               "found " + decisions_node.describe())

    entries = []
    for item in decisions_node.value:
        if item.kind != "mapping":
            problems.append(f"{path}:{item.line}: each decision must be a mapping like "
                            "{sample_id: train-00042, label: IDK}, found " + item.describe())
            continue
        values: dict[str, str | None] = {}
        for key, (_, value_node) in _mapping_fields(item, path, problems).items():
            if value_node.kind != "scalar":
                problems.append(f"{path}:{value_node.line}: {key} must be a single value, found "
                                + value_node.describe())
                continue
            values[key] = None if value_node.is_null else value_node.value
        entries.append((item.line, values))
    return entries


@dataclass
class _Node:
    """A YAML node as written: scalars keep their text, every node its 1-based line."""

    kind: str  # "scalar", "mapping" (value: list of (key, value) pairs) or "sequence"
    value: Any
    line: int
    is_null: bool = False

    def describe(self) -> str:
        return {"mapping": "a mapping", "sequence": "a list"}.get(self.kind, repr(self.value))


_NULL_WORDS = ("", "~", "null", "Null", "NULL")


def _compose(text: str) -> _Node | None:
    """Build a tree of _Node from the parser's events.

    PyYAML's own ``compose`` resolves a tag for every scalar in Python and
    takes about 8 s for a file with all 70,000 samples; walking the events of
    the C parser takes under 1 s. Keeping scalars as text also makes
    `label: 3` and `label: "3"` read alike and leaves timestamps as written.
    """
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    stack: list[_Node] = []
    pending_keys: list[_Node | None] = []
    root: _Node | None = None

    def attach(node: _Node) -> None:
        nonlocal root
        if not stack:
            root = node
        elif stack[-1].kind == "sequence":
            stack[-1].value.append(node)
        elif pending_keys[-1] is None:
            pending_keys[-1] = node
        else:
            stack[-1].value.append((pending_keys[-1], node))
            pending_keys[-1] = None

    for event in yaml.parse(text, Loader=loader):
        line = event.start_mark.line + 1
        if isinstance(event, yaml.ScalarEvent):
            plain = not event.style
            attach(_Node("scalar", event.value, line, is_null=plain and event.value in _NULL_WORDS))
        elif isinstance(event, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
            node = _Node("mapping" if isinstance(event, yaml.MappingStartEvent) else "sequence", [], line)
            attach(node)
            stack.append(node)
            pending_keys.append(None)
        elif isinstance(event, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
            stack.pop()
            pending_keys.pop()
        elif isinstance(event, yaml.AliasEvent):
            raise yaml.YAMLError(f"line {line}: YAML aliases (*name) are not supported in a decision file; "
                                 "write the entry out in full")
        elif isinstance(event, yaml.DocumentStartEvent) and root is not None:
            raise yaml.YAMLError(f"line {line}: more than one YAML document; keep one")
    return root


def _mapping_fields(node: _Node, path: Path, problems: list[str]) -> dict[str, tuple[_Node, _Node]]:
    fields: dict[str, tuple[_Node, _Node]] = {}
    for key_node, value_node in node.value:
        key = key_node.value if key_node.kind == "scalar" else key_node.describe()
        if key in fields:
            problems.append(f"{path}:{key_node.line}: key {key!r} appears twice in the same mapping")
            continue
        fields[key] = (key_node, value_node)
    return fields


def _check_version(found: tuple[_Node, _Node] | None, path: Path, problems: list[str]) -> None:
    if found is None:
        problems.append(f"{path}:1: missing `version: {FORMAT_VERSION}`; add it as the first line")
        return
    node = found[1]
    value = node.value if node.kind == "scalar" else node.describe()
    if value != str(FORMAT_VERSION):
        problems.append(f"{path}:{node.line}: version {value!r} is not supported; this mnist-curate reads "
                        f"version {FORMAT_VERSION}")


def _fail(problems: list[str], message: str) -> list:
    problems.append(message)
    return []


def _entries_from_csv(text: str, path: Path, problems: list[str]) -> list[tuple[int, dict[str, str | None]]]:
    lines = io.StringIO(text, newline="")
    header_line = 0
    version, version_line = str(FORMAT_VERSION), 1
    # Comment lines before the header may carry the format version.
    for raw in lines:
        header_line += 1
        stripped = raw.strip()
        if not stripped:
            continue
        if stripped.startswith("#"):
            comment = stripped.lstrip("#").strip()
            if comment.lower().startswith("version:"):
                version, version_line = comment.split(":", 1)[1].strip(), header_line
            continue
        break
    else:
        return []  # empty, or only comments
    if version != str(FORMAT_VERSION):
        problems.append(f"{path}:{version_line}: version {version!r} is not supported; this mnist-curate reads "
                        f"version {FORMAT_VERSION}")

    header = next(csv.reader([raw]))
    header = [name.strip() for name in header]
    unknown = [name for name in header if name not in FIELDS]
    if unknown or "sample_id" not in header or "label" not in header:
        problems.append(f"{path}:{header_line}: header {','.join(header)!r} is not valid; expected the columns "
                        f"{','.join(FIELDS)} (sample_id and label required)")
        return []

    entries = []
    reader = csv.reader(lines)
    line = header_line
    for row in reader:
        start = line + 1
        line = header_line + reader.line_num
        if not any(cell.strip() for cell in row):
            continue
        if len(row) != len(header):
            problems.append(f"{path}:{start}: {len(row)} columns, expected {len(header)} ({','.join(header)})")
            continue
        entries.append((start, {name: (cell if cell != "" else None) for name, cell in zip(header, row)}))
    return entries


def _check_entry(values: dict[str, str | None], where: str, problems: list[str]) -> Decision | None:
    n_before = len(problems)
    unknown = sorted(set(values) - set(FIELDS))
    if unknown:
        problems.append(f"{where}: unknown field(s) {', '.join(unknown)}; expected {', '.join(FIELDS)}")

    sample_id = (values.get("sample_id") or "").strip()
    if not sample_id:
        problems.append(f"{where}: missing sample_id")
    elif parse_sample_id(sample_id) is None:
        problems.append(f"{where}: unknown sample id {sample_id!r}; expected train-00000 ... train-59999 "
                        "or test-00000 ... test-09999")

    label = (values.get("label") or "").strip()
    if label.upper() == IDK:
        label = IDK
    if not label:
        problems.append(f"{where}: missing label for {sample_id or 'this entry'}; expected IDK or a digit 0-9")
    elif label not in LABELS:
        problems.append(f"{where}: label {label!r} is not valid; expected IDK or a digit 0-9")

    source = (values.get("source") or DEFAULT_SOURCE).strip()
    if source not in SOURCES:
        problems.append(f"{where}: source {source!r} is not valid; expected one of {', '.join(SOURCES)}")

    decided_at = (values.get("decided_at") or "").strip()
    if decided_at:
        try:
            dt.datetime.fromisoformat(decided_at.replace("Z", "+00:00"))
        except ValueError:
            problems.append(f"{where}: decided_at {decided_at!r} is not an ISO 8601 timestamp "
                            "(e.g. 2026-12-04T20:00:00+00:00)")

    if len(problems) > n_before:
        return None
    return Decision(sample_id, label, source, note=values.get("note") or "", decided_at=decided_at)


# Merging ----------------------------------------------------------------------

def merge_decisions(existing: dict[str, Decision], incoming: Iterable[Decision]) -> MergeResult:
    """Merge new decisions into existing ones without losing a human decision.

    An incoming human ("review" or "manual") decision replaces the existing
    one for its sample. An incoming "rule" decision never replaces a human
    one (the sample is listed in ``kept``). A human decision that confirms a
    rule decision's label replaces it and counts as changed, because its
    source changes. A rule decision with the same
    label as the existing one leaves the existing entry as it is, so that
    accepting the same candidates again rewrites nothing. Samples that
    ``incoming`` does not mention stay as they are.
    """
    result = MergeResult(dict(existing))
    for decision in incoming:
        current = result.decisions.get(decision.sample_id)
        if current is None:
            result.decisions[decision.sample_id] = decision
            result.added.append(decision.sample_id)
        elif decision.source == "rule" and current.is_human:
            result.kept.append(decision.sample_id)
        elif current.label != decision.label:
            result.decisions[decision.sample_id] = decision
            result.changed.append(decision.sample_id)
        elif decision.is_human and not current.is_human:
            # A person confirmed a rule decision: it becomes theirs, so a later rule change cannot withdraw it.
            result.decisions[decision.sample_id] = decision
            result.changed.append(decision.sample_id)
        else:
            if decision.is_human:
                result.decisions[decision.sample_id] = decision
            result.unchanged.append(decision.sample_id)
    return result


# Writing ----------------------------------------------------------------------

def write_decisions(path: Path, decisions: dict[str, Decision]) -> Path | None:
    """Write decisions atomically, keeping the previous file as NAME.bak.

    Returns the backup's path, or None when there was no previous file.
    Comments in a previous YAML file are not carried over; notes belong in
    each decision's ``note``. A symlink is followed, so that the file it
    points to (say, one kept in git) gets the decisions, not a new file.
    """
    path = Path(path)
    if path.is_symlink():
        path = path.resolve()
    ordered = [decisions[sample_id] for sample_id in sorted(decisions, key=sort_key)]
    text = _format_csv(ordered) if path.suffix.lower() == ".csv" else _format_yaml(ordered)

    backup = None
    if path.exists():
        backup = path.with_name(path.name + BACKUP_SUFFIX)
        atomic_write_bytes(backup, path.read_bytes())
    atomic_write_text(path, text)
    return backup


def _format_yaml(decisions: list[Decision]) -> str:
    lines = [
        "# mnist-curate decision file: the curated label of each reviewed sample.",
        "# label: IDK, or a digit (the sample's own digit = reviewed, keep; another digit corrects it).",
        "# source: review (FiftyOne App), rule (accepted candidate) or manual (hand edit).",
        f"version: {FORMAT_VERSION}",
        "decisions:" if decisions else "decisions: []",
    ]
    for decision in decisions:
        entry = (f"  - {{sample_id: {decision.sample_id}, label: {decision.label}, source: {decision.source}, "
                 f"decided_at: {_yaml_string(decision.decided_at)}")
        if decision.note:
            entry += f", note: {_yaml_string(decision.note)}"
        lines.append(entry + "}")
    return "\n".join(lines) + "\n"


def _yaml_string(text: str) -> str:
    """Quote text as a YAML double-quoted scalar (JSON escapes are valid there)."""
    quoted = json.dumps(text, ensure_ascii=False)
    # Line and paragraph separators and other non-printable characters would be
    # folded or rejected by YAML readers, so they are written as escapes.
    return "".join(ch if ch.isprintable() or ch == " " else _escape(ch) for ch in quoted)


def _escape(ch: str) -> str:
    code = ord(ch)
    return f"\\u{code:04x}" if code <= 0xFFFF else f"\\U{code:08x}"


def _format_csv(decisions: list[Decision]) -> str:
    buffer = io.StringIO(newline="")
    buffer.write(f"# version: {FORMAT_VERSION}\n")
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(("sample_id", "label", "source", "note", "decided_at"))
    for decision in decisions:
        writer.writerow((decision.sample_id, decision.label, decision.source, decision.note, decision.decided_at))
    return buffer.getvalue()


def rule_decisions(sample_ids: Iterable[str], *, note: str = "", reasons: dict[str, list[str]] | None = None,
                   decided_at: str | None = None) -> list[Decision]:
    """Return IDK decisions from the "rule" source for accepted candidates."""
    decided_at = decided_at or now_timestamp()
    reasons = reasons or {}
    return [Decision(sample_id, IDK, "rule", note=note or "; ".join(reasons.get(sample_id, [])),
                     decided_at=decided_at) for sample_id in sample_ids]
