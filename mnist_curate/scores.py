"""The score stage: per-sample curation scores, vectorised over all samples.

The four FiftyOne Brain metrics (hardness, mistakenness, uniqueness,
representativeness) follow the formulas of fiftyone-brain 0.25
(``fiftyone/brain/internal/core/``), computed on numpy arrays in seconds
instead of per sample through the database. ``tests/test_brain_parity.py``
checks them against ``fiftyone.brain`` on a real dataset. Margin,
self-confidence and confident-learning label issues (cleanlab) come on top.

Every logits-based score uses the *score logits*: out-of-fold logits for
training rows, the final model's logits for test rows (see
``mnist_curate.embed.score_logits``). Uniqueness and representativeness are
computed within each split, so a test digit is compared with test digits.

Outputs (in ``WORKSPACE/score/``): one (n,) float32 ``.npy`` per score in
``SCORE_NAMES``, ``label_issue.npy`` (n,) bool, ``scores.csv`` (one row per
sample) and ``histograms.png``.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

from mnist_curate.embed import load_embed, score_logits, softmax
from mnist_curate.pipeline import StageContext
from mnist_curate.workspace import atomic_write_text, save_npy

SCORE_NAMES = ("hardness", "mistakenness", "uniqueness", "representativeness", "margin", "self_confidence")

# fiftyone-brain 0.25 uniqueness: weights of the neighbour distances, and the
# random_state of its KMeans for representativeness.
BRAIN_UNIQUENESS_WEIGHTS = (0.6, 0.3, 0.1)
BRAIN_KMEANS_SEED = 1234
KNN_CHUNK_ROWS = 1024
KNN_GROUP_COLUMNS = 64


# Scores from logits ---------------------------------------------------------------

def hardness(logits: np.ndarray) -> np.ndarray:
    """Return the entropy (natural log) of softmax(logits) per row. High means the model is unsure.

    Same formula as fiftyone-brain 0.25 ``hardness.py``
    (``scipy.stats.entropy(scipy.special.softmax(logits))``). Ranges from 0
    (one class takes all the probability) to ln(n_classes) (uniform).
    """
    z = np.asarray(logits, dtype=np.float64)
    z = z - z.max(axis=1, keepdims=True)
    exp = np.exp(z)
    total = exp.sum(axis=1)
    # H = log(sum exp z) - sum(p * z), which stays finite when some p underflow to 0.
    return np.log(total) - (exp * z).sum(axis=1) / total


def mistakenness(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Rate how likely the given label is wrong, from the prediction and its certainty. High means likely wrong.

    fiftyone-brain 0.25 ``mistakenness.py`` (classification, ``use_logits=True``):
    ``(m * exp(-hardness) + 1) / 2`` with m = +1 when argmax(logits) differs
    from the label and -1 when it agrees. A confident wrong prediction scores
    near 1, a confident right one near 0, an unsure one near 0.5; every
    misclassified sample scores at least 0.5.
    """
    predictions = np.asarray(logits).argmax(axis=1)
    m = np.where(predictions != labels, 1.0, -1.0)
    return (m * np.exp(-hardness(logits)) + 1.0) / 2.0


