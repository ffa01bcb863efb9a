"""Benchmark the whole chain on MNIST and write one report (JSON and Markdown).

Parts (``--parts``, all by default):

* ``chain``: three ``mnist-curate all`` runs in a fresh workspace. The cold
  run reports wall time and peak RSS of the process tree per stage (mongod
  left out) and training samples/s. The warm run has everything cached.
  The third runs after one candidate threshold changed (``--knob``), so it
  reruns only what depends on it. Each is a separate process, as a user runs it.
* ``scores``: our four Brain scores against ``fiftyone.brain`` on the first
  ``--brain-subset`` training rows of the cold run's arrays (see
  ``bench_scores.py``), plus ours on every row.
* ``train``: our training loop (``mnist_curate.train.fit``) against a
  torchvision ``DataLoader`` with per-sample PIL transforms (see
  ``bench_train.py``).

Usage, from the repository root (full MNIST takes about 6 minutes on 2 idle cores)::

    python tests/benchmarks/bench_chain.py --data-dir ../shared/data/mnist --out bench-report

writes ``bench-report/report.json`` and ``bench-report/report.md``. The
smoke test ``tests/test_benchmarks.py`` runs it on a small ``--limit``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))

REPO_ROOT = Path(__file__).resolve().parents[2]
PARTS = ("chain", "scores", "train")
STAGE_LINE = re.compile(r"^(\w+): ")


class StageMonitor:
    """Sample the RSS of a process tree (mongod left out) and note when each stage's first log line appears."""

    def __init__(self, process: subprocess.Popen, stage_names: list[str], interval_s: float = 0.1):
        self.process, self.stage_names, self.interval_s = process, stage_names, interval_s
        self.samples: list[tuple[float, int]] = []  # (seconds since start, bytes)
        self.stage_starts: dict[str, float] = {}
        self.stderr_lines: list[str] = []
        self.started = time.perf_counter()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._poll, daemon=True),
                         threading.Thread(target=self._read_stderr, daemon=True)]

    def __enter__(self) -> "StageMonitor":
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join()

    def _poll(self) -> None:
        while not self._stop.is_set():
            try:
                root = psutil.Process(self.process.pid)
                total = 0
                for process in [root, *root.children(recursive=True)]:
                    try:
                        if process.name() != "mongod":
                            total += process.memory_info().rss
                    except psutil.Error:
                        continue
            except psutil.Error:
                return
            self.samples.append((time.perf_counter() - self.started, total))
            time.sleep(self.interval_s)

    def _read_stderr(self) -> None:
        for line in self.process.stderr:
            self.stderr_lines.append(line)
            match = STAGE_LINE.match(line)
            if match and match.group(1) in self.stage_names and match.group(1) not in self.stage_starts:
                self.stage_starts[match.group(1)] = time.perf_counter() - self.started

    def peak_mb_by_stage(self) -> dict[str, int]:
        """Return the peak RSS in MiB of each stage, from its first log line to the next stage's."""
        starts = sorted(self.stage_starts.items(), key=lambda item: item[1])
        peaks = {}
        for i, (name, start) in enumerate(starts):
            stop = starts[i + 1][1] if i + 1 < len(starts) else float("inf")
            # The last sample before the start counts too, so that a stage shorter than the interval has a figure.
            before = [rss for t, rss in self.samples if t < start][-1:]
            in_stage = before + [rss for t, rss in self.samples if start <= t < stop]
            peaks[name] = round(max(in_stage, default=0) / 2**20)
        return peaks


