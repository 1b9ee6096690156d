#!/usr/bin/env bash
# The shipped x2/x4 models (kmsr_cli/models/kmsr_x{2,4}.safetensors) and their tables: the exact
# commands. From the repository root with kmsr installed:
#
#   bash benchmarks/real_models.sh [WORK_DIR] [stage...]     stages: pool train bench (default), x4-variants x4-variants-bench, x2-variants x2-variants-bench, ensemble,
#                                                            s7-train s7-bench
#
# Stage 1-2 (pool): kernels estimated with `kmsr estimate` from 43 real photos that are in no
# test set (9 of scikit-image's CC0 photos, the 14 real photos of RealSRSet, every 10th BSD200
# train image), a kernel GAN per scale, and the pool K+ = estimated + as many GAN samples.
# Stage 3 (train): CARN-M initialised from its published MIT weights, fine-tuned on T91 + BSD200
# (VDSR's 291 images) with the `realistic` degradation on that pool (pool blur, decimation, light
# noise, some JPEG, 25 % MATLAB-bicubic pairs), Kodak24 for validation and model selection
# (best.safetensors). x2 and x4 train side by side, one core each, for 4 epochs of 200 steps (about 80 minutes each on one core).
# Stage 4 (bench): Table 1 on Set5 (x2, x4, every kernel column) and the RealSR Canon x4 pairs.
# Set5, Set14 and the RealSR pairs are never trained or tuned on.
set -euo pipefail
WORK=${1:-real-work}
shift || true
STAGES=${*:-pool train bench}
SHARED=${SHARED:-../shared/data}
W=$SHARED/weights
mkdir -p "$WORK/photos" "$WORK/runs"
has() { [[ " $STAGES " == *" $1 "* ]]; }
# One training run in the background on one core: train_bg RUN_DIR LOG [kmsr train options...]
train_bg() { local dir=$1 log=$2; shift 2; OMP_NUM_THREADS=1 kmsr train "$@" -o "$dir" > "$log" 2>&1 & }

if has pool; then
python benchmarks/pool_photos.py "$WORK/photos" --shared "$SHARED" --bsd-every 10
for S in 2 4; do
  OMP_NUM_THREADS=1 kmsr estimate "$WORK/photos" -o "$WORK/est_x$S.h5" --scale $S --patch 256 --per-image 3 --workers 1 &
done
wait
bash benchmarks/gan_pool.sh "$WORK" 1000
fi

# What every training run below shares: the realistic degradation's noise and JPEG (its bicubic share
# is set per run), the HR data, the Kodak24 validation, and the schedule but for its length.
REAL=(--degradation realistic --degradation-option noise_max=0.01 --degradation-option jpeg_prob=0.3
      --degradation-option jpeg_min=75)
DATA=(--data "$SHARED/sr/T91" --data "$SHARED/sr/BSD200" --val "$SHARED/sr/Kodak24" --batch 16 --amp --device cpu)
RECIPE=("${DATA[@]}" --iters-per-epoch 200 --lr 2e-4 --lr-halve-every 2 --seed 0)
CARN=(--backbone carn_m --init "carn_m:$W/carn/carn_m_state_dict.npz")
if has train; then
  T=("${CARN[@]}" "${REAL[@]}" --degradation-option bicubic_fraction=0.25 "${RECIPE[@]}" --epochs 4 --time-budget 95)
  train_bg "$WORK/runs/carn_real_x2" "$WORK/train_x2.log" "${T[@]}" --pool "$WORK/pool_x2.h5" --scale 2 --patch 128
  train_bg "$WORK/runs/carn_real_x4" "$WORK/train_x4.log" "${T[@]}" --pool "$WORK/pool_x4.h5" --scale 4 --patch 192
  wait
fi

