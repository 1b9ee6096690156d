#!/usr/bin/env bash
# KMSR's Table 1 at this machine's scale: the commands that produced benchmarks/results/table1.md.
#
#   bash benchmarks/table1.sh [WORK_DIR]      (from the repository root, with kmsr installed)
#
# One training budget for every trained model: a 4-block, 32-filter network (EDSR: 4 blocks,
# 32 filters), batch 16, 64x64 HR patches, Adam 5e-4 halved every 3 epochs of 250 steps, and
# 45 minutes of wall time on the 2-core machine, the four runs sharing its cores.
set -euo pipefail
WORK=${1:-table1-work}
SHARED=${SHARED:-../shared/data}
mkdir -p "$WORK/photos" "$WORK/runs"

# Real photos: scikit-image's CC0 photos and the real LR photos of RealSRSet (drawings,
# slides and synthetic patterns left out).
python - "$WORK/photos" "$SHARED" <<'PY'
import shutil, sys
from pathlib import Path
from kmsr_cli.sample_data import export_cc0
dest, shared = Path(sys.argv[1]), Path(sys.argv[2])
export_cc0(dest, ("astronaut", "coffee", "rocket", "chelsea", "camera", "brick", "grass", "gravel", "immunohistochemistry"))
for f in sorted((shared / "real" / "RealSRSet").glob("*.png")):
    if not f.name.startswith(("comic", "ppt", "pattern", "computer")):
        shutil.copy(f, dest / f"real_{f.name}")
PY

# Stage 1: kernels seen in the photos upscaled x2 and x4.
kmsr estimate "$WORK/photos" -o "$WORK/est_x2.h5" --scale 2 --patch 256 --per-image 3 --workers 1
kmsr estimate "$WORK/photos" -o "$WORK/est_x4.h5" --scale 4 --patch 256 --per-image 3 --workers 1

# Stage 3: the same budget for every model.
COMMON=(--option blocks=4 --option filters=32 --batch 16 --patch 64 --epochs 8 --iters-per-epoch 250
        --lr 5e-4 --lr-halve-every 3 --time-budget 45 --seed 0 --device cpu)
OMP_NUM_THREADS=1 kmsr train --backbone kmsr --degradation pool --pool "$WORK/est_x2.h5" --scale 2 "${COMMON[@]}" -o "$WORK/runs/kmsr_pool_x2" &
OMP_NUM_THREADS=1 kmsr train --backbone kmsr --degradation bicubic --scale 2 "${COMMON[@]}" -o "$WORK/runs/kmsr_bicubic_x2" &
OMP_NUM_THREADS=1 kmsr train --backbone kmsr --degradation pool --pool "$WORK/est_x4.h5" --scale 4 "${COMMON[@]}" -o "$WORK/runs/kmsr_pool_x4" &
OMP_NUM_THREADS=1 kmsr train --backbone edsr --degradation bicubic --scale 2 "${COMMON[@]}" -o "$WORK/runs/edsr_bicubic_x2" &
wait

# Evaluation: Set5 x2, the paper's four LR sets and DIV2KRK's kernels as unseen kernels.
kmsr bench quality --hr "$SHARED/sr/Set5" --scales 2 \
  --kernels "bicubic,g1.25,g1.6,g1.7,div2krk=$SHARED/kernels/div2krk/div2krk_gt_k_x{s}.npy" \
  --models "bicubic,srcnn:$SHARED/weights/srcnn/srcnn_915_x{s}_oihw.npz,vdsr:$SHARED/weights/vdsr/vdsr_model_epoch_50_state_dict.npz" \
  --models "edsr-bicubic=$WORK/runs/edsr_bicubic_x2/model.safetensors,kmsr-bicubic=$WORK/runs/kmsr_bicubic_x2/model.safetensors" \
  --models "kmsr-pool=$WORK/runs/kmsr_pool_x2/model.safetensors" \
  --markdown > "$WORK/table1_x2.md"
