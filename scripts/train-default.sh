#!/usr/bin/env bash
# Reproduces the bundled default model models/fmnist-vit-tiny (npm run train:default):
# 30 minutes of I-JEPA on Fashion-MNIST (all cores, onnxruntime engine, recipe `ijepa`, validation
# split held out), export, a linear-probe head (READOUT, chosen on validation by the recipe study)
# on the training split, the validation and test evaluations, and the figures.
# Needs: apt-get install -y dataset-fashion-mnist
set -euo pipefail
DATA=${DATA:-/usr/share/datasets/fashion-mnist}
RUN=${RUN:-runs/fmnist-default}
MODEL=${MODEL:-models/fmnist-vit-tiny}
BUDGET=${BUDGET:-30}
READOUT=${READOUT:-grid8}
THREADS=${THREADS:-$(nproc)}
ijepa() { node bin/ijepa.js "$@"; }

# SKIP_TRAIN=1 packages a finished run instead (RUN=its directory).
if [ "${SKIP_TRAIN:-0}" != 1 ]; then
  ijepa train --data "$DATA" --preset vit-tiny --recipe ijepa --holdout --time-budget "$BUDGET" --threads "$THREADS" --out "$RUN" --plain
fi
ijepa export --run "$RUN" --out "$MODEL" --id "$(basename "$MODEL")"
# Recipe decisions (readout included) are made on the validation split ...
mkdir -p "$RUN/validation"
ijepa eval --model "$MODEL" --data "$DATA" --validation --readout mean grid2 grid4 grid8 --limit 10000 --no-knn --threads "$THREADS" --out "$RUN/validation"
# ... the test split is read only here, for the reported numbers.
ijepa probe --model "$MODEL" --data "$DATA" --readout "$READOUT"
ijepa eval --model "$MODEL" --data "$DATA" --readout mean grid2 grid4 grid8 --limit 10000 --threads "$THREADS"
ijepa figures --run "$RUN" --data "$DATA" --out docs/figures
