"""Compute the four FiftyOne Brain scores of given arrays on a real FiftyOne dataset.

Used by the Brain parity test and by ``bench_scores.py``. As a script it
reads an .npz with ``logits`` (n, 10), ``labels`` (n,) and ``embeddings``
(n, d) and writes an .npz with ``hardness``, ``mistakenness``,
``uniqueness``, ``representativeness`` and the seconds of each step::

    python tests/benchmarks/brain_reference.py inputs.npz outputs.npz

FiftyOne keeps its MongoDB data in ``FIFTYONE_DATABASE_DIR``. When that is
unset, the script points it at a fresh temporary folder before importing
fiftyone, so that it never touches ~/.fiftyone.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time

import numpy as np


def use_private_database() -> None:
    """Point FiftyOne at a temporary database folder unless one is set already (call before importing it)."""
    os.environ.setdefault("FIFTYONE_DO_NOT_TRACK", "true")
    if "FIFTYONE_DATABASE_DIR" not in os.environ:
        os.environ["FIFTYONE_DATABASE_DIR"] = tempfile.mkdtemp(prefix="mnist-curate-fiftyone-db-")


def brain_scores(logits: np.ndarray, labels: np.ndarray, embeddings: np.ndarray) -> dict[str, np.ndarray]:
    """Run fiftyone.brain's hardness, mistakenness, uniqueness and representativeness; return scores and seconds."""
    use_private_database()
    import fiftyone as fo
    import fiftyone.brain as fob

    started = time.perf_counter()
    dataset = fo.Dataset()
    predictions = logits.argmax(axis=1)
    samples = [
        fo.Sample(filepath=f"/nonexistent/mnist-curate/{i:05d}.png",
                  ground_truth=fo.Classification(label=str(int(labels[i]))),
                  predictions=fo.Classification(label=str(int(predictions[i])),
                                                logits=[float(v) for v in logits[i]]))
        for i in range(len(labels))
    ]
    dataset.add_samples(samples, progress=False)
    timings = {"seconds_add_samples": time.perf_counter() - started}

    steps = {
        "hardness": lambda: fob.compute_hardness(dataset, "predictions", hardness_field="hardness", progress=False),
        "mistakenness": lambda: fob.compute_mistakenness(dataset, "predictions", label_field="ground_truth",
                                                         mistakenness_field="mistakenness", use_logits=True,
                                                         progress=False),
        "uniqueness": lambda: fob.compute_uniqueness(dataset, embeddings=embeddings, uniqueness_field="uniqueness",
                                                     progress=False),
        "representativeness": lambda: fob.compute_representativeness(
            dataset, embeddings=embeddings, representativeness_field="representativeness", progress=False),
    }
    for name, step in steps.items():
        started = time.perf_counter()
        step()
        timings[f"seconds_{name}"] = time.perf_counter() - started

    # Samples come back in insertion order, the order of the input rows.
    results = {name: np.asarray(dataset.values(name), dtype=np.float64) for name in steps}
    dataset.delete()
    return results | {key: np.float64(value) for key, value in timings.items()}


def main(arguments: list[str]) -> None:
    inputs_path, outputs_path = arguments
    inputs = np.load(inputs_path)
    results = brain_scores(inputs["logits"], inputs["labels"], inputs["embeddings"])
    np.savez(outputs_path, **results)


if __name__ == "__main__":
    main(sys.argv[1:])
