#!/usr/bin/env bash
# The one prepared pass over everything that needs a GPU (issue 13; README "Reproducing the paper"):
# the CUDA tests, the nHSIC benchmark and the training throughput benchmark, each under its own time
# limit so the whole pass ends within about 8 minutes of device time, each writing its log to OUTDIR.
#
#   bash benchmarks/gpu_check.sh [OUTDIR]      # OUTDIR defaults to $OUT, else results/gpu_check
#
# PYTHON picks the interpreter (default: .venv/bin/python if it exists, else python3). It needs
# torch with CUDA, pandas, tqdm and pytest; mlxtend, papermill and jupyter are not needed. With two or
# more GPUs it adds a 2-process torchrun (nccl) run of the quick preset on random CIFAR-format data.
# Without a CUDA GPU it says so and exits 1 after writing env.txt.
set -u
OUTDIR=${1:-${OUT:-results/gpu_check}}
mkdir -p "$OUTDIR"
if [ -z "${PYTHON:-}" ]; then
  if [ -x .venv/bin/python ]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
T_TESTS=${T_TESTS:-120} T_HSIC=${T_HSIC:-60} T_TRAIN=${T_TRAIN:-240} T_DDP=${T_DDP:-90}

{
  date -u
  git rev-parse --short HEAD 2>/dev/null
  command -v nvidia-smi >/dev/null && nvidia-smi
  "$PYTHON" - <<'PY'
import importlib, sys
import torch
print("python", sys.version.split()[0], "| torch", torch.__version__, "| cuda", torch.version.cuda,
      "| GPUs", torch.cuda.device_count(), "| bf16", torch.cuda.is_available()
      and torch.cuda.is_bf16_supported())
for name in ("torchvision", "numpy", "pandas", "tqdm", "pytest", "mlxtend"):
    try:
        print(name, importlib.import_module(name).__version__)
    except Exception as exc:  # missing is reported, not fatal
        print(name, "missing:", exc)
PY
} >"$OUTDIR/env.txt" 2>&1
cat "$OUTDIR/env.txt"
GPUS=$("$PYTHON" -c "import torch; print(torch.cuda.device_count())" 2>/dev/null || echo 0)
if [ "$GPUS" = "0" ]; then
  echo "gpu_check: no CUDA GPU visible to $PYTHON; nothing to check (see $OUTDIR/env.txt)" >&2
  exit 1
fi

status=0
step() {  # step NAME SECONDS COMMAND...: run with a time limit, log to OUTDIR/NAME.txt
  local name=$1 limit=$2; shift 2
  echo "== $name (limit ${limit}s): $*"
  local start=$SECONDS
  timeout --kill-after=10 "$limit" "$@" >"$OUTDIR/$name.txt" 2>&1
  local rc=$?
  tail -n 40 "$OUTDIR/$name.txt"
  echo "== $name: exit $rc after $((SECONDS - start)) s" | tee -a "$OUTDIR/summary.txt"
  [ $rc -eq 0 ] || status=1
}

# only the files that hold CUDA tests: the others import notebook tooling a GPU image may lack
step pytest_cuda "$T_TESTS" "$PYTHON" -m pytest -m cuda -q -rs -p no:cacheprovider \
  tests/test_hsic.py tests/test_device.py tests/test_bench_training.py tests/test_cuda_training.py
step bench_hsic "$T_HSIC" "$PYTHON" benchmarks/bench_hsic.py --device cuda --quick
step bench_training "$T_TRAIN" "$PYTHON" benchmarks/bench_training.py --device cuda \
  --only throughput --n 20000 --repeats 2
if [ "$GPUS" -ge 2 ]; then  # one run trained by 2 GPUs (nccl, bf16, channels-last, SyncBatchNorm)
  DDP=${TMPDIR:-/tmp}/ibstudy_gpu_check
  rm -rf "$DDP" && mkdir -p "$DDP"
  PYTHONPATH="$PWD/tests:$PYTHONPATH" "$PYTHON" -c "from pathlib import Path
from test_data import _write_cifar10
_write_cifar10(Path('$DDP/data'), n=2000)"  # CIFAR-10's on-disk format, random images
  step torchrun_2gpu "$T_DDP" "$PYTHON" -m torch.distributed.run --standalone --nproc_per_node 2 \
    -m ibstudy train --preset quick --dataset cifar10 --data-root "$DDP/data" --model resnet18 \
    --width 0.25 --epochs 2 --device cuda --amp true --channels-last true --sync-bn true \
    --results-dir "$DDP/runs" --run-name ddp --no-progress
fi
echo "gpu_check: done, logs in $OUTDIR (exit $status)"
exit $status