# Stage x4-variants (session 4): two x4 runs side by side, one core each, 600 steps, 62 minutes at most:
# - the bicubic-trained twin: the same init, recipe and budget on MATLAB-bicubic pairs;
# - `est`: the pool of estimated kernels only (the x4 GAN's samples were wider than the kernels it
#   was trained on: median width 2.92 against 2.02), half of the samples from bicubic LR.
V=("${CARN[@]}" "${RECIPE[@]}" --epochs 3 --time-budget 62 --scale 4 --patch 192)
if has x4-variants; then
  train_bg "$WORK/runs/carn_est_x4" "$WORK/train_est_x4.log" "${V[@]}" "${REAL[@]}" --degradation-option bicubic_fraction=0.5 \
    --pool "$WORK/est_x4.h5"
  train_bg "$WORK/runs/carn_bic_x4" "$WORK/train_bic_x4.log" "${V[@]}" --degradation bicubic
  wait
fi

# Stage x2-variants (session 5): the x4 recipe at x2, two runs side by side, one core each, 1000 steps,
# 95 minutes at most:
# - `mix`: the pool K+ (the x2 GAN passed its sample check: median width 1.27 against 1.21), half of
#   the samples from bicubic LR (the shipped x2 had a quarter and was 2.8 dB below CARN-M on bicubic);
# - the bicubic-trained twin: the same init, recipe and budget on MATLAB-bicubic pairs.
V2=("${CARN[@]}" "${RECIPE[@]}" --epochs 5 --time-budget 95 --scale 2 --patch 128)
if has x2-variants; then
  train_bg "$WORK/runs/carn_mix_x2" "$WORK/train_mix_x2.log" "${V2[@]}" "${REAL[@]}" --degradation-option bicubic_fraction=0.5 \
    --pool "$WORK/pool_x2.h5"
  train_bg "$WORK/runs/carn_bic_x2" "$WORK/train_bic_x2.log" "${V2[@]}" --degradation bicubic
  wait
fi

# Stage 4: the tables. The twin of the new models' architecture trained on bicubic pairs is the
# published CARN-M itself (their initialisation, fully trained on bicubic DIV2K pairs).
K5="bicubic,g1.25,g1.6,g1.7,div2krk=$SHARED/kernels/div2krk/div2krk_gt_k_x{s}.npy"
PUB="bicubic,srcnn:$W/srcnn/srcnn_915_x{s}_oihw.npz,vdsr:$W/vdsr/vdsr_model_epoch_50_state_dict.npz"
PUB="$PUB,carn_m:$W/carn/carn_m_state_dict.npz,imdn:$W/imdn/IMDN_x{s}_state_dict.npz"
if has x4-variants-bench; then
  R="$WORK/runs"
  X4=(--models "shipped=kmsr_cli/models/kmsr_x4.safetensors,est=$R/carn_est_x4/best.safetensors,twin=$R/carn_bic_x4/best.safetensors")
  # model selection: Kodak24 (never a test set) over the same kernel columns as Table 1
  kmsr bench quality --hr "$SHARED/sr/Kodak24" --scales 4 \
    --kernels "$K5" \
    "${X4[@]}" --markdown > "$WORK/kodak_x4_variants.md"
  kmsr bench quality --hr "$SHARED/sr/Set5" --scales 4 \
    --kernels "$K5" \
    "${X4[@]}" --markdown > "$WORK/table1_x4_variants.md" &
  kmsr bench real --pairs "$SHARED/real_pairs/RealSR_x4_Canon" --scale 4 "${X4[@]}" --markdown > "$WORK/real_x4_variants.md" &
  wait
fi
# Stage x2-variants-bench: the x2 selection on Kodak24 and Table 1 at x2. The rule, written before
# the runs finished: among the shipped x2 and `mix`, the best mean Kodak24 Y-PSNR over the five
# kernel columns whose Kodak24 bicubic column is within 1 dB of the twin's; if neither is, the
# better mean (and the bicubic target is reported as missed).
if has x2-variants-bench; then
  R="$WORK/runs"
  X2=(--models "shipped=kmsr_cli/models/kmsr_x2.safetensors,mix=$R/carn_mix_x2/best.safetensors,twin=$R/carn_bic_x2/best.safetensors")
  kmsr bench quality --hr "$SHARED/sr/Kodak24" --scales 2 \
    --kernels "$K5" \
    "${X2[@]}" --json > "$WORK/kodak_x2_variants.json" &
  kmsr bench quality --hr "$SHARED/sr/Set5" --scales 2 \
    --kernels "$K5" \
    --models "$PUB" "${X2[@]}" --markdown > "$WORK/table1_x2_variants.md" &
  wait
  python - "$WORK/kodak_x2_variants.json" <<'PY'
