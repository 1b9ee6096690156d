#!/usr/bin/env bash
# Stage 2 of table1.sh and real_models.sh: a small kernel GAN per scale on the estimated kernels
# WORK/est_x{2,4}.h5 (the two trained side by side, one core each), then the pool K+ of each scale:
# the estimated kernels and as many GAN samples. `--ema 0`: the shipped pools were made before the
# moving average became kmsr gan train's default, so these commands keep their last weights.
#
#   bash benchmarks/gan_pool.sh WORK ITERS
set -euo pipefail
WORK=$1
ITERS=$2
for S in 2 4; do
  OMP_NUM_THREADS=1 kmsr gan train "$WORK/est_x$S.h5" -o "$WORK/gan_x$S.safetensors" --width-mult 0.0625 --lr 1e-3 \
    --iters "$ITERS" --ema 0 --device cpu --seed 0 --sample-every 500 --samples-png "$WORK/gan_x${S}_grid.png" &
done
wait
for S in 2 4; do
  N=$(kmsr pool show "$WORK/est_x$S.h5" --json | python -c 'import json, sys; print(json.load(sys.stdin)["count"])')
  kmsr pool build --estimated "$WORK/est_x$S.h5" --generator "$WORK/gan_x$S.safetensors" -n "$N" --seed 0 -o "$WORK/pool_x$S.h5"
done
