"""The embed stage: embeddings, logits and 2-D maps of every sample from the final model.

Rows are the training samples in sample-id order, then the test samples
(``n = n_train + n_test``); every array below shares that order.

Outputs (in ``WORKSPACE/embed/``), all plain ``.npy`` files that
``np.load(path, mmap_mode="r")`` can map:

* ``sample_ids.npy``, ``splits.npy``: (n,) str.
* ``labels.npy``: (n,) int64 given labels.
* ``embeddings.npy``: (n, 84) float32 fc2 activations of the final model.
* ``logits.npy``: (n, 10) float32 logits of the final model.
* ``oof_logits.npy``: (n, 10) float32 out-of-fold logits of training rows;
  NaN for test rows, and for every row when ``train.folds = 0``.
* ``predictions.npy`` (n,) int64 and ``confidence.npy`` (n,) float32: argmax
  and maximum softmax probability of the *score logits* (see
  ``score_logits``).
* ``pca.npy``, ``umap.npy``: (n, 2) float32 maps, and ``pca.png``, ``umap.png``.

The maps are fitted on both splits jointly, so that a test digit and the
training digits it resembles land at the same place in one coordinate
system, and the review can show both splits in one plot.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mnist_curate.config import EmbedConfig
from mnist_curate.data import MnistData
from mnist_curate.errors import CurateError
from mnist_curate.model import images_to_tensor, predict
from mnist_curate.pipeline import StageContext
from mnist_curate.workspace import save_npy

EMBED_ARRAYS = ("sample_ids", "splits", "labels", "embeddings", "logits", "oof_logits", "predictions",
                "confidence", "pca", "umap")


def run_embed(context: StageContext) -> dict:
    """Embed both splits with the final model, fit the PCA and UMAP maps and draw them."""
    from mnist_curate.train import configure_torch, load_model

    config, reporter, data = context.config, context.reporter, context.data
    configure_torch(config)
    train_dir = context.upstream_dir("train")
    model = load_model(train_dir / "model.pt", context.device)

    logits_parts, embedding_parts = [], []
    for split in (data.train, data.test):
        inputs = images_to_tensor(split.images, context.device)
        logits, embeddings = predict(model, inputs, batch_size=config.train.eval_batch_size, with_embeddings=True)
        logits_parts.append(logits)
        embedding_parts.append(embeddings)
    logits = np.concatenate(logits_parts).astype(np.float32)
    embeddings = np.concatenate(embedding_parts).astype(np.float32)

    oof_train = np.load(train_dir / "oof_logits.npy")
    if oof_train.shape != (len(data.train), logits.shape[1]):
        raise CurateError(f"{train_dir / 'oof_logits.npy'} has shape {oof_train.shape}, expected "
                          f"({len(data.train)}, {logits.shape[1]}); rerun `mnist-curate train --force`")
    oof_logits = np.full_like(logits, np.nan)
    oof_logits[:len(data.train)] = oof_train

    arrays = sample_arrays(data)
    arrays |= {"embeddings": embeddings, "logits": logits, "oof_logits": oof_logits}
    probs = softmax(score_logits(logits, oof_logits))
    arrays["predictions"] = probs.argmax(axis=1).astype(np.int64)
    arrays["confidence"] = probs.max(axis=1).astype(np.float32)

    reporter.info(f"embedded {len(embeddings):,} samples; fitting the PCA and UMAP maps on both splits jointly")
    arrays["pca"] = fit_pca(embeddings)
    arrays["umap"] = fit_umap(embeddings, config.embed, seed=config.seed)
    for name in EMBED_ARRAYS:
        save_npy(context.out_dir / f"{name}.npy", arrays[name])

    misclassified_mask = arrays["predictions"] != arrays["labels"]
    for name in ("pca", "umap"):
        plot_map(context.out_dir / f"{name}.png", arrays[name], arrays["labels"], misclassified_mask,
                 title=f"{name.upper()} of the LeNet-5 embeddings ({len(embeddings):,} samples, both splits)")
        reporter.info(f"map: {context.workspace.stage_dir('embed') / f'{name}.png'}")

    return {"n_samples": len(embeddings), "n_misclassified": int(misclassified_mask.sum()),
            "score_logits": "out-of-fold for train" if np.isfinite(oof_train).all() else "final model"}


def sample_arrays(data: MnistData) -> dict[str, np.ndarray]:
    """Return sample_ids, splits and labels in row order: training samples, then test samples."""
    return {
        "sample_ids": np.concatenate([data.train.sample_ids, data.test.sample_ids]),
        "splits": np.array(["train"] * len(data.train) + ["test"] * len(data.test)),
        "labels": np.concatenate([data.train.labels, data.test.labels]).astype(np.int64),
    }


def score_logits(logits: np.ndarray, oof_logits: np.ndarray) -> np.ndarray:
    """Return the logits that every score uses: out-of-fold where present, else the final model's.

    A model is confident on the samples it was trained on, so training rows
    use their out-of-fold logits. Test rows (and training rows when
    ``train.folds = 0``) have NaN out-of-fold logits and fall back to the
    final model, which never saw the test split.
    """
    has_oof_mask = np.isfinite(oof_logits).all(axis=1)
    return np.where(has_oof_mask[:, None], oof_logits, logits)


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax in float64, shifted by the row maximum so that exp cannot overflow."""
    shifted = np.asarray(logits, dtype=np.float64)
    shifted = shifted - shifted.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=1, keepdims=True)


