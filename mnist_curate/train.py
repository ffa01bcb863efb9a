"""The train stage: a final LeNet-5 on all training samples, plus out-of-fold models.

A model scores the samples it was trained on as easy, which hides exactly the
label errors that curation looks for. So with ``train.folds = K`` the training
split is cut into K stratified folds, and each fold is scored by a model
trained on the other K - 1. The final model, trained on every training
sample, scores the test split and produces the embeddings.

Outputs (in ``WORKSPACE/train/``):

* ``model.pt``: the final model's state_dict.
* ``oof_logits.npy``: (n_train, 10) float32 out-of-fold logits, in the row
  order of the training sample ids; NaN when folds = 0.
* ``fold_ids.npy``: (n_train,) int8 fold of each training sample (-1 when folds = 0).
* ``history.json``: per-epoch loss, accuracy and throughput of every model.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from mnist_curate.config import Config, TrainConfig
from mnist_curate.model import LeNet5, images_to_tensor, predict, to_channels_last
from mnist_curate.pipeline import StageContext
from mnist_curate.ui import Reporter
from mnist_curate.workspace import atomic_write_json, save_npy


@dataclass
class FitResult:
    model: LeNet5
    history: list[dict]
    n_samples_seen: int
    seconds: float


def configure_torch(config: Config) -> None:
    """Seed torch and fix the thread count, so that a CPU run is reproducible."""
    if config.num_threads:
        torch.set_num_threads(config.num_threads)
    torch.use_deterministic_algorithms(True, warn_only=True)


def assign_folds(labels: np.ndarray, n_folds: int, *, seed: int) -> np.ndarray:
    """Return a fold id per sample, with each class spread evenly over the folds."""
    rng = np.random.default_rng(seed)
    fold_ids = np.empty(len(labels), dtype=np.int8)
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        # Start each class at a different fold so that fold sizes stay balanced.
        fold_ids[members] = (np.arange(len(members)) + int(label)) % n_folds
    return fold_ids


def fit(inputs: torch.Tensor, targets: torch.Tensor, settings: TrainConfig, *, epochs: int, seed: int,
        description: str, reporter: Reporter, eval_inputs: torch.Tensor | None = None,
        eval_targets: np.ndarray | None = None) -> FitResult:
    """Train a fresh LeNet-5 with Adam and a one-cycle learning-rate schedule."""
    torch.manual_seed(seed)
    model = to_channels_last(LeNet5().to(inputs.device))
    optimizer = torch.optim.Adam(model.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)
    steps_per_epoch = -(-len(inputs) // settings.batch_size)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=settings.lr,
                                                    total_steps=epochs * steps_per_epoch)
    shuffler = torch.Generator().manual_seed(seed)

    history = []
    train_seconds = 0.0
    with reporter.progress() as progress:
        task = progress.add_task(description, total=epochs * len(inputs), status="")
        for epoch in range(1, epochs + 1):
            model.train()
            started = time.perf_counter()
            order = torch.randperm(len(inputs), generator=shuffler).to(inputs.device)
            loss_sum = torch.zeros((), device=inputs.device)
            n_correct = torch.zeros((), device=inputs.device, dtype=torch.long)
            for start in range(0, len(inputs), settings.batch_size):
                batch = order[start:start + settings.batch_size]
                logits = model(inputs[batch])
                loss = F.cross_entropy(logits, targets[batch])
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                scheduler.step()
                loss_sum += loss.detach() * len(batch)
                n_correct += (logits.detach().argmax(1) == targets[batch]).sum()
                progress.advance(task, len(batch))
            seconds = time.perf_counter() - started
            train_seconds += seconds

            entry = {"epoch": epoch, "loss": float(loss_sum) / len(inputs),
                     "accuracy": float(n_correct) / len(inputs), "samples_per_s": len(inputs) / seconds}
            if eval_inputs is not None and eval_targets is not None:
                eval_logits, _ = predict(model, eval_inputs, batch_size=settings.eval_batch_size)
                entry["eval_accuracy"] = float((eval_logits.argmax(1) == eval_targets).mean())
            history.append(entry)
            status = (f"loss {entry['loss']:.4f}  acc {entry['accuracy']:.4f}  "
                      f"{entry['samples_per_s']:,.0f} samples/s")
            progress.update(task, status=status)
            reporter.detail(f"{description} epoch {epoch}/{epochs}: {status}")
    return FitResult(model, history, epochs * len(inputs), train_seconds)


def run_train(context: StageContext) -> dict:
    """Train the out-of-fold models and the final model; return the stage's figures."""
    config, reporter = context.config, context.reporter
    settings = config.train
    data = context.data
    device = context.device
    configure_torch(config)
    reporter.info(f"data: {len(data.train):,} training and {len(data.test):,} test samples from {data.source}; "
                  f"device: {device}; threads: {torch.get_num_threads()}")

    inputs = images_to_tensor(data.train.images, device)
    targets = torch.from_numpy(data.train.labels).to(device)
    test_inputs = images_to_tensor(data.test.images, device)
    test_labels = data.test.labels
    histories: dict[str, list[dict]] = {}
    samples_seen, train_seconds = 0, 0.0

    oof_logits = np.full((len(data.train), 10), np.nan, dtype=np.float32)
    fold_ids = np.full(len(data.train), -1, dtype=np.int8)
    if settings.folds == 0:
        reporter.warn("train.folds = 0: training samples will be scored by the model that saw them, "
                      "so their hardness and mistakenness will be optimistic")
    else:
        fold_ids = assign_folds(data.train.labels, settings.folds, seed=config.seed)
        fold_epochs = settings.fold_epochs or settings.epochs
        for fold in range(settings.folds):
            held_out = torch.from_numpy(np.flatnonzero(fold_ids == fold)).to(device)
            kept = torch.from_numpy(np.flatnonzero(fold_ids != fold)).to(device)
            result = fit(inputs[kept], targets[kept], settings, epochs=fold_epochs, seed=config.seed + 1 + fold,
                         description=f"fold {fold + 1}/{settings.folds}", reporter=reporter)
            logits, _ = predict(result.model, inputs[held_out], batch_size=settings.eval_batch_size)
            oof_logits[held_out.cpu().numpy()] = logits
            histories[f"fold_{fold}"] = result.history
            samples_seen += result.n_samples_seen
            train_seconds += result.seconds

    final = fit(inputs, targets, settings, epochs=settings.epochs, seed=config.seed, description="final model",
                reporter=reporter, eval_inputs=test_inputs, eval_targets=test_labels)
    histories["final"] = final.history
    samples_seen += final.n_samples_seen
    train_seconds += final.seconds

    test_logits, _ = predict(final.model, test_inputs, batch_size=settings.eval_batch_size)
    test_accuracy = float((test_logits.argmax(1) == test_labels).mean())
    figures = {
        "test_accuracy": round(test_accuracy, 6),
        "n_train": len(data.train),
        "n_test": len(data.test),
        "folds": settings.folds,
        "samples_per_s": round(samples_seen / train_seconds, 1) if train_seconds else None,
        "device": device,
    }
    if settings.folds:
        figures["oof_accuracy"] = round(float((oof_logits.argmax(1) == data.train.labels).mean()), 6)

    torch.save(final.model.state_dict(), context.out_dir / "model.pt")
    save_npy(context.out_dir / "oof_logits.npy", oof_logits)
    save_npy(context.out_dir / "fold_ids.npy", fold_ids)
    atomic_write_json(context.out_dir / "history.json", histories)

    oof_text = f", out-of-fold accuracy {figures['oof_accuracy']:.2%}" if settings.folds else ""
    reporter.info(f"test accuracy {test_accuracy:.2%}{oof_text}, {figures['samples_per_s']:,.0f} training samples/s")
    return figures


def load_model(path, device: str = "cpu") -> LeNet5:
    """Load a final model saved by the train stage."""
    model = LeNet5()
    model.load_state_dict(torch.load(path, map_location=device, weights_only=True))
    return model.to(device).eval()
