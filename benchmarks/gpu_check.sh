#!/usr/bin/env bash
# One check of a machine with an NVIDIA GPU, at most 8 minutes, all figures into one JSON file:
# installs the CUDA jax extra (jax[cuda12] at the installed jax's version), then HF parity on the
# GPU, train-step MFU (0.5B shape, bf16), decode tokens/s and one GRPO step of
# configs/qwen2_5_0_5b_gpu.py (benchmarks/gpu_check.py; benchmarks/README.md explains each figure).
#
#   bash benchmarks/gpu_check.sh [--dry] [--out=FILE]     # FILE defaults to ./gpu_check.json
#
# --dry: no install, every stage at toy size on CPU (the same code path; < 1 min on 2 cores).
# Each stage runs in its own process under `timeout`; one that fails or times out has its error in
# the JSON and the next stage runs. Exit status: 0 = every stage passed, 1 = some stage failed,
# 2 = bad arguments or no nvidia-smi (without --dry). PYTHON picks the interpreter (default python).
set -u

DRY=0
OUT=gpu_check.json
for arg in "$@"; do
  case "$arg" in
    --dry) DRY=1 ;;
    --out=?*) OUT="${arg#--out=}" ;;
    -h | --help) sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "gpu_check.sh: unknown argument '$arg' (use --dry and/or --out=FILE)" >&2; exit 2 ;;
  esac
done
if [ "$DRY" = 0 ] && ! command -v nvidia-smi >/dev/null 2>&1; then
  echo "gpu_check.sh: nvidia-smi not found on PATH: run this on a machine with an NVIDIA GPU and driver, or use --dry for the CPU path" >&2
  exit 2
fi
case "$OUT" in /*) ;; *) OUT="$PWD/$OUT" ;; esac
PY="${PYTHON:-python}"
cd "$(dirname "$0")/.." || exit 2
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export CUDA_VISIBLE_DEVICES="${CUDA_VISIBLE_DEVICES:-0}"  # one GPU: the configs' 1x1x1 mesh
rm -f "$OUT"

BUDGET=480   # seconds for the whole script
RESERVE=20   # kept back for the report
KILL_AFTER=5 # timeout(1) sends KILL this long after TERM
RESULTS=""

# run_limited NAME LIMIT CMD...: runs CMD under min(LIMIT, what the budget has left); appends
# NAME:STATUS:SECONDS:LIMIT to RESULTS (status 124/137: timed out; 200: no time was left).
run_limited() {
  local name=$1 want=$2 t0=$SECONDS rc
  shift 2
  local left=$((BUDGET - RESERVE - KILL_AFTER - SECONDS))
  local limit=$((want < left ? want : left))
  if [ "$limit" -lt 5 ]; then
    rc=200
  else
    echo "== $name (limit ${limit} s)"
    timeout -k "$KILL_AFTER" "$limit" "$@"
    rc=$?
  fi
  RESULTS="${RESULTS:+$RESULTS,}$name:$rc:$((SECONDS - t0)):$limit"
}

if [ "$DRY" = 1 ]; then
  export JAX_PLATFORMS="${JAX_PLATFORMS:-cpu}"
  STAGE_FLAGS=(--dry)
  RESULTS="install:0:0:0"
  INSTALL_NOTE="skipped (--dry)"
else
  STAGE_FLAGS=()
  JAX_VERSION=$("$PY" -c 'import jax; print(jax.__version__)') || {
    echo "gpu_check.sh: '$PY' cannot import jax: install this repository first (pip install -e .)" >&2
    exit 2
  }
  GPU=$(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>&1 | head -1)
  INSTALL_NOTE="pip install jax[cuda12]==$JAX_VERSION; nvidia-smi: $GPU"
  run_limited install 150 "$PY" -m pip install --quiet --disable-pip-version-check \
    "jax[cuda12]==$JAX_VERSION"
fi

run_limited parity 60 "$PY" -m benchmarks.gpu_check --stage=parity --out="$OUT" "${STAGE_FLAGS[@]}"
run_limited train_step 90 "$PY" -m benchmarks.gpu_check --stage=train_step --out="$OUT" "${STAGE_FLAGS[@]}"
run_limited decode 60 "$PY" -m benchmarks.gpu_check --stage=decode --out="$OUT" "${STAGE_FLAGS[@]}"
run_limited grpo 100 "$PY" -m benchmarks.gpu_check --stage=grpo --out="$OUT" "${STAGE_FLAGS[@]}"

JAX_PLATFORMS=cpu timeout -k 2 "$RESERVE" "$PY" -m benchmarks.gpu_check --stage=report \
  --out="$OUT" --results="$RESULTS" --install_note="$INSTALL_NOTE"
rc=$?
echo "gpu_check.sh: ${SECONDS} s in all (budget ${BUDGET} s); exit status $((rc == 0 ? 0 : 1))"
exit $((rc == 0 ? 0 : 1))
