"""The candidates stage: rules pick IDK candidates, each with every rule that flagged it.

Rules (thresholds in the ``candidates`` config section; "top fraction" is
taken within each split, so the test split gets its share):

* ``mistaken``: misclassified and in the top ``top_mistakenness`` by mistakenness
  (a confident prediction that contradicts the label).
* ``hard``: misclassified and in the top ``top_hardness`` by hardness
  (the model hesitates between classes and picks another one).
* ``outlier``: in the top ``top_uniqueness`` by uniqueness (far from every
  other digit of its split).
* ``label_issue``: a confident-learning label issue (when ``label_issues`` is on).

Suspicion, used to sort ``candidates.csv`` and the montage: the mean of a
sample's percentile ranks within its split over mistakenness, hardness,
uniqueness, 1 - representativeness and the label-issue flag. Ranks put the
scores on one scale; tied values (every sample without a label issue, for
example) share their average rank. Higher is more suspicious.

Outputs (in ``WORKSPACE/candidates/``): ``candidate_mask.npy`` (n,) bool,
``suspicion.npy`` (n,) float32, ``reasons.json`` {sample_id: [reason, ...]},
``candidates.csv`` (candidates only, most suspicious first), ``scores.csv``
(every sample: the score stage's columns plus ``suspicion``, ``candidate``
and ``reasons``) and ``montage.png``.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from mnist_curate.config import CandidatesConfig
from mnist_curate.embed import load_embed
from mnist_curate.pipeline import StageContext
from mnist_curate.scores import load_scores, write_scores_csv
from mnist_curate.ui import Reporter
from mnist_curate.workspace import Workspace, atomic_write_json, save_npy

REASONS = ("mistaken", "hard", "outlier", "label_issue")
REASON_SEPARATOR = ";"


def top_fraction_mask(values: np.ndarray, fraction: float) -> np.ndarray:
    """Mark the ceil(fraction * n) highest values; ties are broken by row order, so the count is exact."""
    n_top = math.ceil(fraction * len(values) - 1e-9)
    mask = np.zeros(len(values), dtype=bool)
    if n_top > 0:
        mask[np.argsort(-values, kind="stable")[:n_top]] = True
    return mask


def rule_masks(scores: dict[str, np.ndarray], labels: np.ndarray, predictions: np.ndarray, splits: np.ndarray,
               settings: CandidatesConfig) -> dict[str, np.ndarray]:
    """Return one boolean mask per reason in REASONS: the samples each rule flags."""
    misclassified_mask = predictions != labels
    masks = {reason: np.zeros(len(labels), dtype=bool) for reason in REASONS}
    for split in np.unique(splits):
        split_mask = splits == split
        masks["mistaken"][split_mask] = top_fraction_mask(scores["mistakenness"][split_mask],
                                                          settings.top_mistakenness)
        masks["hard"][split_mask] = top_fraction_mask(scores["hardness"][split_mask], settings.top_hardness)
        masks["outlier"][split_mask] = top_fraction_mask(scores["uniqueness"][split_mask], settings.top_uniqueness)
    masks["mistaken"] &= misclassified_mask
    masks["hard"] &= misclassified_mask
    if settings.label_issues:
        masks["label_issue"] = np.asarray(scores["label_issue"], dtype=bool).copy()
    return masks


def suspicion(scores: dict[str, np.ndarray], splits: np.ndarray) -> np.ndarray:
    """Mean percentile rank within the split over the suspicion scores; in (0, 1], higher is more suspicious."""
    from scipy.stats import rankdata

    signals = {
        "mistakenness": scores["mistakenness"],
        "hardness": scores["hardness"],
        "uniqueness": scores["uniqueness"],
        "atypicality": 1.0 - np.asarray(scores["representativeness"], dtype=np.float64),
        "label_issue": np.asarray(scores["label_issue"], dtype=np.float64),
    }
    result = np.zeros(len(splits))
    for split in np.unique(splits):
        split_mask = splits == split
        ranks = [rankdata(values[split_mask], method="average") / split_mask.sum() for values in signals.values()]
        result[split_mask] = np.mean(ranks, axis=0)
    return result


def run_candidates(context: StageContext) -> dict:
    """Apply the rules, rank by suspicion, and write the candidate files and the montage."""
    settings, reporter = context.config.candidates, context.reporter
    root = context.workspace.root
    arrays = load_embed(root, mmap=False)
    scores = load_scores(root)
    labels, predictions, splits, sample_ids = (arrays["labels"], arrays["predictions"], arrays["splits"],
                                               arrays["sample_ids"])

    masks = rule_masks(scores, labels, predictions, splits, settings)
    candidate_mask = np.logical_or.reduce([masks[reason] for reason in REASONS])
    suspicion_values = suspicion(scores, splits).astype(np.float32)
    reasons_text = np.array([REASON_SEPARATOR.join(r for r in REASONS if masks[r][i]) for i in range(len(labels))],
                            dtype=object)
    by_suspicion = np.argsort(-suspicion_values, kind="stable")
    candidate_order = by_suspicion[candidate_mask[by_suspicion]]

    save_npy(context.out_dir / "candidate_mask.npy", candidate_mask)
    save_npy(context.out_dir / "suspicion.npy", suspicion_values)
    atomic_write_json(context.out_dir / "reasons.json",
                      {str(sample_ids[i]): reasons_text[i].split(REASON_SEPARATOR) for i in candidate_order})
    score_arrays = {name: scores[name] for name in scores if name != "label_issue"}
    extra = {"suspicion": suspicion_values, "candidate": candidate_mask, "reasons": reasons_text}
    write_scores_csv(context.out_dir / "scores.csv", arrays, score_arrays, scores["label_issue"], extra)
    write_scores_csv(context.out_dir / "candidates.csv", arrays, score_arrays, scores["label_issue"], extra,
                     order=candidate_order)

    montage_idx = candidate_order[:settings.montage_size]
    data = context.data
    images = np.concatenate([data.train.images, data.test.images])
    draw_montage(context.out_dir / "montage.png", images[montage_idx], sample_ids[montage_idx],
                 labels[montage_idx], predictions[montage_idx], reasons_text[montage_idx])

    figures = count_candidates(masks, candidate_mask, splits)
    report_counts(reporter, figures)
    folder = context.workspace.stage_dir("candidates")
    reporter.info(f"candidates: {folder / 'candidates.csv'}")
    reporter.info(f"montage of the top {len(montage_idx)}: {folder / 'montage.png'}")
    return figures


def count_candidates(masks: dict[str, np.ndarray], candidate_mask: np.ndarray, splits: np.ndarray) -> dict:
    figures: dict = {"n_candidates": int(candidate_mask.sum())}
    for split in ("train", "test"):
        split_mask = splits == split
        figures[f"n_candidates_{split}"] = int((candidate_mask & split_mask).sum())
        figures[f"by_reason_{split}"] = {reason: int((masks[reason] & split_mask).sum()) for reason in REASONS}
    return figures


def report_counts(reporter: Reporter, figures: dict) -> None:
    from rich.table import Table

    table = Table(title=f"{figures['n_candidates']:,} IDK candidates (a sample may have several reasons)")
    table.add_column("split")
    table.add_column("candidates", justify="right")
    for reason in REASONS:
        table.add_column(reason, justify="right")
    for split in ("train", "test"):
        counts = figures[f"by_reason_{split}"]
        table.add_row(split, f"{figures[f'n_candidates_{split}']:,}", *(f"{counts[r]:,}" for r in REASONS))
    reporter.print(table)


def draw_montage(path: Path, images: np.ndarray, sample_ids: np.ndarray, labels: np.ndarray,
                 predictions: np.ndarray, reasons_text: np.ndarray, *, columns: int = 10) -> None:
    """Draw the candidates as a grid of tiles: the digit, then its id, label -> prediction and reasons."""
    from PIL import Image, ImageDraw, ImageFont

    import textwrap

    scale, tile_width, text_height, pad, line_height = 4, 150, 62, 6, 14
    image_side = images.shape[1] * scale if len(images) else 28 * scale
    tile_height = image_side + text_height + pad
    n_rows = max(1, math.ceil(len(images) / columns))
    canvas = Image.new("RGB", (columns * tile_width, n_rows * tile_height), "white")
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default(size=12)
    for i, image in enumerate(images):
        left, top = (i % columns) * tile_width, (i // columns) * tile_height
        digit = Image.fromarray(255 - image).resize((image_side, image_side), Image.NEAREST)
        canvas.paste(digit, (left + (tile_width - image_side) // 2, top + pad // 2))
        lines = [str(sample_ids[i]), f"label {labels[i]} -> pred {predictions[i]}",
                 *textwrap.wrap(str(reasons_text[i]).replace(REASON_SEPARATOR, " "), width=20)]
        colour = "firebrick" if labels[i] != predictions[i] else "black"
        for line_number, line in enumerate(lines):
            draw.text((left + 4, top + image_side + pad // 2 + 2 + line_height * line_number), line,
                      fill=colour if line_number == 1 else "black", font=font)
    canvas.save(path)


def print_top_candidates(workspace: Workspace, n_top: int, reporter: Reporter) -> None:
    """Print a table of the n_top most suspicious candidates from candidates.csv."""
    import pandas as pd
    from rich import box
    from rich.console import Console
    from rich.table import Table

    frame = pd.read_csv(workspace.stage_dir("candidates") / "candidates.csv", keep_default_na=False).head(n_top)
    table = Table(title=f"top {len(frame)} IDK candidates by suspicion", box=box.SIMPLE_HEAD, pad_edge=False)
    # Short headers keep the table narrow.
    headers = {"sample_id": "sample_id", "label": "label", "prediction": "pred", "suspicion": "susp",
               "mistakenness": "mistak", "hardness": "hard", "uniqueness": "uniq", "representativeness": "repr",
               "reasons": "reasons"}
    table.add_column("#", justify="right", no_wrap=True)
    for column, header in headers.items():
        justify = "left" if column in ("sample_id", "reasons") else "right"
        table.add_column(header, justify=justify, no_wrap=column != "reasons")
    for rank, row in enumerate(frame.to_dict("records"), start=1):
        values = [str(row[c]) if c in ("sample_id", "label", "prediction", "reasons") else f"{float(row[c]):.2f}"
                  for c in headers]
        # Spaces let the reasons wrap inside their column.
        values[-1] = values[-1].replace(REASON_SEPARATOR, " ")
        table.add_row(str(rank), *values)
    console = reporter.console
    if not console.is_terminal:
        # Without a terminal (logs, pipes) rich assumes 80 columns, too few for the reasons.
        console = Console(file=console.file, width=max(console.width, 120), highlight=False)
    console.print(table)
