"""The export stage: the curated MNIST as an image-classification folder tree.

Layout of the export folder (``export.dir``, default ``WORKSPACE/curated-mnist``)::

    DIR/train/{0,...,9,IDK}/<sample_id>.png   28x28 8-bit grayscale, the MNIST pixels
    DIR/test/{0,...,9,IDK}/<sample_id>.png
    DIR/manifest.csv                          one row per sample: labels, decision, scores
    DIR/README.md                             dataset card with YAML front matter

This is the layout that torchvision's ``ImageFolder`` (per split), FiftyOne's
``ImageClassificationDirectoryTree`` and Hugging Face's ``imagefolder`` read.

The folder is built in a hidden sibling (``.DIR.tmp-<pid>``) and renamed into
place only when complete, so an interrupted export never leaves a folder that
looks complete. With ``--overwrite`` the old folder is swapped out only after
the new one is ready. The workspace keeps a copy of ``manifest.csv`` and
``README.md`` in ``WORKSPACE/export/``. The stage counts as corrupt, so the
next run exports again, when the export folder is gone, its manifest changed
or a class folder lost or gained files.
"""

from __future__ import annotations

import contextlib
import csv
import ctypes
import errno
import io
import json
import multiprocessing
import os
import shutil
import signal
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from mnist_curate import __version__
from mnist_curate.config import Config, dump_config
from mnist_curate.data import SPLITS
from mnist_curate.errors import BadInputError, CurateError
from mnist_curate.pipeline import StageContext
from mnist_curate.relabel import CLASS_NAMES, load_relabel, resolve_decisions_path
from mnist_curate.workspace import (TEMP_MARK, StageRecord, Workspace, atomic_write_bytes, atomic_write_json,
                                    atomic_write_text, file_digest, interrupts_deferred)

DEFAULT_EXPORT_NAME = "curated-mnist"
MANIFEST = "manifest.csv"
CARD = "README.md"
EXPORT_MARKER = ".last-export.json"
# Images per task sent to a worker: large enough that pickling and task
# overhead stay small, small enough that both workers finish together.
CHUNK_SIZE = 2000
PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>
SCORE_COLUMNS = ("hardness", "mistakenness", "uniqueness", "representativeness", "margin", "self_confidence")


def export_dir(config: Config, workspace: Workspace) -> Path:
    """Return the absolute export folder: ``export.dir`` or WORKSPACE/curated-mnist."""
    if config.export.dir:
        return Path(config.export.dir).expanduser().absolute()
    return workspace.root / DEFAULT_EXPORT_NAME


def export_inputs(config: Config, workspace: Workspace, options: dict[str, Any]) -> dict[str, Any]:
    """Return the export folder for export's cache key, so that another --out exports again.

    A folder inside the workspace counts by its relative path, so that a
    copied or moved workspace with its export stays current.
    """
    out = export_dir(config, workspace)
    inside = _path_in_workspace(out, workspace)
    return {"out": f"WORKSPACE/{inside}" if inside is not None else str(out)}


def _path_in_workspace(path: Path, workspace: Workspace) -> str | None:
    """Return ``path`` relative to the workspace folder, or None when it lies outside."""
    try:
        return path.relative_to(workspace.root).as_posix()
    except ValueError:
        return None


def recorded_out(workspace: Workspace, record: StageRecord) -> Path:
    """Return the export folder that an export record describes, inside this workspace when it was inside."""
    return Path(figures_in(workspace, record.figures)["out"])


def figures_in(workspace: Workspace, figures: dict[str, Any]) -> dict[str, Any]:
    """Return export figures with ``out`` in this workspace, for a record written in a workspace since copied."""
    inside = figures.get("out_in_workspace")
    return {**figures, "out": str(workspace.root / inside) if inside else figures.get("out", "")}


def verify_export(workspace: Workspace, record: StageRecord) -> str | None:
    """Return why the export folder no longer matches the record, or None when it does.

    Checks the manifest's digest and the number of PNG files per class folder;
    hashing 70,000 PNG files on every status would take too long.
    """
    out = recorded_out(workspace, record)
    manifest = out / MANIFEST
    if not manifest.is_file():
        return f"export folder {out} is missing or has no {MANIFEST}"
    if file_digest(manifest) != record.figures["manifest_blake2b"]:
        return f"{manifest} has changed since the export wrote it"
    if not (out / CARD).is_file():
        return f"the dataset card {out / CARD} is missing"
    for split, counts in record.figures["class_counts"].items():
        for name, expected in counts.items():
            folder = out / split / name
            found = _count_png(folder)
            if found != expected:
                return f"{folder} has {found} PNG files, expected {expected}"
    return None


