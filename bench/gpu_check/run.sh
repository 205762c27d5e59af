#!/usr/bin/env bash
# GPU check for jittor-sbvsr on a bare, offline CUDA machine, in one call:  bash bench/gpu_check/run.sh
# Needs .gpu/ from `python bench/gpu_check/prepare.py` (run where pip can download; .gpu/ is ignored:
# carry it). Set up with the project's own installer (env/setup.py --wheels), run with its runtime:
# no private CUDA folder, Jittor's errors shown, MPI on. Writes $OUT/log.txt and a few result files.
# Knobs: BUDGET (s, whole script; the step timeouts below add up to it), STEPS (a subset, order fixed),
# PYTHON (default python3), GPU_FILES (default .gpu).
set -o pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$REPO" || exit 2
FILES=${GPU_FILES:-$REPO/.gpu}
OUT=${OUT:-/tmp/gpu_out}
mkdir -p "$OUT"
PY=${PYTHON:-python3}
VENV=/tmp/sbvsr_venv
BUDGET=${BUDGET:-570}
STEPS=${STEPS:-setup doctor parity cli dryrun mpi train tf32 whole}
START=$(date +%s)
DEADLINE=$((START + BUDGET))
W=/tmp/gpu_work
export PYTHONUNBUFFERED=1 SBVSR_REFERENCE=$FILES/reference OMP_NUM_THREADS=8
SUMMARY=$W/summary.txt
rm -rf "$W"; mkdir -p "$W"; : > "$SUMMARY"

ts() { echo "[$(date +%T) +$(( $(date +%s) - START ))s]"; }
want() { [[ " $STEPS " == *" $1 "* ]]; }

# step NAME TIMEOUT CMD...: CMD under timeout (capped by what is left of BUDGET), output also in $W/NAME.log
step() {
  local name=$1 t=$2; shift 2
  local left=$((DEADLINE - $(date +%s) - 3)) rc t0 what
  if [ "$left" -lt 10 ]; then echo "=== $(ts) SKIP $name: budget used up"; echo "$name: SKIPPED (budget)" >> "$SUMMARY"; return 99; fi
  [ "$t" -gt "$left" ] && t=$left
  echo "=== $(ts) STEP $name (timeout ${t}s): $*"
  t0=$(date +%s)
  timeout -k 5 "$t" bash -c '"$@"' "$name" "$@" 2>&1 | tee "$W/$name.log"   # bash: the helpers below too
  rc=$?
  what="rc=$rc"; [ "$rc" = 0 ] && what=OK; { [ "$rc" = 124 ] || [ "$rc" = 137 ]; } && what="TIMEOUT (${t}s)"
  echo "=== $(ts) END $name: $what ($(( $(date +%s) - t0 ))s)"
  echo "$name: $what ($(( $(date +%s) - t0 ))s)" >> "$SUMMARY"
  return "$rc"
}

# peak NAME CMD...: CMD while nvidia-smi samples the GPU's used memory; the peak in $W/NAME.peak (MiB)
peak() {
  local name=$1; shift
  ( while :; do nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -i 0; sleep 0.2; done ) \
    > "$W/$name.mem" 2>/dev/null &
  local sampler=$!
  "$@"; local rc=$?
  kill "$sampler" 2>/dev/null; wait "$sampler" 2>/dev/null
  sort -n "$W/$name.mem" | tail -1 > "$W/$name.peak"
  echo "peak GPU memory during $name: $(cat "$W/$name.peak") MiB (nvidia-smi, every 0.2 s)"
  return $rc
}

sbvsr() { "$VENV/bin/python" "$@"; }
infer() { sbvsr inference.py --model_path "$W/recipe.pkl" "$@"; }
public() { infer --input_path "$SBVSR_REFERENCE/public_case/LR" --gt_path "$SBVSR_REFERENCE/public_case/HR" --border "$@"; }
export -f sbvsr infer public peak
export VENV W SBVSR_REFERENCE

