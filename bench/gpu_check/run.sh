#!/usr/bin/env bash
# GPU check for jittor-sbvsr on a bare, offline CUDA machine (how bench/RESULTS.md's GPU
# numbers were made). Run from anywhere:  bash bench/gpu_check/run.sh  (writes $OUT/log.txt).
# It needs, in $GPU_FILES (default: the ignored folder .gpu/ of the checkout):
#   whl/        wheels for the machine's Python: jittor 1.3.8.5 (built from its sdist), numpy 1.26.4,
#               scipy, astunparse, six (pip download --only-binary=:all: --python-version 3.12 ...)
#   reference/  a copy of ../shared/reference (unless SBVSR_REFERENCE is set)
#   py312-include.tar.gz  CPython headers, used only where the machine has none
# The installed Jittor copy is changed for CUDA 13 by jt_cuda_setup.py (see there).
# Env knobs: STEPS="smoke corr parity cli bench tf32" (subset; order is fixed), BUDGET=420 (s,
# whole script), BENCH_CONFIGS=reuse (bench/infer_speed.py --configs), PYTHON=python3.
# Every step runs under `timeout`, capped by what is left of BUDGET.
set -o pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$REPO" || exit 2
G=$REPO/bench/gpu_check
FILES=${GPU_FILES:-$REPO/.gpu}
OUT=${OUT:-/tmp/gpu_out}
mkdir -p "$OUT"
PY=${PYTHON:-python3}
BUDGET=${BUDGET:-420}
STEPS=${STEPS:-smoke corr parity cli bench tf32}
START=$(date +%s)
DEADLINE=$((START + BUDGET))
SITE=/tmp/site
export PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
export JITTOR_HOME=/tmp/jthome
export SBVSR_REFERENCE=${SBVSR_REFERENCE:-$FILES/reference}
export PYTEST_DISABLE_PLUGIN_AUTOLOAD=1
SUMMARY_FILE=/tmp/gpu_check_summary.txt
: > "$SUMMARY_FILE"
rm -f /tmp/step_*.log

ts() { echo "[$(date +%T) +$(( $(date +%s) - START ))s]"; }
want() { [[ " $STEPS " == *" $1 "* ]]; }

# step NAME TIMEOUT CMD...: runs CMD under timeout (capped by the budget), output also in /tmp/step_NAME.log
step() {
  local name=$1 t=$2; shift 2
  local now left rc t0
  now=$(date +%s); left=$((DEADLINE - now - 5))
  if [ "$left" -lt 20 ]; then
    echo "=== $(ts) SKIP $name: budget used up"; echo "$name: SKIPPED (budget)" >> "$SUMMARY_FILE"; return 99
  fi
  [ "$t" -gt "$left" ] && t=$left
  echo "=== $(ts) STEP $name (timeout ${t}s): $*"
  t0=$(date +%s)
  timeout -k 5 "$t" "$@" 2>&1 | tee "/tmp/step_$name.log"
  rc=$?
  local dt=$(( $(date +%s) - t0 ))
  local what="rc=$rc"
  [ "$rc" = 124 ] || [ "$rc" = 137 ] && what="TIMEOUT after ${t}s (rc=$rc)"
  [ "$rc" = 0 ] && what="OK"
  echo "=== $(ts) END $name: $what (${dt}s)"
  echo "$name: $what (${dt}s)" >> "$SUMMARY_FILE"
  return "$rc"
}