def _has_manifest(out: Path, digest: str) -> bool:
    try:
        return file_digest(out / MANIFEST) == digest
    except OSError:
        return False


def _count_png(folder: Path) -> int:
    try:
        with os.scandir(folder) as entries:
            return sum(1 for entry in entries if entry.name.endswith(".png"))
    except FileNotFoundError:
        return 0


# Target checks -------------------------------------------------------------------

def check_export_target(out: Path, workspace: Workspace, *, overwrite: bool, data_dir: str | None = None,
                        decisions: Path | None = None) -> None:
    """Raise BadInputError when exporting to ``out`` would replace something it must not.

    A non-empty folder is replaced only with ``overwrite``, or when it is this
    workspace's own export, unchanged since. Never replaced, not even with
    ``overwrite``: the MNIST data folder, the workspace and its folders other
    than its own export, and a folder that contains the decision file.
    """
    if out.exists() and not out.is_dir():
        raise BadInputError(f"export target {out} exists and is not a folder; pass another --out")
    for parent in out.parents:
        if parent.exists() and not parent.is_dir():
            raise BadInputError(f"export target {out} is inside {parent}, which is a file; pass another --out")
    existing = next(folder for folder in (out.parent, *out.parent.parents) if folder.exists())
    if not os.access(existing, os.W_OK | os.X_OK):
        raise BadInputError(f"export target {out}: cannot write in {existing}. The export is built beside the "
                            "target and moved into place. Pass another --out.")
    if data_dir:
        data = Path(data_dir).expanduser().resolve()
        target = out.resolve()
        if target == data or data in target.parents or target in data.parents:
            raise BadInputError(f"export target {out} is, contains or lies inside the MNIST data folder {data}; "
                                "an export there could replace the data files. Pass another --out.")
    from mnist_curate.pipeline import STAGES

    reserved = {workspace.root, workspace.records_dir, *workspace.root.parents,
                *(workspace.stage_dir(name) for name in STAGES)}
    if out in reserved:
        raise BadInputError(f"export target {out} would replace the workspace {workspace.root} or one of its "
                            "stage folders; pass a folder outside it, or a new folder inside it")
    if not out.is_dir() or not any(out.iterdir()):
        return
    if decisions is not None and out.resolve() in decisions.resolve().parents:
        raise BadInputError(f"export target {out} contains the decision file {decisions}, which an export there "
                            "would delete, even with --overwrite. Pass another --out.")
    if _is_own_export(out, workspace):
        return
    if workspace.root in out.parents:
        raise BadInputError(f"export target {out} is a folder of the workspace {workspace.root} (such as the "
                            "review database) but not its export, so it is not replaced, even with --overwrite. "
                            "Pass a new folder, or one outside the workspace.")
    if overwrite:
        return
    raise BadInputError(f"export target {out} is not empty; pass --overwrite to replace it, "
                        "or another --out")


def precheck_export(config: Config, workspace: Workspace, options: dict[str, Any]) -> None:
    """Reject an export target that the export would not be allowed to replace."""
    check_export_target(export_dir(config, workspace), workspace, overwrite=bool(options.get("overwrite")),
                        data_dir=config.data.dir, decisions=resolve_decisions_path(workspace, options))


def _is_own_export(out: Path, workspace: Workspace) -> bool:
    """Tell whether ``out`` contains an export that this workspace wrote, with nothing added since.

    The manifest's digest, not the folder's path, decides, so that the
    export of a copied or moved workspace counts too. Its digest is taken
    from the export record, or from the marker that the export writes just
    before it moves a new export into place, which covers an export
    interrupted between that move and its record. Files the export wrote
    may be missing (a damaged export is replaced), but anything it did not
    write (a note, another PNG file) makes the folder the user's.
    """
    with contextlib.suppress(CurateError, OSError, KeyError, ValueError):
        digest = file_digest(out / MANIFEST)
        record = workspace.read_record("export")
        known = {record.figures["manifest_blake2b"]} if record is not None else set()
        marker = workspace.root / EXPORT_MARKER
        if marker.is_file():
            known.add(json.loads(marker.read_text(encoding="utf-8"))["manifest_blake2b"])
        if digest not in known:
            return False
        with open(out / MANIFEST, newline="", encoding="utf-8") as handle:
            written = {row["path"] for row in csv.DictReader(handle)}
        # Every split has a folder per class, empty ones included.
        folders = {f"{split}/{name}" for split in SPLITS for name in CLASS_NAMES}
        if {entry.name for entry in out.iterdir()} - {MANIFEST, CARD, *SPLITS}:
            return False
        for split in SPLITS:
            if (out / split).is_dir() and {f"{split}/{entry.name}" for entry in (out / split).iterdir()} - folders:
                return False
        return all(f"{folder}/{entry.name}" in written
                   for folder in folders if (out / folder).is_dir() for entry in (out / folder).iterdir())
    return False


