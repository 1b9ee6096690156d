#!/usr/bin/env bash
# KMSR's Table 1 at this machine's scale: the commands that produced benchmarks/results/table1.md.
#
#   bash benchmarks/table1.sh [WORK_DIR]      (from the repository root, with kmsr installed)
#
# One training budget for every trained model: 1500 steps (6 epochs of 250) of batch 16, 64x64 HR
# patches, L1, Adam 5e-4 halved every 2 epochs; a 4-block, 32-filter network for kmsr and EDSR,
# DBPN's small variant with 2 projection stages. The twelve runs share the 2 cores, one thread
# each; on an idle 2-core machine the whole script takes about 2 hours.
set -euo pipefail
WORK=${1:-table1-work}
SHARED=${SHARED:-../shared/data}
mkdir -p "$WORK/photos" "$WORK/runs"

# Real photos: scikit-image's CC0 photos and the real LR photos of RealSRSet (drawings,
# slides and synthetic patterns left out).
python benchmarks/pool_photos.py "$WORK/photos" --shared "$SHARED"

# Stage 1: kernels seen in the photos upscaled x2 and x4.
kmsr estimate "$WORK/photos" -o "$WORK/est_x2.h5" --scale 2 --patch 256 --per-image 3 --workers 1
kmsr estimate "$WORK/photos" -o "$WORK/est_x4.h5" --scale 4 --patch 256 --per-image 3 --workers 1

# Stage 2: a kernel GAN per scale, and the pool K+ = K' and as many GAN samples as estimated kernels.
bash benchmarks/gan_pool.sh "$WORK" 1500

# Stage 3: the same budget for every model. "mix" adds 25 % MATLAB-bicubic pairs to the pool's;
# "decmix" also decimates the pool-blurred patch and rounds it to 8 bits before upscaling it back
# (the realistic degradation with no noise and no JPEG).
COMMON=(--batch 16 --patch 64 --epochs 6 --iters-per-epoch 250 --lr 5e-4 --lr-halve-every 2 --seed 0 --device cpu)
SMALL=(--option blocks=4 --option filters=32)
for S in 2 4; do
  OMP_NUM_THREADS=1 kmsr train --backbone kmsr "${SMALL[@]}" --degradation pool --pool "$WORK/pool_x$S.h5" --scale $S "${COMMON[@]}" -o "$WORK/runs/kmsr_pool_x$S" &
  OMP_NUM_THREADS=1 kmsr train --backbone kmsr "${SMALL[@]}" --degradation pool --pool "$WORK/pool_x$S.h5" \
    --degradation-option bicubic_fraction=0.25 --scale $S "${COMMON[@]}" -o "$WORK/runs/kmsr_mix_x$S" &
  OMP_NUM_THREADS=1 kmsr train --backbone kmsr "${SMALL[@]}" --degradation realistic --pool "$WORK/pool_x$S.h5" \
    --degradation-option noise_max=0 --degradation-option jpeg_prob=0 --degradation-option bicubic_fraction=0.25 \
    --scale $S "${COMMON[@]}" -o "$WORK/runs/kmsr_decmix_x$S" &
  OMP_NUM_THREADS=1 kmsr train --backbone kmsr "${SMALL[@]}" --degradation bicubic --scale $S "${COMMON[@]}" -o "$WORK/runs/kmsr_bicubic_x$S" &
  OMP_NUM_THREADS=1 kmsr train --backbone edsr "${SMALL[@]}" --degradation bicubic --scale $S "${COMMON[@]}" -o "$WORK/runs/edsr_bicubic_x$S" &
  OMP_NUM_THREADS=1 kmsr train --backbone dbpn --option variant=small --option stages=2 --degradation bicubic --scale $S "${COMMON[@]}" -o "$WORK/runs/dbpn_bicubic_x$S" &
done
wait

# Evaluation: Set5 at x2 and x4, the paper's four LR sets and DIV2KRK's kernels as unseen kernels.
for S in 2 4; do
  R="$WORK/runs"
  kmsr bench quality --hr "$SHARED/sr/Set5" --scales $S \
    --kernels "bicubic,g1.25,g1.6,g1.7,div2krk=$SHARED/kernels/div2krk/div2krk_gt_k_x{s}.npy" \
    --models "bicubic,srcnn:$SHARED/weights/srcnn/srcnn_915_x{s}_oihw.npz,vdsr:$SHARED/weights/vdsr/vdsr_model_epoch_50_state_dict.npz" \
    --models "edsr-bicubic=$R/edsr_bicubic_x$S/model.safetensors,dbpn-bicubic=$R/dbpn_bicubic_x$S/model.safetensors" \
    --models "kmsr-bicubic=$R/kmsr_bicubic_x$S/model.safetensors,kmsr-pool=$R/kmsr_pool_x$S/model.safetensors" \
    --models "kmsr-mix=$R/kmsr_mix_x$S/model.safetensors,kmsr-decmix=$R/kmsr_decmix_x$S/model.safetensors" \
    --markdown > "$WORK/table1_x$S.md"
done
