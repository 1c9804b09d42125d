#!/bin/sh
# The shipped weights/gan/emoji64 run. Re-running it resumes from weights/gan/emoji64/checkpoint.
# Run in the background:  nohup scripts/train_emoji64.sh > emoji64.log 2>&1 &
set -e
cd "$(dirname "$0")/.."
DATA="${BRUSHPEN_HOME:-$HOME/.cache/brushpen}/data/emoji64"
[ -f "$DATA/dataset.json" ] || .venv/bin/brushpen data emoji --out "$DATA"
exec .venv/bin/python -u -m brushpen.cli.main gan train --data "$DATA" --out weights/gan/emoji64 --cond \
  --resolution 64 --kimg 2000 --batch 32 --channels 256,192,96,48,24 --snap 4 --tick 1 \
  --threads "${THREADS:-1}" --resume