# The stage ---------------------------------------------------------------------------

def run_export(context: StageContext) -> dict[str, Any]:
    """Write the PNG folder tree, manifest and dataset card; return the stage's figures."""
    config, workspace, reporter = context.config, context.workspace, context.reporter
    out = export_dir(config, workspace)
    check_export_target(out, workspace, overwrite=bool(context.options.get("overwrite")), data_dir=config.data.dir,
                        decisions=resolve_decisions_path(workspace, context.options))

    data = context.data
    relabel = load_relabel(workspace)
    images = np.concatenate([data.train.images, data.test.images])
    sample_ids = np.concatenate([data.train.sample_ids, data.test.sample_ids])
    if not np.array_equal(sample_ids, relabel["sample_ids"]):
        raise CurateError("the relabel stage's samples differ from the data's; rerun with --force")
    class_names = np.array(CLASS_NAMES)[relabel["curated_labels"]]
    splits = relabel["splits"]

    _remove_abandoned_temporaries(out)
    temp = out.with_name(f".{out.name}{TEMP_MARK}{os.getpid()}")
    if temp.exists():
        shutil.rmtree(temp)
    marker = workspace.root / EXPORT_MARKER
    marker_written, previous_marker = False, None
    try:
        for split in SPLITS:
            for name in CLASS_NAMES:
                (temp / split / name).mkdir(parents=True)

        started = time.perf_counter()
        relative_paths = [f"{split}/{name}/{sample_id}.png"
                          for split, name, sample_id in zip(splits, class_names, sample_ids.tolist())]
        linked_mask = link_previous_pngs(out, temp, sample_ids, relative_paths, workspace=workspace,
                                         compress_level=config.export.png_compress_level)
        to_write_idx = np.flatnonzero(~linked_mask)
        write_pngs(temp, [relative_paths[i] for i in to_write_idx], images[to_write_idx],
                   compress_level=config.export.png_compress_level, workers=config.export.workers,
                   reporter=reporter)
        png_seconds = time.perf_counter() - started
        if linked_mask.any():
            reporter.info(f"reused {int(linked_mask.sum()):,} unchanged PNG files of the previous export "
                          f"(hard links), encoded {len(to_write_idx):,}")

        class_counts = {split: {name: int(((splits == split) & (class_names == name)).sum()) for name in CLASS_NAMES}
                        for split in SPLITS}
        manifest_text = manifest_csv(workspace, relabel, class_names, relative_paths)
        atomic_write_text(temp / MANIFEST, manifest_text)
        card = dataset_card(config, workspace, class_counts)
        atomic_write_text(temp / CARD, card)
        # Written before the move, so that a rerun after an interruption recognises this export as its own.
        previous_marker = marker.read_bytes() if marker.is_file() else None
        new_digest = file_digest(temp / MANIFEST)
        atomic_write_json(marker, {"out": str(out), "manifest_blake2b": new_digest})
        marker_written = True
        _replace_folder(temp, out)
    except BaseException as error:
        shutil.rmtree(temp, ignore_errors=True)
        # The marker stays only when the new export is in place (an interrupt held until the move ended).
        if marker_written and not _has_manifest(out, new_digest):
            if previous_marker is not None:
                atomic_write_bytes(marker, previous_marker)
            else:
                marker.unlink(missing_ok=True)
        if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
            raise CurateError(f"no space left on the device of {out.parent} while exporting "
                              f"{len(sample_ids):,} PNG files; the partial export was removed and "
                              f"{'the previous export is unchanged' if out.exists() else 'nothing was left in place'}. "
                              "Free some space, or pass another --out.") from None
        if isinstance(error, OSError) and error.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
            raise BadInputError(f"cannot write the export {out}: {error.strerror} ({error.filename}). The export "
                                "is built beside the target and moved into place, so both the target and its "
                                "parent folder must be writable. Pass another --out. "
                                f"{f'{out} is unchanged.' if out.exists() else ''}".rstrip()) from None
        raise

    # A copy in the workspace keeps the manifest and card under the stage's digests.
    atomic_write_text(context.out_dir / MANIFEST, manifest_text)
    atomic_write_text(context.out_dir / CARD, card)
    n_files = len(relative_paths)
    reporter.info(f"exported {n_files:,} PNG files to {out} ({n_files / png_seconds:,.0f} files/s)")
    return {
        "out": str(out),
        "out_in_workspace": _path_in_workspace(out, workspace),
        "n_files": n_files,
        "class_counts": class_counts,
        "manifest_blake2b": file_digest(out / MANIFEST),
        "png_seconds": round(png_seconds, 3),
    }


