"""Time our four Brain scores against fiftyone.brain on the same arrays, in one process.

Reads a workspace where ``embed`` has run, takes the first ``--subset`` rows
of one split (score logits, labels, embeddings), computes hardness,
mistakenness, uniqueness and representativeness with ``mnist_curate.scores``
and with ``fiftyone.brain`` on a real FiftyOne dataset, and prints both
times, the speed-up and the largest difference of each score.
Representativeness is compared as ours = 1 - Brain's value. With
``--full`` it also times ours on every row of both splits, as the score
stage computes them::

    python tests/benchmarks/bench_scores.py WORKSPACE --subset 10000 --full

FiftyOne uses a temporary database folder unless FIFTYONE_DATABASE_DIR is set.
Brain's uniqueness switches to approximate distances above 15,000 samples,
so subsets larger than that are not comparable for uniqueness.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from brain_reference import brain_scores, use_private_database  # noqa: E402

BRAIN_NAMES = ("hardness", "mistakenness", "uniqueness", "representativeness")


def our_scores(logits: np.ndarray, labels: np.ndarray, embeddings: np.ndarray, *, n_clusters: int
               ) -> tuple[dict[str, np.ndarray], dict[str, float]]:
    from mnist_curate import scores

    results, seconds = {}, {}
    steps = {
        "hardness": lambda: scores.hardness(logits),
        "mistakenness": lambda: scores.mistakenness(logits, labels),
        "uniqueness": lambda: scores.uniqueness(embeddings),
        "representativeness": lambda: scores.representativeness(embeddings, n_clusters=n_clusters)[0],
    }
    for name, step in steps.items():
        started = time.perf_counter()
        results[name] = step()
        seconds[name] = time.perf_counter() - started
    return results, seconds


def time_full(arrays: dict[str, np.ndarray], logits: np.ndarray, *, n_clusters: int) -> dict[str, float]:
    """Time ours on all rows: logit scores over both splits, embedding scores within each split."""
    from mnist_curate import scores

    seconds = {name: 0.0 for name in BRAIN_NAMES}
    for name, function in (("hardness", lambda: scores.hardness(logits)),
                           ("mistakenness", lambda: scores.mistakenness(logits, arrays["labels"]))):
        started = time.perf_counter()
        function()
        seconds[name] = time.perf_counter() - started
    for split in ("train", "test"):
        embeddings = arrays["embeddings"][arrays["splits"] == split]
        started = time.perf_counter()
        scores.uniqueness(embeddings)
        seconds["uniqueness"] += time.perf_counter() - started
        started = time.perf_counter()
        scores.representativeness(embeddings, n_clusters=n_clusters)
        seconds["representativeness"] += time.perf_counter() - started
    return seconds


def run(workspace: Path, *, subset: int, split: str, full: bool, n_clusters: int) -> dict[str, dict[str, float]]:
    """Run the comparison and return {score name: {ours_s, brain_s, speedup, max_difference}}."""
    use_private_database()
    from mnist_curate.embed import load_embed, score_logits

    arrays = load_embed(workspace, mmap=False)
    logits = score_logits(arrays["logits"], arrays["oof_logits"])
    rows = np.flatnonzero(arrays["splits"] == split)[:subset]
    sub_logits = logits[rows].astype(np.float32)
    sub_labels, sub_embeddings = arrays["labels"][rows], arrays["embeddings"][rows]

    ours, our_seconds = our_scores(sub_logits, sub_labels, sub_embeddings, n_clusters=n_clusters)
    brain = brain_scores(sub_logits, sub_labels, sub_embeddings)
    brain["representativeness"] = 1.0 - brain["representativeness"]

    print(f"{len(rows):,} {split} samples from {workspace}; Brain added them in "
          f"{float(brain['seconds_add_samples']):.1f} s (not counted below)")
    print(f"{'score':<20}{'ours (s)':>10}{'Brain (s)':>11}{'speed-up':>10}{'max |difference|':>18}")
    summary = {}
    for name in BRAIN_NAMES:
        brain_seconds = float(brain[f"seconds_{name}"])
        difference = float(np.abs(ours[name] - brain[name]).max())
        speedup = brain_seconds / max(our_seconds[name], 1e-9)
        summary[name] = {"ours_s": our_seconds[name], "brain_s": brain_seconds, "speedup": speedup,
                         "max_difference": difference}
        print(f"{name:<20}{our_seconds[name]:>10.3f}{brain_seconds:>11.2f}{speedup:>9.0f}x{difference:>18.2e}")
    ours_total, brain_total = sum(our_seconds.values()), sum(float(brain[f"seconds_{n}"]) for n in BRAIN_NAMES)
    print(f"{'total':<20}{ours_total:>10.3f}{brain_total:>11.2f}{brain_total / ours_total:>9.0f}x")

    if full:
        full_seconds = time_full(arrays, logits, n_clusters=n_clusters)
        print(f"ours on all {len(logits):,} samples (uniqueness and representativeness within each split): "
              + ", ".join(f"{name} {value:.2f} s" for name, value in full_seconds.items())
              + f"; total {sum(full_seconds.values()):.2f} s")
        summary["full"] = full_seconds
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("workspace", type=Path, help="workspace folder where `mnist-curate embed` has run")
    parser.add_argument("--subset", type=int, default=10_000, help="rows of the split to compare on")
    parser.add_argument("--split", choices=("train", "test"), default="train")
    parser.add_argument("--full", action="store_true", help="also time ours on every row of both splits")
    parser.add_argument("--clusters", type=int, default=20, help="KMeans clusters for representativeness")
    arguments = parser.parse_args()
    run(arguments.workspace, subset=arguments.subset, split=arguments.split, full=arguments.full,
        n_clusters=arguments.clusters)


if __name__ == "__main__":
    main()
