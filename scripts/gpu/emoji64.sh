#!/bin/bash
# One GPU run of emoji64, as the device tool runs it (README.md beside this file says how to call it).
#   bash scripts/gpu/emoji64.sh check          # < 1 min: wheels, CUDA, a few steps of each speed option
#   bash scripts/gpu/emoji64.sh train MINUTES  # train from .gpu/start for MINUTES of wall clock
#   bash scripts/gpu/emoji64.sh auto SECONDS   # check, then train with the fastest option that ran, all
#                                              # inside SECONDS of wall clock: one call, one machine start
# Everything it returns lies in $OUT: checkpoint/ (G, G_ema, D in fp32; Adam's second moments in
# bf16; rng; state.json) and stats.jsonl, 8 files, each under 16 MiB. A snapshot every SNAP_MINUTES
# replaces checkpoint/ atomically, so a run killed at the limit still returns its last one.
# Knobs (environment): BATCH (256), PRECISION (bf16), EXTRA (more `gan train` flags, e.g.
# "--channels-last --compile"), GAMMA (0.0256: R1 pinned at its batch-32 value), SNAP_MINUTES (2),
# PY (python3), CHECK_STEPS (40).
set -u
MODE=${1:-check}
MINUTES=${2:-8}
OUT=${OUT:?set OUT to the folder that comes back}
PY=${PY:-python3}
BATCH=${BATCH:-256}
PRECISION=${PRECISION:-bf16}
EXTRA=${EXTRA:-}
GAMMA=${GAMMA:-0.0256}
SNAP_MINUTES=${SNAP_MINUTES:-2}

$PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .gpu/wheels/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv 2>/dev/null || echo "nvidia-smi: none"
$PY -c "import torch, diffusers; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), 'diffusers', diffusers.__version__)"

train() {  # train CHECKPOINT_DIR [flags...]
  local ckpt=$1; shift
  $PY -m brushpen.cli.gan_cmd gan train --data .gpu/emoji64 --out /tmp/emoji64-store --checkpoint-dir "$ckpt" \
    --cond --resolution 64 --channels 256,192,96,48,24 --gamma "$GAMMA" --resume --kimg 100000 "$@"
}

check_variants() {  # print "img/s<TAB>options" for each speed option that ran
  tick=$($PY -c "print($BATCH * 10 / 1000)")
  variants=("--precision fp32" "--precision tf32" "--precision bf16" "--precision bf16 --channels-last")
  [ -n "$EXTRA" ] && variants+=("--precision bf16 $EXTRA")
  for opts in "${variants[@]}"; do
    rm -rf /tmp/check && mkdir -p /tmp/check && cp .gpu/start/* /tmp/check/
    echo "== $opts" >&2
    train /tmp/check --batch "$BATCH" --tick "$tick" --snap 1e9 --stop-after-steps "${CHECK_STEPS:-40}" $opts \
      > /tmp/check.log 2>&1
    grep -E "^kimg|rror" /tmp/check.log | tail -3 >&2
    rate=$(grep -E "^kimg" /tmp/check.log | tail -1 | awk '{for (i = 1; i < NF; i++) if ($i == "img/s") print $(i + 1)}')
    [ -n "$rate" ] && printf '%s\t%s\n' "$rate" "$opts"
  done
}

case $MODE in
  auto)
    # Budget in seconds ($2, default 560): the check, then the run with what is left less 60 s for
    # the last snapshot and the copy back.
    BUDGET=${2:-560}
    best=$(check_variants | sort -g -r | head -1)
    [ -n "$best" ] || { echo "no speed option ran"; exit 1; }
    opts=${best#*$'\t'}
    left=$((BUDGET - SECONDS - 60))
    [ "$left" -gt 60 ] || { echo "no time left after the check ($SECONDS s)"; exit 1; }
    MINUTES=$($PY -c "print(round($left / 60, 2))")
    echo "== train: $opts at ${best%%$'\t'*} img/s in the check, $MINUTES minutes"
    mkdir -p "$OUT/checkpoint"
    [ -f "$OUT/checkpoint/state.json" ] || cp .gpu/start/* "$OUT/checkpoint/"
    train "$OUT/checkpoint" --batch "$BATCH" $opts --minutes "$MINUTES" \
      --snap-minutes "$SNAP_MINUTES" --snap 1e9 --tick 20 --compact-checkpoint
    rc=$?
    ls -la "$OUT" "$OUT/checkpoint"
    exit $rc ;;
  check)
    # Each speed option for CHECK_STEPS steps at the chosen batch, from a scratch copy of the start; a
    # tick every 10 steps prints img/s (the first tick holds the warm-up, and compile's first steps).
    check_variants ;;
  train)
    mkdir -p "$OUT/checkpoint"
    [ -f "$OUT/checkpoint/state.json" ] || cp .gpu/start/* "$OUT/checkpoint/"
    train "$OUT/checkpoint" --batch "$BATCH" --precision "$PRECISION" --minutes "$MINUTES" \
      --snap-minutes "$SNAP_MINUTES" --snap 1e9 --tick 20 --compact-checkpoint $EXTRA
    rc=$?
    ls -la "$OUT" "$OUT/checkpoint"
    exit $rc ;;
  *) echo "usage: emoji64.sh check | train MINUTES | auto SECONDS"; exit 2 ;;
esac
