#!/usr/bin/env bash
# Rebuild the curated MNIST in CI from the reviewed decisions kept in git,
# then check that the export's counts agree with its manifest, its dataset
# card and the decision file.
#
#   examples/ci-curation.sh                       # full MNIST, default config
#   examples/ci-curation.sh --limit 2000 --epochs 1   # extra options go to `mnist-curate all`
#
# Relative paths are taken from the repository root, where the script runs.
#
# Environment (all optional):
#   MNIST_CURATE_DATA_DIR  folder with the four MNIST files (default ../shared/data/mnist)
#   DECISIONS              the reviewed decision file (default examples/decisions.yaml)
#   OUT                    export folder, kept as the CI artifact (default curated-mnist)
#   CURATION_WORKSPACE     workspace to use instead of a fresh temporary one
#   MNIST_CURATE           how to call the CLI (default mnist-curate)
#   PYTHON                 Python with mnist_curate installed, for the checks (default python3)
set -euo pipefail
cd "$(dirname "$0")/.."

export MNIST_CURATE_DATA_DIR="${MNIST_CURATE_DATA_DIR:-../shared/data/mnist}"
export FIFTYONE_DO_NOT_TRACK=true
DECISIONS="${DECISIONS:-examples/decisions.yaml}"
OUT="${OUT:-curated-mnist}"
MNIST_CURATE="${MNIST_CURATE:-mnist-curate}"
PYTHON="${PYTHON:-python3}"

scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
workspace="${CURATION_WORKSPACE:-$scratch/workspace}"

# 1. The whole chain on a fresh workspace, with the reviewed decisions as they are.
$MNIST_CURATE all --workspace "$workspace" --decisions "$DECISIONS" --out "$OUT" --overwrite --json "$@" \
    > "$scratch/summary.json"

# 2. Counts: PNG files per class folder = manifest = dataset card = summary, and
#    every IDK decision of a sample in the run is in an IDK folder.
"$PYTHON" - "$scratch/summary.json" "$OUT" "$DECISIONS" <<'PY'
import collections
import csv
import json
import sys
from pathlib import Path

from mnist_curate.decisions import read_decisions

summary = json.loads(Path(sys.argv[1]).read_text())
out = Path(sys.argv[2])
decisions = read_decisions(Path(sys.argv[3]))

with open(out / "manifest.csv", newline="") as handle:
    rows = list(csv.DictReader(handle))
manifest_counts = collections.Counter((row["split"], row["curated_label"]) for row in rows)
card = (out / "README.md").read_text()
problems = []
for split, counts in summary["export"]["class_counts"].items():
    for name, expected in counts.items():
        n_files = len(list((out / split / name).glob("*.png")))
        if not n_files == manifest_counts[(split, name)] == expected:
            problems.append(f"{split}/{name}: {n_files} PNG files, manifest {manifest_counts[(split, name)]}, "
                            f"summary {expected}")
    for name in counts:
        row = f"| {name} | " + " | ".join(f"{summary['export']['class_counts'][s][name]:,}"
                                          for s in summary["export"]["class_counts"]) + " |"
        if row not in card:
            problems.append(f"dataset card lacks the row {row!r}")

in_run = {row["sample_id"]: row for row in rows}
for sample_id, decision in decisions.items():
    if sample_id in in_run and decision.label != in_run[sample_id]["curated_label"]:
        problems.append(f"{sample_id}: decision {decision.label}, exported as {in_run[sample_id]['curated_label']}")

if problems:
    print("curation check failed:\n  " + "\n  ".join(problems), file=sys.stderr)
    sys.exit(1)
idk = summary["idk"]
print(f"curation check passed: {len(rows):,} images in {out}, IDK: "
      + ", ".join(f"{split} {n:,}" for split, n in idk.items()))
PY