def margin(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Return the logit of the given label minus the largest other logit. Negative means another class wins.

    Not a Brain metric. A large negative margin is a confident disagreement
    with the label; a margin near 0 is a sample between two classes.
    """
    z = np.asarray(logits, dtype=np.float64)
    rows = np.arange(len(z))
    given = z[rows, labels]
    others = z.copy()
    others[rows, labels] = -np.inf
    return given - others.max(axis=1)


def self_confidence(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Return the softmax probability of the given label (cleanlab's self-confidence). Low means the label looks wrong."""
    return softmax(logits)[np.arange(len(labels)), labels]


def label_issues(logits: np.ndarray, labels: np.ndarray, *, filter_by: str) -> np.ndarray:
    """Return a mask of confident-learning label issues from cleanlab ``find_label_issues``.

    Confident learning (Northcutt et al. 2021) estimates the joint distribution
    of given and true labels from per-class confidence thresholds, and flags
    the samples that fall off its diagonal. It needs out-of-sample
    probabilities: out-of-fold ones for training rows. Classes with no sample
    in ``labels`` are dropped first, because cleanlab expects every column of
    the probabilities to be a class that occurs.
    """
    from cleanlab.filter import find_label_issues

    probs = softmax(logits)
    present = np.unique(labels)
    column_of = np.full(probs.shape[1], -1)
    column_of[present] = np.arange(len(present))
    present_probs = probs[:, present]
    present_probs /= present_probs.sum(axis=1, keepdims=True)
    # n_jobs=1: the process pool costs more than it saves at 10 classes.
    return find_label_issues(column_of[labels], present_probs, filter_by=filter_by, n_jobs=1)


# Scores from embeddings -----------------------------------------------------------

def neighbour_cosine_distances(embeddings: np.ndarray, n_neighbors: int) -> np.ndarray:
    """Return the cosine distances to each row's ``n_neighbors`` nearest other rows, ascending.

    Embeddings are mean-centred first, as fiftyone-brain 0.25 does. The search
    is an exact brute force in float32 chunks with torch that keeps two spare
    neighbours. Their distances are then recomputed in float64, so they match
    sklearn's ``pairwise_distances(metric="cosine")`` on float64 input to rounding error.
    """
    centred = np.asarray(embeddings, dtype=np.float64)
    # Constant columns (ReLU units that never fire) are zero after centring and
    # add nothing to any dot product; dropping them shortens the search.
    centred = centred[:, np.ptp(centred, axis=0) > 0]
    centred = centred - centred.mean(axis=0, keepdims=True)
    norms = np.linalg.norm(centred, axis=1, keepdims=True)
    # sklearn treats a zero vector as having cosine distance 1 to everything.
    unit64 = np.divide(centred, norms, out=np.zeros_like(centred), where=norms > 0)
    unit32 = torch.from_numpy(unit64.astype(np.float32))

    n_rows = len(unit64)
    n_search = min(n_neighbors + 2, n_rows - 1)
    n_groups = -(-n_rows // KNN_GROUP_COLUMNS)
    # Columns are padded to whole groups; padding similarities are set to -inf below.
    columns = torch.zeros(unit32.shape[1], n_groups * KNN_GROUP_COLUMNS)
    columns[:, :n_rows] = unit32.T
    grouped = n_groups >= 4 * n_search
    found = np.empty((n_rows, n_search), dtype=np.int64)
    # One reused buffer: allocating a fresh (chunk, n_rows) matrix per chunk
    # costs more in page faults than the matrix product itself.
    similarity_buffer = torch.empty(min(KNN_CHUNK_ROWS, n_rows), columns.shape[1])
    for start in range(0, n_rows, KNN_CHUNK_ROWS):
        stop = min(start + KNN_CHUNK_ROWS, n_rows)
        similarity = similarity_buffer[:stop - start]
        torch.mm(unit32[start:stop], columns, out=similarity)
        similarity[:, n_rows:] = -np.inf
        # A row is not its own neighbour.
        similarity[torch.arange(stop - start), torch.arange(start, stop)] = -np.inf
        found[start:stop] = (_grouped_topk(similarity, n_search) if grouped
                             else torch.topk(similarity, n_search, dim=1).indices).numpy()

    exact = 1.0 - np.einsum("ij,ikj->ik", unit64, unit64[found])
    exact = np.maximum(exact, 0.0)
    return np.sort(exact, axis=1)[:, :n_neighbors]


def _grouped_topk(similarity: torch.Tensor, k: int) -> torch.Tensor:
    """Return the column indices of each row's k largest values, like torch.topk but faster on wide rows.

    The k largest values of a row lie in the k column groups with the largest
    maxima, so one cheap max per group narrows the search to k groups.
    """
    n_rows = len(similarity)
    group_maxima = similarity.view(n_rows, -1, KNN_GROUP_COLUMNS).amax(dim=2)
    best_groups = torch.topk(group_maxima, k, dim=1).indices
    candidates = (best_groups.unsqueeze(2) * KNN_GROUP_COLUMNS + torch.arange(KNN_GROUP_COLUMNS)).view(n_rows, -1)
    best = torch.topk(torch.gather(similarity, 1, candidates), k, dim=1).indices
    return torch.gather(candidates, 1, best)


def uniqueness(embeddings: np.ndarray) -> np.ndarray:
    """Rate how far each sample lies from its nearest neighbours, scaled to [0, 1]. High means an outlier.

    fiftyone-brain 0.25 ``uniqueness.py`` with its sklearn backend: cosine
    distances on mean-centred embeddings, a weighted mean with weights
    0.6/0.3/0.1, divided by the maximum over the samples. Brain queries K + 1
    = 4 neighbours and drops the first, expecting it to be the sample itself;
    but its index already excludes the sample, so the weights fall on the
    2nd, 3rd and 4th nearest *other* samples. We reproduce that, which makes
    a pair of near-duplicates count as unique when the pair is isolated.

    NOTE: this equals Brain to float precision when Brain precomputes the
    full distance matrix (up to 15,000 samples). Above that, Brain switches to
    Euclidean distances between unit vectors, sqrt(2 * cosine distance),
    so its numbers differ from ours, which stay exact cosine at any size.
    """
    n_weights = len(BRAIN_UNIQUENESS_WEIGHTS)
    n_rows = len(embeddings)
    if n_rows <= n_weights:
        # Brain returns 1 for every sample when there are too few for the neighbour search.
        return np.ones(n_rows)
    distances = neighbour_cosine_distances(embeddings, n_weights + 1)[:, 1:]
    weighted = (distances * np.asarray(BRAIN_UNIQUENESS_WEIGHTS)).mean(axis=1)
    maximum = weighted.max()
    return weighted / maximum if maximum > 0 else np.zeros(n_rows)


def representativeness(embeddings: np.ndarray, *, n_clusters: int, seed: int = BRAIN_KMEANS_SEED
                       ) -> tuple[np.ndarray, np.ndarray]:
    """Rate how close each sample is to the centre of its KMeans cluster, in [0, 1]. High means typical.

    Returns (representativeness, brain_representativeness). Like
    fiftyone-brain 0.25 ``representativeness.py`` (method "cluster-center"),
    we fit ``KMeans(n_clusters, random_state=1234)`` on the raw embeddings and
    take each sample's Euclidean distance to its cluster centre, divided by
    the largest such distance in its cluster. Brain 0.25 returns that
    normalised distance as is, so its outliers score highest (1.0 for the
    farthest sample of each cluster), although its own algorithm comment
    says cluster centres should rank highest. We
    return ``1 - brain_representativeness``: 1 at a cluster centre, 0 for the
    farthest sample of each cluster.
    """
    from sklearn.cluster import KMeans

    n_clusters = min(n_clusters, len(embeddings))
    clusterer = KMeans(n_clusters=n_clusters, random_state=seed).fit(embeddings)
    distances = np.linalg.norm(embeddings - clusterer.cluster_centers_[clusterer.labels_], axis=1)
    largest = np.zeros(n_clusters)
    np.maximum.at(largest, clusterer.labels_, distances)
    scale = largest[clusterer.labels_]
    brain = np.divide(distances, scale, out=np.zeros_like(distances, dtype=np.float64), where=scale > 0)
    return 1.0 - brain, brain


# The stage ------------------------------------------------------------------------

def run_score(context: StageContext) -> dict:
    """Compute every score for both splits and write the arrays, scores.csv and histograms.png."""
    config, reporter = context.config, context.reporter
    arrays = load_embed(context.workspace.root, mmap=False)
    labels, splits = arrays["labels"], arrays["splits"]
    logits = score_logits(arrays["logits"], arrays["oof_logits"])
    if not np.isfinite(arrays["oof_logits"][splits == "train"]).all():
        reporter.warn("no out-of-fold logits (train.folds = 0): training samples are scored by the model "
                      "that saw them, so their scores and label issues are optimistic")

    started = time.perf_counter()
    timings: dict[str, float] = {}
    scores: dict[str, np.ndarray] = {}
    n = len(labels)
    for name in ("uniqueness", "representativeness"):
        scores[name] = np.zeros(n)
    label_issue_mask = np.zeros(n, dtype=bool)

    step = time.perf_counter()
    scores["hardness"] = hardness(logits)
    scores["mistakenness"] = mistakenness(logits, labels)
    scores["margin"] = margin(logits, labels)
    scores["self_confidence"] = self_confidence(logits, labels)
    timings["logit_scores"] = time.perf_counter() - step

    timings["uniqueness"] = timings["representativeness"] = timings["label_issues"] = 0.0
    for split in ("train", "test"):
        split_mask = splits == split
        if not split_mask.any():
            continue
        embeddings = arrays["embeddings"][split_mask]

        step = time.perf_counter()
        scores["uniqueness"][split_mask] = uniqueness(embeddings)
        timings["uniqueness"] += time.perf_counter() - step

        step = time.perf_counter()
        ours, _ = representativeness(embeddings, n_clusters=config.score.representativeness_clusters)
        scores["representativeness"][split_mask] = ours
        timings["representativeness"] += time.perf_counter() - step

        step = time.perf_counter()
        label_issue_mask[split_mask] = label_issues(logits[split_mask], labels[split_mask],
                                                    filter_by=config.score.label_issue_filter_by)
        timings["label_issues"] += time.perf_counter() - step
    seconds = time.perf_counter() - started

    for name in SCORE_NAMES:
        save_npy(context.out_dir / f"{name}.npy", scores[name].astype(np.float32))
    save_npy(context.out_dir / "label_issue.npy", label_issue_mask)
    scores = {name: scores[name].astype(np.float32) for name in SCORE_NAMES}
    write_scores_csv(context.out_dir / "scores.csv", arrays, scores, label_issue_mask)
    plot_histograms(context.out_dir / "histograms.png", scores, splits)
    reporter.info(f"scores of {n:,} samples in {seconds:.1f} s ("
                  + ", ".join(f"{name} {value:.1f} s" for name, value in timings.items()) + "); "
                  f"{int(label_issue_mask.sum()):,} label issues")
    reporter.info(f"histograms: {context.workspace.stage_dir('score') / 'histograms.png'}")
    return {"n_samples": n, "n_label_issues": int(label_issue_mask.sum()),
            "n_label_issues_train": int(label_issue_mask[splits == "train"].sum()),
            "n_label_issues_test": int(label_issue_mask[splits == "test"].sum()),
            "seconds_metrics": round(seconds, 2),
            "seconds_by_metric": {name: round(value, 2) for name, value in timings.items()}}


def score_columns(arrays: dict[str, np.ndarray], scores: dict[str, np.ndarray],
                  label_issue_mask: np.ndarray) -> dict[str, np.ndarray]:
    """Return the per-sample table of scores.csv as named columns, in row order."""
    columns = {"sample_id": arrays["sample_ids"], "split": arrays["splits"], "label": arrays["labels"],
               "prediction": arrays["predictions"], "confidence": arrays["confidence"]}
    columns |= {name: scores[name] for name in SCORE_NAMES}
    columns["label_issue"] = label_issue_mask
    return columns


def write_scores_csv(path: Path, arrays: dict[str, np.ndarray], scores: dict[str, np.ndarray],
                     label_issue_mask: np.ndarray, extra: dict[str, np.ndarray] | None = None,
                     order: np.ndarray | None = None) -> None:
    """Write one CSV row per sample (in ``order`` if given), floats with 6 significant digits."""
    columns = score_columns(arrays, scores, label_issue_mask) | (extra or {})
    write_csv(path, columns, order)


def write_csv(path: Path, columns: dict[str, np.ndarray], order: np.ndarray | None = None) -> None:
    import pandas as pd

    frame = pd.DataFrame({name: np.asarray(values) for name, values in columns.items()})
    if order is not None:
        frame = frame.iloc[order]
    atomic_write_text(path, frame.to_csv(index=False, float_format="%.6g", lineterminator="\n"))


def plot_histograms(path: Path, scores: dict[str, np.ndarray], splits: np.ndarray) -> None:
    """Draw one histogram per score, training and test samples overlaid, on a log count axis."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes_grid = plt.subplots(2, 3, figsize=(13, 7), dpi=110)
    for axes, name in zip(axes_grid.flat, SCORE_NAMES):
        values = scores[name]
        bins = np.linspace(float(values.min()), float(values.max()) or 1.0, 60)
        for split, colour in (("train", "tab:blue"), ("test", "tab:orange")):
            split_values = values[splits == split]
            if len(split_values):
                axes.hist(split_values, bins=bins, color=colour, alpha=0.6, label=f"{split} ({len(split_values):,})")
        axes.set_yscale("log")
        axes.set_title(name)
        axes.legend(fontsize=8)
    figure.suptitle("Score histograms (count on a log scale)")
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)


def load_scores(workspace_root: Path) -> dict[str, np.ndarray]:
    """Load the score stage's arrays by name: each of SCORE_NAMES and ``label_issue``."""
    folder = Path(workspace_root) / "score"
    loaded = {name: np.load(folder / f"{name}.npy") for name in SCORE_NAMES}
    loaded["label_issue"] = np.load(folder / "label_issue.npy")
    return loaded