import json, sys
rows = json.load(open(sys.argv[1]))["summary"]
mean = {}
for r in rows:
    mean.setdefault(r["model"], {})[r["kernel"]] = r["psnr"]
twin_bic = mean["twin"]["bicubic"]
for m, cols in mean.items():
    print(f"{m}: mean {sum(cols.values()) / len(cols):.2f} dB over {len(cols)} columns, bicubic {cols['bicubic']:.2f} "
          f"({cols['bicubic'] - twin_bic:+.2f} against the twin)")
ok = [m for m in ("shipped", "mix") if mean[m]["bicubic"] >= twin_bic - 1.0] or ["shipped", "mix"]
pick = max(ok, key=lambda m: sum(mean[m].values()) / len(mean[m]))
print(f"selected: {pick}")
PY
fi
if has bench; then
  R="$WORK/runs"
  for S in 2 4; do
    kmsr bench quality --hr "$SHARED/sr/Set5" --scales $S \
      --kernels "$K5" \
      --models "$PUB" --models "kmsr-real=$R/carn_real_x$S/best.safetensors" \
      --markdown > "$WORK/table1_x$S.md" &
  done
  kmsr bench real --pairs "$SHARED/real_pairs/RealSR_x4_Canon" --scale 4 \
    --models "$PUB" --models "kmsr-real=$R/carn_real_x4/best.safetensors" \
    --save "$WORK/real_strips" --markdown > "$WORK/real_x4.md" &
  wait
fi

# Stage ensemble: every model of the RealSR and Set5 x4 tables once more as its x8 self-ensemble
# (kmsr bench --ensemble: rows MODEL+), published ones included, so the "+" rows compare like with like.
if has ensemble; then
  kmsr bench real --pairs "$SHARED/real_pairs/RealSR_x4_Canon" --scale 4 --ensemble \
    --models "$PUB,shipped=kmsr_cli/models/kmsr_x4.safetensors" --markdown > "$WORK/real_x4_ensemble.md" &
  kmsr bench quality --hr "$SHARED/sr/Set5" --scales 4 --ensemble \
    --kernels "$K5" \
    --models "$PUB,shipped=kmsr_cli/models/kmsr_x4.safetensors" --markdown > "$WORK/table1_x4_ensemble.md" &
  wait
fi

# Stage s7-train (session 7): two runs side by side, one core each.
# - `b80` (x2): the x2 recipe with 80 % of the samples bicubic LR, 800 steps from the published CARN-M.
#   Why: the shipped x2 is 2.9 dB below the same-budget bicubic twin on Set5 bicubic; a blind model
#   cannot tell a bicubic LR from a mildly blurred one, so the bicubic share sets that trade-off.
# - `mse` (x4): the shipped x4 fine-tuned 450 more steps with an L2 loss instead of L1, same degradation.
#   Why: for a blind model the input does not determine the kernel; the L2-optimal output is the mean
#   over the kernels that fit, the L1-optimal one the median, which is sharper where they disagree
#   and costs PSNR where the blur is milder than the pool's (the RealSR diagnosis above).
if has s7-train; then
  cp kmsr_cli/models/kmsr_x2.safetensors "$WORK/shipped_x2_s6.safetensors"
  cp kmsr_cli/models/kmsr_x4.safetensors "$WORK/shipped_x4_s6.safetensors"
  train_bg "$WORK/runs7/carn_b80_x2" "$WORK/train7_b80_x2.log" "${CARN[@]}" "${REAL[@]}" --degradation-option bicubic_fraction=0.8 \
    --pool "$WORK/pool_x2.h5" --scale 2 --patch 128 "${RECIPE[@]}" --epochs 4 --time-budget 85
  train_bg "$WORK/runs7/carn_mse_x4" "$WORK/train7_mse_x4.log" --backbone carn_m --init "$WORK/shipped_x4_s6.safetensors" --loss mse "${REAL[@]}" \
    --degradation-option bicubic_fraction=0.5 --pool "$WORK/est_x4.h5" --scale 4 --patch 192 "${DATA[@]}" \
    --epochs 3 --iters-per-epoch 150 --lr 1e-4 --lr-halve-every 2 --seed 1 --time-budget 60
  wait