def link_previous_pngs(out: Path, temp: Path, sample_ids: np.ndarray, relative_paths: list[str], *,
                       workspace: Workspace, compress_level: int) -> np.ndarray:
    """Hard-link the PNG files of this workspace's previous export into the new tree; return the linked mask.

    A sample's PNG holds the same MNIST pixels whatever its class folder, so
    only its path changes when a threshold or a decision moves it. Files are
    reused only from the export that the workspace's record describes, still
    unchanged (manifest digest and per-folder counts), and written with the
    same compression level. As in ``verify_export``, PNG contents are not
    re-hashed, so a PNG edited by hand in the previous export is carried
    over. A link that fails (another file system, a file gone) falls back to
    encoding.
    """
    linked_mask = np.zeros(len(relative_paths), dtype=bool)
    try:
        record = workspace.read_record("export")
    except CurateError:
        return linked_mask
    if record is None or recorded_out(workspace, record) != out or verify_export(workspace, record):
        return linked_mask
    previous_level = record.inputs.get("config", {}).get("export.png_compress_level")
    if previous_level != compress_level:
        return linked_mask

    with open(out / MANIFEST, newline="", encoding="utf-8") as handle:
        previous_paths = {row["sample_id"]: row["path"] for row in csv.DictReader(handle)}
    for i, (sample_id, relative_path) in enumerate(zip(sample_ids.tolist(), relative_paths)):
        previous = previous_paths.get(sample_id)
        if previous is None:
            continue
        try:
            os.link(out / previous, temp / relative_path)
        except OSError:
            continue
        linked_mask[i] = True
    return linked_mask


def _replace_folder(temp: Path, out: Path) -> None:
    """Move a finished export into place; an existing folder is swapped out only now."""
    with interrupts_deferred():
        if out.exists():
            old = out.with_name(f".{out.name}.old-{os.getpid()}")
            os.replace(out, old)
            try:
                os.replace(temp, out)
            except OSError:
                os.replace(old, out)
                raise
        else:
            out.parent.mkdir(parents=True, exist_ok=True)
            os.replace(temp, out)
            return
    shutil.rmtree(old, ignore_errors=True)


def _remove_abandoned_temporaries(out: Path) -> None:
    """Delete temporary export folders of processes that died (kill -9, power loss)."""
    if not out.parent.is_dir():
        return
    for prefix in (f".{out.name}{TEMP_MARK}", f".{out.name}.old-"):
        for path in out.parent.glob(f"{prefix}*"):
            pid = path.name[len(prefix):]
            if pid.isdigit() and not _pid_alive(int(pid)):
                shutil.rmtree(path, ignore_errors=True)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# PNG files ---------------------------------------------------------------------------