main() {
  echo "=== $(ts) jittor-sbvsr GPU check; repo $REPO; OUT=$OUT; budget ${BUDGET}s; steps: $STEPS"
  git -C "$REPO" log -1 --format='commit %H %s' 2>/dev/null || true
  git -C "$REPO" status --short 2>/dev/null | head -20 || true
  uname -a; nproc; free -g 2>/dev/null | head -2
  command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total,compute_cap --format=csv 2>&1 | head -3
  echo "python: $(command -v "$PY") $($PY -V 2>&1)"
  if ! command -v g++ >/dev/null; then echo "FATAL: no g++ (Jittor compiles everything with it)"; return 2; fi
  g++ --version | head -1
  command -v nvcc >/dev/null && nvcc --version | tail -2 || echo "nvcc not on PATH (jt_cuda_setup.py searches further)"

  # ---- 1. wheels, offline, into a --target folder that shadows the venv's numpy 2 ----
  echo "=== $(ts) install wheels into $SITE"
  if [ -f "$SITE/.gpu_check_installed" ]; then
    echo "already installed (warm machine): keeping $SITE and Jittor's cache in $JITTOR_HOME"
  else
    rm -rf "$SITE"
    timeout 180 "$PY" -m pip install -q --no-index --no-deps --no-compile --disable-pip-version-check \
      --target "$SITE" "$FILES"/whl/*.whl 2>&1 | grep -v "Running pip as the 'root'" 
    if ! [ -d "$SITE/jittor" ] || ! [ -d "$SITE/numpy" ]; then
      echo "pip install failed: unpacking the wheels with zipfile instead"
      for w in "$FILES"/whl/*.whl; do "$PY" -m zipfile -e "$w" "$SITE" || echo "  unpack failed: $w"; done
    fi
    [ -d "$SITE/jittor" ] && [ -d "$SITE/numpy" ] || { echo "FATAL: installing the carried wheels failed"; return 2; }
    touch "$SITE/.gpu_check_installed"
  fi
  # cupy (installed there) would be picked up by Jittor's init_cupy: block it, as on a user's machine
  mkdir -p /tmp/block/cupy
  echo 'raise ImportError("cupy blocked by bench/gpu_check/run.sh (jittor-sbvsr GPU check)")' > /tmp/block/cupy/__init__.py
  export PYTHONPATH=$SITE:/tmp/block:$G${PYTHONPATH:+:$PYTHONPATH}
  "$PY" - <<'EOF'
import importlib
for m in ('numpy', 'scipy', 'scipy.ndimage', 'PIL', 'imageio', 'skimage', 'pytest', 'astunparse', 'six'):
    try:
        mod = importlib.import_module(m)
        print(f'  {m:14s} {getattr(mod, "__version__", "")}  {getattr(mod, "__file__", "")}')
    except Exception as e:
        print(f'  {m:14s} IMPORT FAILED: {type(e).__name__}: {e}')
try:
    import skimage.data
    print('  skimage.data.astronaut():', skimage.data.astronaut().shape, '(bench clip needs it)')
except Exception as e:
    print('  skimage.data FAILED (bench will fail):', type(e).__name__, e)
import numpy
assert numpy.__version__ == '1.26.4', 'numpy 1.26.4 does not shadow the venv numpy'
EOF
  [ $? = 0 ] || { echo "FATAL: numpy 1.26.4 not active"; return 2; }

  # ---- 2. Python headers for Jittor's C++ core (it asks python3.X-config) ----
  echo "=== $(ts) Python headers"
  python3-config --includes 2>&1 | head -1 || true
  local pyinfo
  pyinfo=$("$PY" - <<'EOF'
import os, subprocess, sys, sysconfig
m = sys.version_info.minor
ex = os.path.dirname(sys.executable)
cands = [f'{ex}/python3.{m}-config', sys.executable + '-config', f'/usr/bin/python3.{m}-config',
         f'/usr/local/bin/python3.{m}-config', f'{ex}/python3-config']
cfg = next((c for c in cands if os.path.isfile(c)), '')
ok = False
if cfg:
    inc = subprocess.run([cfg, '--includes'], capture_output=True, text=True).stdout.split()
    ok = any(os.path.isfile(os.path.join(i[2:], 'Python.h')) for i in inc if i.startswith('-I'))
    print('# config', cfg, 'includes', ' '.join(inc), 'Python.h found:', ok, file=sys.stderr)
inc = sysconfig.get_paths()['include']
print('OK' if ok else 'FAKE', cfg or '-', inc if os.path.isfile(os.path.join(inc, 'Python.h')) else '-',
      sysconfig.get_config_var('EXT_SUFFIX'), f'3.{m}')
EOF
)
  echo "  $pyinfo"
  read -r pstate pcfg pinc psuffix pver <<<"$pyinfo"
  if [ "$pstate" != OK ]; then
    if [ "$pinc" = - ] || [ -n "${FORCE_CARRIED_PYH:-}" ]; then
      mkdir -p /tmp/pyinc && tar xzf "$FILES/py312-include.tar.gz" -C /tmp/pyinc
      pinc=/tmp/pyinc/python3.12
      echo "  no Python.h on the machine: using carried CPython 3.12.1 headers ($pinc)"
      [ "$pver" = 3.12 ] || echo "  WARNING: carried headers are 3.12, python is $pver"
    fi
    mkdir -p /tmp/pycfg
    cat > "/tmp/pycfg/python$pver-config" <<EOF
#!/bin/sh
case "\$1" in --includes) echo "-I$pinc";; --extension-suffix) echo "$psuffix";; *) echo "";; esac
EOF
    chmod +x "/tmp/pycfg/python$pver-config"
    export python_config_path=/tmp/pycfg/python$pver-config
    echo "  python_config_path=$python_config_path -> $($python_config_path --includes) $($python_config_path --extension-suffix)"
  fi
  echo '#include <Python.h>
int main(){return 0;}' > /tmp/pyh.cc
  rm -f /tmp/pyh.o
  g++ -c /tmp/pyh.cc -o /tmp/pyh.o $( ${python_config_path:-$pcfg} --includes ) 2>&1 | head -5
  [ -f /tmp/pyh.o ] || { echo "FATAL: g++ cannot compile #include <Python.h>"; return 2; }
  echo "  g++ + Python.h: ok"

  # ---- 3. CUDA home for Jittor + compatibility patches of the installed Jittor ----
  echo "=== $(ts) Jittor CUDA setup"
  timeout 60 "$PY" "$G/jt_cuda_setup.py" --site "$SITE" --home /tmp/jtcuda --env-file /tmp/jtenv.sh \
    || { echo "FATAL: jt_cuda_setup.py failed"; return 2; }
  # shellcheck disable=SC1091
  source /tmp/jtenv.sh
  echo "  LD_LIBRARY_PATH=$LD_LIBRARY_PATH nvcc_path=$nvcc_path"
  command -v nvcc >/dev/null || export PATH=/tmp/jtcuda/bin:$PATH   # tests look for nvcc on PATH

  local failed=0
  # ---- 4. smoke test: builds Jittor's core with CUDA (minutes), then tiny ops on the GPU ----
  if want smoke; then
    step smoke 240 "$PY" "$G/smoke.py"; rc=$?
    if grep -q "please rerun" /tmp/step_smoke.log; then   # Jittor exits 0 after rebuilding jit_utils
      step smoke_retry 200 "$PY" "$G/smoke.py"; rc=$?
    fi
    if ! grep -q "^\[smoke .*\] jittor 1.3.8.5" /tmp/step_smoke*.log; then
      echo "=== Jittor did not import with CUDA: later steps would only rebuild it again; stopping."
      echo "rest: not run (Jittor import failed)" >> "$SUMMARY_FILE"; return 1
    fi
    [ $rc = 0 ] || failed=1
    if grep -q "FAIL .*conv2d" /tmp/step_smoke*.log; then   # is it cuDNN's default TF32 math?
      NVIDIA_TF32_OVERRIDE=0 SMOKE_ONLY=conv,matmul step smoke_conv_tf32_off 90 "$PY" "$G/smoke.py"
    fi
  fi

  # ---- 5. correlation op: the project's CUDA test (CPU vs GPU) + bigger shapes ----
  if want corr; then
    step corr_pytest 90 "$PY" -m pytest -q -rs -p no:cacheprovider tests/test_correlation.py \
      -k "cuda_matches_cpu or cuda_source_compiles" || failed=1
    grep -q "skipped" /tmp/step_corr_pytest.log && echo "NOTE: a CUDA test was SKIPPED (see reason above)"
    step corr_check 60 "$PY" "$G/corr_check.py" || failed=1
  fi

  # ---- 6. public parity case (and the other correlation tests) with Jittor on CUDA ----
  local parity_rc=0
  if want parity; then
    step parity 180 "$PY" -m pytest -q -rs -p sbvsr_cuda_plugin -o cache_dir=/tmp/pytest_cache \
      tests/test_correlation.py tests/test_parity.py \
      -k "not emulated and not cuda_source_compiles and not cuda_matches_cpu"; parity_rc=$?
    [ $parity_rc = 0 ] || failed=1
  fi

  # ---- 7. end-to-end CLI on the public case's LR folder (cached kernels from step 6) ----
  if want cli; then
    rm -rf /tmp/cli_out
    step cli_weights 60 "$PY" "$G/make_recipe.py" "$SBVSR_REFERENCE" /tmp/recipe_seed1234.pkl || failed=1
    step cli 120 "$PY" inference.py --input_path "$SBVSR_REFERENCE/public_case/LR" \
      --gt_path "$SBVSR_REFERENCE/public_case/HR" --model_path /tmp/recipe_seed1234.pkl \
      --result_path /tmp/cli_out --infer_flag gpu_check --border --save_kernel --device cuda || failed=1
    cp /tmp/cli_out/infer_gpu_check/inference_log_*.txt "$OUT/cli_infer_log.txt" 2>/dev/null
    echo "upstream (reference) total: PSNR 20.76501 SSIM 0.45127 over 14 frames"
  fi

  # ---- 8. speed benchmark on CUDA ----
  if want bench; then
    step bench 200 "$PY" bench/infer_speed.py --lr-size 180x320 --frames 7 --device cuda \
      --configs "${BENCH_CONFIGS:-reuse}" --threads 8 --json "$OUT/bench_cuda.json" || failed=1
  fi

  # ---- 9. only if parity failed: the same tests again with TF32 forced off (cuDNN's default math) ----
  if want tf32 && want parity && [ "$parity_rc" != 0 ] && [ "$parity_rc" != 124 ] && [ "$parity_rc" != 137 ]; then
    NVIDIA_TF32_OVERRIDE=0 step parity_tf32_off 150 "$PY" -m pytest -q -rs -p sbvsr_cuda_plugin \
      -o cache_dir=/tmp/pytest_cache --lf tests/test_correlation.py tests/test_parity.py \
      -k "not emulated and not cuda_source_compiles and not cuda_matches_cpu"
  fi
  return $failed
}

main 2>&1 | tee "$OUT/log.txt"
rc=${PIPESTATUS[0]}
{
  echo "=== $(ts) SUMMARY (exit $rc)"
  sed 's/^/  /' "$SUMMARY_FILE"
  command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.used,memory.total --format=csv,noheader 2>&1 | head -2
  ls -la "$OUT"
} 2>&1 | tee -a "$OUT/log.txt"
exit "$rc"