def fit_pca(embeddings: np.ndarray) -> np.ndarray:
    from sklearn.decomposition import PCA

    # The full SVD solver is deterministic, unlike the randomized one.
    return PCA(n_components=2, svd_solver="full").fit_transform(embeddings).astype(np.float32)


def fit_umap(embeddings: np.ndarray, settings: EmbedConfig, *, seed: int) -> np.ndarray:
    """Fit a seeded UMAP map; a fixed random_state makes umap-learn run single-threaded and repeatable."""
    import warnings

    import umap

    reducer = umap.UMAP(n_components=2, n_neighbors=min(settings.umap_n_neighbors, len(embeddings) - 1),
                        min_dist=settings.umap_min_dist, metric=settings.umap_metric, random_state=seed)
    with warnings.catch_warnings():
        # umap-learn warns that a seed turns off parallelism; repeatable maps are the point here.
        warnings.filterwarnings("ignore", message="n_jobs value", category=UserWarning)
        return reducer.fit_transform(embeddings).astype(np.float32)


def plot_map(path: Path, coordinates: np.ndarray, labels: np.ndarray, misclassified_mask: np.ndarray, *,
             title: str) -> None:
    """Draw a 2-D map coloured by given label, with misclassified samples as black crosses."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(9, 8), dpi=120)
    point_size = max(0.2, min(8.0, 20_000 / len(coordinates)))
    scatter = axes.scatter(coordinates[:, 0], coordinates[:, 1], c=labels, cmap="tab10", vmin=-0.5, vmax=9.5,
                           s=point_size, linewidths=0, rasterized=True)
    axes.scatter(coordinates[misclassified_mask, 0], coordinates[misclassified_mask, 1], marker="x", c="black",
                 s=12, linewidths=0.6, label=f"misclassified ({int(misclassified_mask.sum()):,})")
    figure.colorbar(scatter, ax=axes, ticks=range(10), label="given label")
    axes.legend(loc="upper right")
    axes.set_title(title)
    axes.set_xticks([])
    axes.set_yticks([])
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)


def load_embed(workspace_root: Path, *, mmap: bool = True) -> dict[str, np.ndarray]:
    """Load the embed stage's arrays by name (memory-mapped unless ``mmap`` is False)."""
    folder = Path(workspace_root) / "embed"
    return {name: np.load(folder / f"{name}.npy", mmap_mode="r" if mmap else None) for name in EMBED_ARRAYS}