def run_cli(args: list[str], env: dict[str, str], stage_names: list[str]) -> dict:
    """Run one mnist-curate command; return its wall time, peak RSS (total and per stage) and JSON output."""
    started = time.perf_counter()
    process = subprocess.Popen([sys.executable, "-m", "mnist_curate", *args], env=env, cwd=REPO_ROOT,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    with StageMonitor(process, stage_names) as monitor:
        stdout = process.stdout.read()
        process.wait()
    wall_s = time.perf_counter() - started
    command = "mnist-curate " + " ".join(args)
    if process.returncode != 0:
        raise SystemExit(f"{command} failed with exit code {process.returncode}:\n"
                         + "".join(monitor.stderr_lines)[-3000:])
    return {"command": command, "wall_s": round(wall_s, 2),
            "peak_rss_mb": round(max((rss for _, rss in monitor.samples), default=0) / 2**20),
            "peak_rss_mb_by_stage": monitor.peak_mb_by_stage(), "summary": json.loads(stdout)}


def bench_chain(*, data_dir: Path, workdir: Path, limit: int | None, knob: str, train_options: list[str]) -> dict:
    """Run cold, warm and one-knob-change `all` in a fresh workspace; return their figures."""
    from mnist_curate.pipeline import STAGES

    workspace, export = workdir / "ws", workdir / "export"
    for folder in (workspace, export):
        shutil.rmtree(folder, ignore_errors=True)
    env = os.environ | {"FIFTYONE_DO_NOT_TRACK": "true", "PYTHONPATH": str(REPO_ROOT)}
    common = ["all", "-w", str(workspace), "--out", str(export), "--json"]
    stage_names = list(STAGES)

    cold = run_cli([*common, "--data-dir", str(data_dir), *(["--limit", str(limit)] if limit else []),
                    *train_options], env, stage_names)
    warm = run_cli(common, env, stage_names)

    key, _, value = knob.partition("=")
    config = yaml.safe_load((workspace / "config.yaml").read_text())
    node = config
    *parents, leaf = key.split(".")
    for part in parents:
        node = node[part]
    node[leaf] = yaml.safe_load(value)
    changed_config = workdir / "changed-config.yaml"
    changed_config.write_text(yaml.safe_dump(config))
    change = run_cli([*common, "--config", str(changed_config), "--overwrite"], env, stage_names)

    train_figures = json.loads((workspace / "stages" / "train.json").read_text())["figures"]
    return {
        "workspace": str(workspace),
        "cold": _chain_run(cold),
        "warm": _chain_run(warm),
        "knob": knob,
        "knob_change": _chain_run(change),
        "train_samples_per_s": train_figures.get("samples_per_s"),
        "test_accuracy": train_figures.get("test_accuracy"),
        "oof_accuracy": train_figures.get("oof_accuracy"),
        "candidates": cold["summary"].get("candidates"),
        "idk": cold["summary"].get("idk"),
    }


def _chain_run(result: dict) -> dict:
    summary = result["summary"]
    stages = [{"stage": s["stage"], "ran": s["ran"], "seconds": s["seconds"],
               "peak_rss_mb": result["peak_rss_mb_by_stage"].get(s["stage"])} for s in summary["stages"]]
    return {"command": result["command"], "wall_s": result["wall_s"], "all_s": summary["seconds"],
            "peak_rss_mb": result["peak_rss_mb"], "stages": stages}


def bench_scores_part(workspace: Path, *, subset: int, n_clusters: int) -> dict:
    import bench_scores

    return bench_scores.run(workspace, subset=subset, split="train", full=True, n_clusters=n_clusters)


def bench_train_part(data_dir: Path, *, limit: int | None, batch_size: int, steps: int, repeats: int) -> dict:
    import bench_train

    return bench_train.compare(data_dir, limit=limit, batch_size=batch_size, steps=steps, repeats=repeats)


def machine() -> dict:
    model = ""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        model = next((line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines()
                      if line.startswith("model name")), "")
    import torch

    return {"cpu": model or platform.processor(), "cpus": os.cpu_count(), "gpu": torch.cuda.is_available(),
            "memory_gb": round(psutil.virtual_memory().total / 2**30, 1), "python": platform.python_version(),
            "torch": torch.__version__, "load_average_at_start": [round(x, 2) for x in os.getloadavg()]}


# Markdown ----------------------------------------------------------------------------

def markdown(report: dict) -> str:
    lines = ["# mnist-curate benchmark", ""]
    m = report["machine"]
    data = "full MNIST" if not report["limit"] else f"--limit {report['limit']} per split"
    lines += [f"Machine: {m['cpu']}, {m['cpus']} CPUs, {'a GPU' if m['gpu'] else 'no GPU'}, {m['memory_gb']} GB; "
              f"torch {m['torch']}; load average {m['load_average_at_start']} at start, "
              f"{m.get('load_average_at_end')} at end.",
              f"Data: {data}. "
              f"Command: `{report['command']}`", ""]
    chain = report.get("chain")
    if chain:
        lines += ["## The chain", "",
                  "| stage | cold | peak RSS cold (MiB) | warm | after " + f"`{chain['knob']}` |",
                  "| --- | ---: | ---: | ---: | ---: |"]
        runs = [chain["cold"], chain["warm"], chain["knob_change"]]
        for i, stage in enumerate(chain["cold"]["stages"]):
            cells = [_stage_time(run["stages"][i]) for run in runs]
            lines.append(f"| {stage['stage']} | {cells[0]} | {stage['peak_rss_mb']} | {cells[1]} | {cells[2]} |")
        lines.append("| **`all`, whole process** | **" + " | ".join(
            [f"{chain['cold']['wall_s']:.1f} s** | **{chain['cold']['peak_rss_mb']}**",
             f"**{chain['warm']['wall_s']:.1f} s**", f"**{chain['knob_change']['wall_s']:.1f} s**"]) + " |")
        lines += ["", f"Training: {chain['train_samples_per_s']:,.0f} samples/s; test accuracy "
                      f"{chain['test_accuracy']:.2%}; candidates {chain['candidates']}; IDK {chain['idk']}.", ""]
    scores = report.get("scores")
    if scores:
        lines += [f"## Score stage against FiftyOne Brain ({report['brain_subset']:,} training rows)", "",
                  "| score | ours (s) | Brain (s) | speed-up | max abs difference |", "| --- | ---: | ---: | ---: | ---: |"]
        for name, row in scores.items():
            if name == "full":
                continue
            lines.append(f"| {name} | {row['ours_s']:.3f} | {row['brain_s']:.2f} | {row['speedup']:,.0f}x "
                         f"| {row['max_difference']:.1e} |")
        ours = sum(row["ours_s"] for name, row in scores.items() if name != "full")
        brain = sum(row["brain_s"] for name, row in scores.items() if name != "full")
        lines += [f"| total | {ours:.3f} | {brain:.2f} | {brain / ours:,.0f}x | |", ""]
        if "full" in scores:
            lines += ["Ours on every row (uniqueness and representativeness within each split): "
                      + ", ".join(f"{name} {value:.2f} s" for name, value in scores["full"].items()) + ".", ""]
    train = report.get("train")
    if train:
        lines += ["## Training loop against a DataLoader with per-sample transforms", "",
                  f"{train['samples']:,} samples per timing, batch {train['batch_size']}, median of "
                  f"{train['repeats']}, {train['threads']} torch threads: ours "
                  f"{train['ours_samples_per_s']:,} samples/s, DataLoader {train['dataloader_samples_per_s']:,} "
                  f"samples/s, ratio {train['ratio']}x.", ""]
    return "\n".join(lines)


def _stage_time(stage: dict) -> str:
    return f"{stage['seconds']:.1f} s" + ("" if stage["ran"] else " (cached)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, required=True, help="folder with the MNIST files")
    parser.add_argument("--out", type=Path, required=True, help="folder for report.json and report.md")
    parser.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated subset of {', '.join(PARTS)}")
    parser.add_argument("--limit", type=int, help="stratified subset per split, for smoke runs")
    parser.add_argument("--workdir", type=Path, help="where the workspace and export go (default: a temp folder)")
    parser.add_argument("--knob", default="candidates.top_uniqueness=0.002",
                        help="the one-knob change of the third run, as KEY.PATH=VALUE")
    parser.add_argument("--train-option", action="append", default=[], dest="train_options",
                        help="extra option for the cold `all`, e.g. --train-option=--epochs=1 (repeatable)")
    parser.add_argument("--brain-subset", type=int, default=10_000, help="training rows for the Brain comparison")
    parser.add_argument("--train-steps", type=int, default=200, help="training steps per timing of the train part")
    parser.add_argument("--train-repeats", type=int, default=3)
    args = parser.parse_args()
    parts = [part for part in args.parts.split(",") if part]
    unknown = set(parts) - set(PARTS)
    if unknown:
        parser.error(f"unknown part(s) {', '.join(sorted(unknown))}; expected some of {', '.join(PARTS)}")
    if "scores" in parts and "chain" not in parts:
        parser.error("the scores part compares on the chain's arrays, so it needs the chain part too")

    sys.path.insert(0, str(REPO_ROOT))
    from mnist_curate.config import ScoreConfig

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="mnist-curate-bench-"))
    args.out.mkdir(parents=True, exist_ok=True)
    report: dict = {"command": "python " + " ".join([str(Path(sys.argv[0])), *sys.argv[1:]]),
                    "machine": machine(), "limit": args.limit, "parts": parts}
    if "chain" in parts:
        report["chain"] = bench_chain(data_dir=args.data_dir, workdir=workdir, limit=args.limit, knob=args.knob,
                                      train_options=args.train_options)
    if "scores" in parts:
        report["brain_subset"] = args.brain_subset
        report["scores"] = bench_scores_part(Path(report["chain"]["workspace"]), subset=args.brain_subset,
                                             n_clusters=ScoreConfig().representativeness_clusters)
    if "train" in parts:
        report["train"] = bench_train_part(args.data_dir, limit=args.limit, batch_size=256,
                                           steps=args.train_steps, repeats=args.train_repeats)
    report["machine"]["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]

    (args.out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    text = markdown(report)
    (args.out / "report.md").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