def write_pngs(root: Path, relative_paths: list[str], images: np.ndarray, *, compress_level: int, workers: int,
               reporter) -> None:
    """Encode each image as a lossless 8-bit grayscale PNG, in parallel worker processes."""
    if not relative_paths:
        return
    n_workers = workers or os.cpu_count() or 1
    chunks = [(str(root), relative_paths[start:start + CHUNK_SIZE], images[start:start + CHUNK_SIZE], compress_level)
              for start in range(0, len(relative_paths), CHUNK_SIZE)]
    with reporter.progress() as progress:
        task = progress.add_task("PNG files", total=len(relative_paths), status="")
        if n_workers == 1:
            for chunk in chunks:
                progress.advance(task, _write_png_chunk(*chunk))
            return
        # spawn, not fork: forking a process that runs torch's threads can deadlock.
        context = multiprocessing.get_context("spawn")
        pool = ProcessPoolExecutor(max_workers=n_workers, mp_context=context, initializer=_prepare_worker,
                                   initargs=(os.getpid(),))
        try:
            # Ctrl-C sends SIGINT to the whole process group. Workers started while
            # it is ignored inherit that through exec, even while still importing,
            # so only this process reacts: it stops the pool and reports once.
            previous_handler = signal.signal(signal.SIGINT, signal.SIG_IGN)
            try:
                results = pool.map(_write_png_chunk, *zip(*chunks))
            finally:
                signal.signal(signal.SIGINT, previous_handler)
            for n_written in results:
                progress.advance(task, n_written)
        finally:
            # On an error or Ctrl-C, drop the chunks not started instead of writing them all first.
            pool.shutdown(wait=True, cancel_futures=True)


def _prepare_worker(parent_pid: int) -> None:
    """Have Linux kill this worker when the exporting process dies, so that kill -9 leaves no idle workers.

    Without it, workers of a killed export wait on their task queue forever.
    """
    if not sys.platform.startswith("linux"):
        return
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    # The parent may have died before prctl took effect.
    if os.getppid() != parent_pid:
        os._exit(1)


def _write_png_chunk(root: str, relative_paths: list[str], images: np.ndarray, compress_level: int) -> int:
    from PIL import Image

    for relative_path, image in zip(relative_paths, images):
        Image.fromarray(image, mode="L").save(os.path.join(root, relative_path), format="PNG",
                                              compress_level=compress_level)
    return len(relative_paths)


# Manifest and dataset card ---------------------------------------------------------------

def manifest_csv(workspace: Workspace, relabel: dict[str, np.ndarray], class_names: np.ndarray,
                 relative_paths: list[str]) -> str:
    """Return manifest.csv: per sample its path, given and curated label, decision source and scores."""
    columns: dict[str, Any] = {
        "sample_id": relabel["sample_ids"].tolist(),
        "split": relabel["splits"].tolist(),
        "path": relative_paths,
        "label": relabel["labels"].tolist(),
        "curated_label": class_names.tolist(),
        "decision_source": relabel["decision_sources"].tolist(),
    }
    columns |= _score_columns(workspace, relabel["sample_ids"])

    buffer = io.StringIO(newline="")
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns)
    writer.writerows(zip(*columns.values()))
    return buffer.getvalue()


def _score_columns(workspace: Workspace, sample_ids: np.ndarray) -> dict[str, list]:
    """Return the prediction, candidate and score columns that the earlier stages wrote, in manifest order."""
    sources = {
        "prediction": ("embed", "predictions"),
        "confidence": ("embed", "confidence"),
        "candidate": ("candidates", "candidate_mask"),
        "suspicion": ("candidates", "suspicion"),
        **{name: ("score", name) for name in SCORE_COLUMNS},
        "label_issue": ("score", "label_issue"),
    }
    embed_ids = workspace.stage_dir("embed") / "sample_ids.npy"
    if embed_ids.is_file() and not np.array_equal(np.load(embed_ids), sample_ids):
        raise CurateError("the embed stage's samples differ from relabel's; rerun `mnist-curate all --force`")

    columns: dict[str, list] = {}
    # NOTE: columns whose stage has not written its file are left out, so an
    # export of a workspace without the score stages has no score columns.
    for column, (stage, name) in sources.items():
        path = workspace.stage_dir(stage) / f"{name}.npy"
        if not path.is_file():
            continue
        values = np.load(path)
        if values.dtype == bool:
            columns[column] = [int(v) for v in values.tolist()]
        elif np.issubdtype(values.dtype, np.floating):
            columns[column] = ["" if not np.isfinite(v) else f"{v:.6g}" for v in values.tolist()]
        else:
            columns[column] = values.tolist()
    return columns


CITATION = """\
@article{lecun1998gradient,
  title   = {Gradient-based learning applied to document recognition},
  author  = {LeCun, Yann and Bottou, L{\\'e}on and Bengio, Yoshua and Haffner, Patrick},
  journal = {Proceedings of the IEEE},
  volume  = {86},
  number  = {11},
  pages   = {2278--2324},
  year    = {1998}
}"""


