#!/bin/sh
# The shipped weights/gan/emoji64 run on the CPU, resumable. Its full training state (Adam moments,
# random stream) lives in $BRUSHPEN_HOME/runs/emoji64/checkpoint; on a machine without it the run
# starts from the store's committed G, G_ema and D with fresh optimizer state (and says so).
# The store model is written to $BRUSHPEN_HOME/runs/emoji64/model: promote it into weights/ only
# once it measures better (scripts/gpu/README.md, "Back on the CPU").
# Run in the background:  nohup scripts/train_emoji64.sh > emoji64.log 2>&1 &
set -e
cd "$(dirname "$0")/.."
HOME_DIR="${BRUSHPEN_HOME:-$HOME/.cache/brushpen}"
DATA="$HOME_DIR/data/emoji64"
RUN="$HOME_DIR/runs/emoji64"
[ -f "$DATA/dataset.json" ] || .venv/bin/brushpen data emoji --out "$DATA"
# Seed the run from the store when it has none, or when the store's is further on (a GPU run was
# promoted since): the run's own optimizer state is then older than its weights, so it starts fresh.
nimg() { .venv/bin/python -c "import json, sys; print(json.load(open(sys.argv[1]))['scalars']['nimg'])" "$1" 2>/dev/null || echo -1; }
if [ "$(nimg weights/gan/emoji64/checkpoint/state.json)" -gt "$(nimg "$RUN/checkpoint/state.json")" ]; then
  rm -rf "$RUN/checkpoint" && mkdir -p "$RUN/checkpoint"
  cp weights/gan/emoji64/checkpoint/*.safetensors weights/gan/emoji64/checkpoint/state.json "$RUN/checkpoint/"
fi
exec .venv/bin/python -u -m brushpen.cli.main gan train --data "$DATA" --out "$RUN/model" \
  --checkpoint-dir "$RUN/checkpoint" --cond --resolution 64 --kimg 2000 --batch 32 \
  --channels 256,192,96,48,24 --snap 4 --tick 1 --threads "${THREADS:-1}" --resume
