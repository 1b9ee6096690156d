#!/usr/bin/env bash
# kmsr adapt on a real camera: the RealSR Canon x4 pairs (../shared/data/real_pairs/RealSR_x4_Canon).
#
#   bash benchmarks/adapt_realsr.sh [WORK_DIR] [inductive|transductive|inductive-blur-only ...]   (default: the first two)
#
# inductive:    adapt on the LR images of the odd-numbered pairs only (their HR is never read),
#               score on the 25 even-numbered pairs with `kmsr bench real`;
# transductive: adapt on all 50 LR images, score on all 50 pairs;
# inductive-blur-only: inductive with --no-noise-model (the ablation: the camera's blur without its noise).
# Rows: bicubic, the published SRCNN / VDSR / CARN-M, the shipped x4 model (the base), the adapted one.
# The LR images are 128x128, so estimation uses 256-pixel patches of the x4-upscaled image (3 per photo).
# Nothing is tuned on these pairs: besides the budget, the settings differ from adapt's defaults only
# where the data asks (256-pixel patches for 128-pixel photos, the shipped models' HR training images, bf16).
set -euo pipefail
WORK=${1:-adapt-work}
shift || true
MODES=${*:-inductive transductive}
SHARED=${SHARED:-../shared/data}
PAIRS=$SHARED/real_pairs/RealSR_x4_Canon
W=$SHARED/weights
MINUTES=${MINUTES:-20}
mkdir -p "$WORK"
PUB="bicubic,srcnn:$W/srcnn/srcnn_915_x{s}_oihw.npz,vdsr:$W/vdsr/vdsr_model_epoch_50_state_dict.npz"
PUB="$PUB,carn_m:$W/carn/carn_m_state_dict.npz,shipped=kmsr_cli/models/kmsr_x4.safetensors"
for MODE in $MODES; do
  D=$WORK/$MODE
  EXTRA=()
  [[ $MODE == *-blur-only ]] && EXTRA=(--no-noise-model)
  mkdir -p "$D/photos" "$D/eval/HR" "$D/eval/LR"
  for f in "$PAIRS"/LR/*.png; do
    n=$(basename "$f" .png); i=$((10#${n##*_}))
    if [[ $MODE == transductive* ]] || (( i % 2 == 1 )); then ln -sf "$(realpath "$f")" "$D/photos/$n.png"; fi
    if [[ $MODE == transductive* ]] || (( i % 2 == 0 )); then
      ln -sf "$(realpath "$f")" "$D/eval/LR/$n.png"; ln -sf "$(realpath "$PAIRS/HR/$n.png")" "$D/eval/HR/$n.png"
    fi
  done
  kmsr adapt "$D/photos" --scale 4 -o "$D/canon_x4.safetensors" --minutes "$MINUTES" --patch 256 --per-image 3 \
    --data "$SHARED/sr/T91" --data "$SHARED/sr/BSD200" --amp --device cpu --seed 0 "${EXTRA[@]}" 2> "$D/adapt.log"
  kmsr bench real --pairs "$D/eval" --scale 4 --models "$PUB" --models "adapted=$D/canon_x4.safetensors" \
    --markdown > "$D/bench.md"
  cat "$D/bench.md"
done
