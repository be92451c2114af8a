#!/usr/bin/env bash
# Reproduces the bundled natural-image model models/cifar10-vit-tiny (npm run train:cifar):
# 30 minutes of the default recipe on CIFAR-10's training images (all cores, onnxruntime engine,
# validation split held out), export, a linear-probe head on the mean-pooled embedding fitted on
# the training split, and the evaluation on the validation split (CIFAR-10 class folders carry no
# test split; pre-training never saw the validation images).
# DATA: CIFAR-10 training images as class folders (e.g. the JPEG tarball unpacked).
set -euo pipefail
: "${DATA:?set DATA to CIFAR-10 training images in class folders}"
RUN=${RUN:-runs/cifar10-default}
MODEL=${MODEL:-models/cifar10-vit-tiny}
BUDGET=${BUDGET:-30}
THREADS=${THREADS:-$(nproc)}
ijepa() { node bin/ijepa.js "$@"; }

# SKIP_TRAIN=1 packages a finished run instead (RUN=its directory).
if [ "${SKIP_TRAIN:-0}" != 1 ]; then
  ijepa train --data "$DATA" --preset vit-tiny --recipe default --holdout --time-budget "$BUDGET" --threads "$THREADS" --out "$RUN" --plain
fi
ijepa export --run "$RUN" --out "$MODEL" --id "$(basename "$MODEL")"
ijepa probe --model "$MODEL" --data "$DATA" --readout mean --l2 auto
ijepa eval --model "$MODEL" --data "$DATA" --validation --limit 10000 --threads "$THREADS"