def dataset_card(config: Config, workspace: Workspace, class_counts: dict[str, dict[str, int]]) -> str:
    """Return the dataset card: YAML front matter that dataset hubs read, then counts, method and licence."""
    n_by_split = {split: sum(counts.values()) for split, counts in class_counts.items()}
    front_matter = {
        "license": "cc-by-sa-3.0",
        "pretty_name": "MNIST curated with an IDK class",
        "task_categories": ["image-classification"],
        "tags": ["mnist", "abstention", "label-noise", "data-curation"],
        "size_categories": ["10K<n<100K" if sum(n_by_split.values()) >= 10_000 else "1K<n<10K"],
        "source_datasets": ["mnist"],
        "dataset_info": {
            "features": [{"name": "image", "dtype": "image"},
                         {"name": "label", "dtype": {"class_label": {"names": {str(k): name for k, name
                                                                               in enumerate(CLASS_NAMES)}}}}],
            "splits": [{"name": split, "num_examples": n} for split, n in n_by_split.items()],
        },
        "configs": [{"config_name": "default",
                     "data_files": [{"split": split, "path": f"{split}/*/*.png"} for split in SPLITS]}],
    }
    import yaml

    lines = ["---", yaml.safe_dump(front_matter, sort_keys=False).rstrip(), "---", "",
             "# MNIST curated with an IDK class", "",
             "MNIST's handwritten digits with an 11th class, `IDK`, for digits that are unreadable, "
             "ambiguous or wrongly labelled. Every image keeps the exact MNIST pixels (28x28, 8-bit "
             "grayscale PNG); only the label, given by the folder, can differ from MNIST's.", "",
             "## Counts", "",
             "| class | " + " | ".join(SPLITS) + " |",
             "| --- | " + " | ".join("---:" for _ in SPLITS) + " |"]
    for name in CLASS_NAMES:
        lines.append(f"| {name} | " + " | ".join(f"{class_counts[split][name]:,}" for split in SPLITS) + " |")
    lines.append("| **all** | " + " | ".join(f"**{n_by_split[split]:,}**" for split in SPLITS) + " |")

    relabel_record = workspace.read_record("relabel")
    decisions = relabel_record.figures if relabel_record else {}
    lines += [
        "", "## Files", "",
        "- `train/<class>/<sample_id>.png`, `test/<class>/<sample_id>.png`: one folder per curated class "
        "(`0`-`9`, `IDK`). `sample_id` is `train-00000` ... `train-59999` or `test-00000` ... `test-09999`, "
        "the 0-based position in torchvision's MNIST order.",
        "- `manifest.csv`: one row per image with `sample_id`, `split`, `path`, the original `label`, the "
        "`curated_label`, the `decision_source` (`review`, `rule`, `manual`, or empty when no decision "
        "applies) and the scores that selected the candidates.", "",
        "## Method", "",
        f"Built with mnist-curate {__version__}. A LeNet-5 is trained on the original labels, with "
        "out-of-fold logits for every training image from models that never saw it. Its 84-d "
        "embeddings give per-image hardness, mistakenness, uniqueness and representativeness, "
        "and confident learning flags likely label issues; rules combine them into IDK candidates. "
        "The candidates are reviewed (or accepted as they are), the decisions are kept in a decision "
        "file, and each decision sets the image's curated label to `IDK` or to a corrected digit.", "",
        f"- decision file: `{Path(decisions.get('decisions_path', '?')).name}` (SHA-256 "
        f"`{decisions.get('decisions_sha256', '?')}`), {decisions.get('n_applied', 0):,} decisions applied",
        "", "Config used:", "", "```yaml", dump_config(config).rstrip(), "```", "",
        "## Licence and citation", "",
        "MNIST is by Yann LeCun, Corinna Cortes and Christopher J. C. Burges and is distributed under the "
        "Creative Commons Attribution-Share Alike 3.0 licence (CC BY-SA 3.0); this derived dataset is "
        "shared under the same licence. Cite MNIST as:", "",
        "```bibtex", CITATION, "```", ""]
    return "\n".join(lines)


def export_summary(figures: dict[str, Any]) -> str:
    counts = figures["class_counts"]
    parts = [f"{split}: {sum(counts[split].values()):,} images, {counts[split]['IDK']:,} IDK" for split in counts]
    return f"export at {figures['out']}: " + "; ".join(parts)