main() {
  echo "=== $(ts) jittor-sbvsr GPU check; $REPO; budget ${BUDGET}s; steps: $STEPS"
  git -C "$REPO" log -1 --format='commit %H %s' 2>/dev/null || true
  nvidia-smi --query-gpu=name,driver_version,memory.total,compute_cap --format=csv 2>&1 | head -3
  echo "python: $(command -v "$PY") $($PY -V 2>&1); nvcc: $(command -v nvcc) $(nvcc --version 2>/dev/null | tail -1)"
  [ -d "$FILES/whl" ] && [ -d "$FILES/reference" ] || { echo "FATAL: no $FILES/whl or reference (bench/gpu_check/prepare.py)"; return 2; }

  # 1. the project's installer, offline: the carried wheels over the image's packages, Jittor's CUDA
  #    changes, the CUDA check (nvcc, g++, cuDNN: pip's linked into the venv), the first compile
  if want setup; then
    step setup 170 "$PY" env/setup.py --wheels "$FILES/whl" --venv "$VENV" || { echo "FATAL: set-up failed"; return 2; }
  fi
  export PATH=$VENV/bin:$PATH   # mpicc, mpirun from the Open MPI wheel when the image has none
  sbvsr bench/gpu_check/make_recipe.py "$SBVSR_REFERENCE" "$W/recipe.pkl" || return 2
  local failed=0
  want doctor && { step doctor 20 sbvsr -m jittor_sbvsr.cli.doctor || failed=1; }

  # 2. parity with the reference on CUDA (the tests' own tolerances), the correlation op CPU vs GPU
  if want parity; then
    PYTHONPATH=$REPO/bench/gpu_check step parity 90 sbvsr -m pytest -q -rs -p sbvsr_cuda_plugin -p no:cacheprovider --rootdir "$REPO" \
      tests/test_parity.py tests/test_correlation.py || failed=1
  fi
  # 3. the CLI: log header (GPU, cuDNN or not, TF32), the upstream totals
  if want cli; then
    step cli 30 public --result_path "$W/cli" --infer_flag fp32 --save_kernel --device cuda || failed=1
    grep -h -E "^runtime:|^Total|PSNR" "$W"/cli/infer_fp32/inference_log_*.txt | tail -3
    echo "upstream (reference) total: PSNR 20.76501 SSIM 0.45127 over 14 frames"
  fi
  # 4. the dry run's plan against the measured peak device memory (270x480, 5 frames, 4 GiB plan)
  if want dryrun; then
    sbvsr -c "import sys, numpy as np; from PIL import Image; import os; d=sys.argv[1]; os.makedirs(d, exist_ok=True)
rs = np.random.RandomState(0)
for i in range(5): Image.fromarray(rs.randint(0, 255, (270, 480, 3), np.uint8)).save(f'{d}/{i:03d}.png')" "$W/clip270/v"
    step dryrun 15 infer --input_path "$W/clip270" --device cuda --max_memory 4G --dry_run --result_path "$W/dry" || failed=1
    step dryrun_run 35 peak dryrun_run infer --input_path "$W/clip270" --device cuda --max_memory 4G --border \
      --result_path "$W/dry" --infer_flag r || failed=1
    grep -h "tiles\|note" "$W"/dry/infer_r/inference_log_*.txt | head -3
  fi
  # 5. two ranks on one GPU: placement in the header, same PNGs as one process
  if want mpi; then
    step mpi 65 mpirun --allow-run-as-root --oversubscribe -np 2 -x PATH -x SBVSR_REFERENCE -x OMP_NUM_THREADS=4 \
      "$VENV/bin/python" inference.py --model_path "$W/recipe.pkl" --input_path "$SBVSR_REFERENCE/public_case/LR" \
      --border --device cuda --result_path "$W/mpi" --infer_flag two || failed=1
    grep -h -E "^runtime:|^MPI" "$W"/mpi/infer_two/inference_log_*.txt
    [ -d "$W/cli/infer_fp32" ] && sbvsr -c "import sys, glob, os, numpy as np; from PIL import Image
a = sorted(glob.glob(sys.argv[1] + '/*/*.png')); b = sorted(glob.glob(sys.argv[2] + '/*/*.png'))
same = len(a) == len(b) > 0 and all(np.array_equal(np.asarray(Image.open(x)), np.asarray(Image.open(y))) for x, y in zip(a, b))
print(f'2 ranks vs 1 process: {len(b)} PNGs, identical: {same}'); sys.exit(0 if same else 1)" "$W/cli/infer_fp32" "$W/mpi/infer_two" || failed=1
  fi
  # 6. training steps with --accumulate auto (paper-size model, a budget that makes it split the batch)
  if want train; then
    step train 80 peak train sbvsr main.py --template Self_Blind_VSR_Demo --n_feat 128 --extra_RBS 3 --recons_RBS 20 \
      --patch_size 48 --batch_size 8 --accumulate auto --max_memory 1500M --epochs 1 --experiment_dir "$W/exp" \
      --save auto || failed=1
    grep -h -E "accumulate auto|runtime|Epoch 1" "$W"/exp/auto/*.txt 2>/dev/null | head -5
  fi
  # 7. TF32: the same run with --tf32, its deviation from FP32 and its speed
  if want tf32; then
    step tf32 35 public --result_path "$W/cli" --infer_flag tf32 --device cuda --tf32 || failed=1
    sbvsr -c "import sys, glob, re, numpy as np; from PIL import Image
a = sorted(glob.glob(sys.argv[1] + '/*/*.png')); b = sorted(glob.glob(sys.argv[2] + '/*/*.png'))
d = [np.abs(np.asarray(Image.open(x), np.int16) - np.asarray(Image.open(y), np.int16)) for x, y in zip(a, b)]
t = [sum(map(float, re.findall(r'forward_time[^0-9]*([0-9.]+)', open(glob.glob(p + '/inference_log_*.txt')[0]).read()))) for p in sys.argv[3:]]
print(f'tf32 vs fp32: {len(d)} PNGs, max |diff| {max(x.max() for x in d)} grey levels, mean {np.mean([x.mean() for x in d]):.4f}; forward time fp32 {t[0]:.3f} s, tf32 {t[1]:.3f} s')" \
      "$W/cli/infer_fp32" "$W/cli/infer_tf32" "$W/cli/infer_fp32" "$W/cli/infer_tf32"
  fi
  # 8. a whole run with and without ground truth against its network time
  if want whole; then
    step whole 30 sbvsr bench/whole_run.py --lr-size 180x320 --frames 7 --threads 8 --runs 1 --json "$OUT/whole_run.json" || failed=1
  fi
  return $failed
}

main 2>&1 | tee "$OUT/log.txt"
rc=${PIPESTATUS[0]}
{ echo "=== $(ts) SUMMARY (exit $rc)"; sed 's/^/  /' "$SUMMARY"; for p in "$W"/*.peak; do [ -f "$p" ] && echo "  peak $(basename "$p" .peak): $(cat "$p") MiB"; done; } 2>&1 | tee -a "$OUT/log.txt"
exit "$rc"
