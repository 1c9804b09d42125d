#!/bin/bash
# One GPU run that trains the checker's fake generators to real quality (issue 16), all three at once
# on the one GPU, from scratch, for MINUTES of wall clock each (README.md beside this file says how):
#   OUT=$OUT bash scripts/gpu/fakes.sh MINUTES
# - stylegan-photos/: our StyleGAN2 on the real train patches (the store model and a compact
#   checkpoint: G, G_ema, D in fp32, Adam's second moments in bf16), hundreds of kimg;
# - diffusion/: the 64x64 pixel DDPM (x0-prediction) that the diffusion, ddpm and inpaint families
#   sample, tens of thousands of steps;
# - dcgan/: the transposed-convolution GAN of the dcgan family.
# diffusion/ and dcgan/ come back as the servable model and train.json only (their Adam state would
# pass the 16 MiB a returned file may have): a CPU run resumes them with fresh optimiser state.
# Knobs (environment): DEVICE (cuda), PY (python3), SG_BATCH (256), DIFF_BATCH (128), DCGAN_BATCH (128),
# PRECISION (bf16, StyleGAN only), DATA (.gpu/photos/train).
set -u
MINUTES=${1:-7}
OUT=${OUT:?set OUT to the folder that comes back}
PY=${PY:-python3}
DEVICE=${DEVICE:-cuda}
DATA=${DATA:-.gpu/photos/train}
[ -d "$DATA" ] || { echo "no $DATA: run scripts/gpu/prepare_fakes.py first"; exit 2; }
if ls .gpu/wheels/*.whl > /dev/null 2>&1; then
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .gpu/wheels/*.whl || exit 1
fi
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
nvidia-smi --query-gpu=name,memory.total --format=csv 2>/dev/null || echo "nvidia-smi: none"
mkdir -p "$OUT"
cli() { $PY -m brushpen.cli.main "$@"; }

cli gan train --data "$DATA" --out "$OUT/stylegan-photos" --checkpoint-dir "$OUT/stylegan-photos/checkpoint" \
  --resolution 64 --channels 128,96,64,32,16 --batch "${SG_BATCH:-256}" --precision "${PRECISION:-bf16}" \
  --mirror --seed 0 --kimg 100000 --minutes "$MINUTES" --snap-minutes 2 --snap 1e9 --tick 20 \
  --compact-checkpoint > "$OUT/stylegan.log" 2>&1 &
for kind in diffusion dcgan; do
  batch=$([ $kind = diffusion ] && echo "${DIFF_BATCH:-128}" || echo "${DCGAN_BATCH:-128}")
  cli detect train-fake --kind $kind --data "$DATA" --out "$OUT/$kind" --resolution 64 --batch "$batch" \
    --steps 10000000 --snap 500 --device "$DEVICE" --minutes "$MINUTES" > "$OUT/$kind.log" 2>&1 &
done
wait
rm -rf "$OUT/diffusion/checkpoint" "$OUT/dcgan/checkpoint"
for f in stylegan diffusion dcgan; do echo "== $f"; tail -n 3 "$OUT/$f.log"; done
ls -la "$OUT"/*