fi
# Stage s7-bench: selection on Kodak24, then Set5 and RealSR. The rules, written before the runs finished:
# - x2: `b80` replaces the shipped x2 if, on Kodak24, its bicubic column is within 0.5 dB of the
#   same-budget bicubic twin's (the Set5 target asks 1.0; Kodak24 showed a third of Set5's gap last
#   time, so the margin is kept) and its g1.6 column is at least 1.0 dB above the twin's.
# - x4: `mse` replaces the shipped x4 if its mean Kodak24 Y-PSNR over the five columns is higher
#   (the rule of session 4).
if has s7-bench; then
  R="$WORK/runs"
  S7X2=(--models "shipped=$WORK/shipped_x2_s6.safetensors,b80=$WORK/runs7/carn_b80_x2/best.safetensors,twin=$R/carn_bic_x2/best.safetensors")
  S7X4=(--models "shipped=$WORK/shipped_x4_s6.safetensors,mse=$WORK/runs7/carn_mse_x4/best.safetensors")  # x4 twin: session 4
  kmsr bench quality --hr "$SHARED/sr/Kodak24" --scales 2 --kernels "$K5" "${S7X2[@]}" --json > "$WORK/kodak_x2_s7.json" &
  kmsr bench quality --hr "$SHARED/sr/Kodak24" --scales 4 --kernels "$K5" "${S7X4[@]}" --json > "$WORK/kodak_x4_s7.json" &
  wait
  kmsr bench quality --hr "$SHARED/sr/Set5" --scales 2 --kernels "$K5" "${S7X2[@]}" --markdown > "$WORK/table1_x2_s7.md" &
  kmsr bench quality --hr "$SHARED/sr/Set5" --scales 4 --kernels "$K5" "${S7X4[@]}" --markdown > "$WORK/table1_x4_s7.md" &
  kmsr bench real --pairs "$SHARED/real_pairs/RealSR_x4_Canon" --scale 4 "${S7X4[@]}" --markdown > "$WORK/real_x4_s7.md" &
  wait
  python - "$WORK/kodak_x2_s7.json" "$WORK/kodak_x4_s7.json" <<'PY'
import json, sys
def cols(path):
    out = {}
    for r in json.load(open(path))["summary"]:
        out.setdefault(r["model"], {})[r["kernel"]] = r["psnr"]
    return out
x2, x4 = cols(sys.argv[1]), cols(sys.argv[2])
t = x2["twin"]
ok = x2["b80"]["bicubic"] >= t["bicubic"] - 0.5 and x2["b80"]["g1.6"] >= t["g1.6"] + 1.0
print(f"x2 b80: bicubic {x2['b80']['bicubic']:.2f} ({x2['b80']['bicubic'] - t['bicubic']:+.2f} against the twin), "
      f"g1.6 {x2['b80']['g1.6']:.2f} ({x2['b80']['g1.6'] - t['g1.6']:+.2f}); selected: {'b80' if ok else 'shipped'}")
mean = {m: sum(c.values()) / len(c) for m, c in x4.items()}
print("x4 Kodak24 means: " + ", ".join(f"{m} {v:.3f}" for m, v in mean.items())
      + f"; selected: {'mse' if mean['mse'] > mean['shipped'] else 'shipped'}")
PY
fi
