#!/usr/bin/env bash
# `make gpu-check`: the GPU path checked on a machine with an NVIDIA GPU, in one script, in under 6 minutes.
#
# Uses the CUDA build of torch already installed there (GPU_PYTHON, python3 by default): nothing is
# downloaded and torch is not pinned. Fails loudly when a GPU is listed but that torch cannot use it.
# Steps: the GPU-marked tests (page-locking probe: return codes, slot reuse under driver churn, frames
# intact; placement; the example against the model), the example at full size, then bench_gpu.py, which
# writes its figures and the GPU's name between the bench:gpu markers of docs/performance.md, then
# bench_gpu_host.py (the pipeline before a simulated GPU on this host, into the log), then the GPU decoder
# check and bench_cameras.py (decode probe, many cameras; bench:cameras markers). Those last two never stop
# the check: a decoder that is absent or fails is reported (which, why) and the CPU path measured.
#
# Environment:
#   GPU_PYTHON     the Python holding torch with CUDA (default python3)
#   GPU_VENV       virtualenv made from it with --system-site-packages (default /tmp/rvai-gpu-venv)
#   GPU_WHEELS     folder of wheels for what that Python lacks (default .whl: multiprocess, dill; av,
#                  sqlalchemy, greenlet, typing_extensions, nvidia-ml-py for the many-camera benchmark;
#                  pynvvideocodec, optional, for its rows in the decode probe)
#   GPU_OUT        if set, the log and docs/performance.md are copied there at the end
#   GPU_SECONDS    length of each bench_gpu.py window (default 5; 12 windows: 64 and 128 streams, and 64 with
#                  4 frames of each in flight as SourceSinkDriver sends a camera's; concurrency 1/2; the model
#                  as a CUDA graph and eagerly)
#   CAMERAS_BUDGET seconds bench_cameras.py may take (default 150)
#   CAMERAS_STREAMS camera counts bench_cameras.py tries, growing (default 8,16,24,32,48,64)
#   GPU_LIST_CMD   how GPUs are listed (default: /dev/nvidia<N> device files, else nvidia-smi -L)
#
# `gpu_check.sh --torch-only` (what `make venv` runs) stops after the first step, and passes where no GPU is listed.
# `gpu_check.sh --decode` runs only the decode steps (the GPU decode tests and bench_cameras.py), about 3 minutes.
set -uo pipefail
MODE=${1:-all}
cd "$(dirname "$0")/.."

GPU_PYTHON=${GPU_PYTHON:-python3}
GPU_VENV=${GPU_VENV:-/tmp/rvai-gpu-venv}
GPU_WHEELS=${GPU_WHEELS:-.whl}
GPU_SECONDS=${GPU_SECONDS:-5}
CAMERAS_BUDGET=${CAMERAS_BUDGET:-150}
CAMERAS_STREAMS=${CAMERAS_STREAMS:-8,16,24,32,48,64}
LATE=()  # steps after bench_gpu.py that failed: reported, the check goes on
GPU_LIST_CMD=${GPU_LIST_CMD:-'ls /dev/nvidia[0-9]* 2>/dev/null || nvidia-smi -L 2>/dev/null'}
LOG=$(mktemp /tmp/gpu-check.XXXXXX.log)
START=$SECONDS

fail() { echo "gpu-check FAILED: $*" | tee -a "$LOG" >&2; finish 1; }
finish() {
    [ "$MODE" = --torch-only ] && exit "$1"
    if [ -n "${GPU_OUT:-}" ]; then mkdir -p "$GPU_OUT" && cp "$LOG" "$GPU_OUT/gpu-check.log" && cp docs/performance.md "$GPU_OUT/"; fi
    echo "gpu-check: $(( SECONDS - START )) s; log in $LOG" >&2
    exit "$1"
}
step() { echo; echo "== $* ($(( SECONDS - START )) s)" | tee -a "$LOG"; }

step "the GPU and the torch that must use it"
listed=$(bash -c "$GPU_LIST_CMD")
[ -n "$listed" ] || [ "$MODE" != --torch-only ] || exit 0
[ -n "$listed" ] || fail "no NVIDIA GPU is listed on this machine (no /dev/nvidia<N>, no nvidia-smi -L output); gpu-check needs one"
echo "$listed" | tee -a "$LOG"
probe=$("$GPU_PYTHON" - 2>&1 <<'EOF'
import sys
try:
    import torch
except Exception as exc:
    print(f"torch cannot be imported: {exc}"); sys.exit(3)
if not torch.version.cuda:
    print(f"torch {torch.__version__} is a CPU-only build"); sys.exit(3)
if not torch.cuda.is_available():
    print(f"torch {torch.__version__} (CUDA {torch.version.cuda}) sees no usable GPU (driver too old, or CUDA_VISIBLE_DEVICES hides it)"); sys.exit(3)
print(f"torch {torch.__version__}, CUDA {torch.version.cuda}, {torch.cuda.device_count()} GPU(s)")
print(f"{torch.cuda.get_device_name(0)} (torch {torch.__version__}, CUDA {torch.version.cuda})")
EOF
)
rc=$?
echo "$probe" | tee -a "$LOG"
[ $rc -eq 0 ] || fail "a GPU is listed but $GPU_PYTHON's torch cannot use it: ${probe##*$'\n'}. Install a CUDA build of torch, or run with GPU_PYTHON=<the Python that has one>"
[ "$MODE" = --torch-only ] && exit 0
export RVAI_GPU_NAME="${probe##*$'\n'}"

step "a virtualenv over $GPU_PYTHON's packages (its torch, no download), with rvai_sdk installed editable"
if [ ! -x "$GPU_VENV/bin/python" ]; then
    "$GPU_PYTHON" -m venv --system-site-packages "$GPU_VENV" || fail "could not make $GPU_VENV"
    # --system-site-packages reaches the base interpreter's packages only. Where GPU_PYTHON is itself a
    # virtualenv (the lent GPU machines' python3 is /opt/torch/.venv/bin/python3), its own site-packages,
    # where torch is, would be missing: a .pth file in the new venv adds them, after the venv's own.
    purelib=$("$GPU_VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
    "$GPU_PYTHON" -c 'import site; print("\n".join(site.getsitepackages()))' >"$purelib/_gpu_python.pth" \
        || fail "could not list $GPU_PYTHON's site-packages"
fi
PY="$GPU_VENV/bin/python"
find_links=()
[ -d "$GPU_WHEELS" ] && find_links=(--find-links "$GPU_WHEELS")
missing=$("$PY" -c "
import importlib.util as u
print(' '.join(m for m in ('multiprocess', 'dill', 'attrs', 'networkx', 'numpy') if u.find_spec(m) is None))")
if [ -n "$missing" ]; then
    "$PY" -m pip install -q --no-index "${find_links[@]}" $missing 2>&1 | tee -a "$LOG" \
        || fail "missing $missing and no wheels for them in $GPU_WHEELS (download them where pip works: see docs/guides/gpu_batching.md)"
fi
if ! "$PY" -m pip install -q --no-index --no-deps --no-build-isolation -e . >>"$LOG" 2>&1; then
    echo "editable install not possible offline here: rvai_sdk taken from the checkout through PYTHONPATH" | tee -a "$LOG"
    export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
fi
# what the many-camera benchmark needs (PyAV, SQLAlchemy, NVML; PyNvVideoCodec for its probe rows): a failure here
# only skips that benchmark (or those rows)
for mod_pkg in av:av sqlalchemy:sqlalchemy pynvml:nvidia-ml-py PyNvVideoCodec:pynvvideocodec; do
    if ! "$PY" -c "import ${mod_pkg%%:*}" 2>/dev/null; then
        if "$PY" -m pip install -q --no-index "${find_links[@]}" "${mod_pkg##*:}" >>"$LOG" 2>&1; then
            echo "installed ${mod_pkg##*:} from $GPU_WHEELS" | tee -a "$LOG"
        else
            echo "could not install ${mod_pkg##*:} from $GPU_WHEELS (see the log): what needs it is reported, not run" | tee -a "$LOG"
        fi
    fi
done
"$PY" -c "import rvai_sdk.runtime, torch; assert torch.cuda.is_available()" 2>&1 | tee -a "$LOG" || fail "rvai_sdk does not import in $GPU_VENV"
"$PY" -c "from rvai_sdk.runtime._devices import machine_gpus; [print('driver lists', g) for g in machine_gpus()]" 2>&1 | tee -a "$LOG"

# the repo's pytest options need plugins a bare GPU machine lacks (nbmake), and filterwarnings = error would
# turn any warning of that machine's newer torch into a failure: neither is what this check is about
PYTEST=("$PY" -m pytest -o addopts= -p no:cacheprovider -W default --strict-markers -q -rs --timeout 400)

if [ "$MODE" != --decode ]; then
step "GPU-marked tests: page-locking probe, the example against the model, torch cells on the GPU"
"${PYTEST[@]}" -m gpu tests/integration/test_gpu_pinning.py tests/examples/test_gpu_classifier.py \
    tests/integration/test_local_runtime.py 2>&1 | tee -a "$LOG" | tee /tmp/gpu-check-tests.txt
[ "${PIPESTATUS[0]}" -eq 0 ] || fail "GPU-marked tests failed"
grep -q "skipped" /tmp/gpu-check-tests.txt && fail "GPU-marked tests were skipped on a GPU machine (see the reasons above)"

step "placement without nvidia-smi on the PATH, and the one-rule GPU need"
"${PYTEST[@]}" tests/integration/test_gpu_placement.py -k "not ray" 2>&1 | tee -a "$LOG"
[ "${PIPESTATUS[0]}" -eq 0 ] || fail "placement tests failed"

step "the example at full size: 128 streams of 480x640 frames, 224x224 model input, concurrency 2"
EXAMPLE_OUT=$(mktemp /tmp/gpu-example.XXXXXX.txt)
timeout 240 "$PY" examples/gpu_classifier.py --runtime local --streams 128 --frames 20 --height 480 --width 640 \
    --size 224 2>&1 | tee "$EXAMPLE_OUT" | tail -n 4 | tee -a "$LOG"
[ "${PIPESTATUS[0]}" -eq 0 ] || fail "the example failed"

step "bench_gpu.py: 64, 128 and 64x4 streams at concurrency 1 and 2, CUDA graph and eager, one common window each, into docs/performance.md"
timeout 330 "$PY" benchmarks/bench_gpu.py --seconds "$GPU_SECONDS" --write docs/performance.md \
    --example-output "$EXAMPLE_OUT" 2>&1 | tee -a "$LOG"
[ "${PIPESTATUS[0]}" -eq 0 ] || fail "bench_gpu.py failed (or its self-check did)"

step "bench_gpu_host.py: the same pipeline in front of a simulated GPU, on this host's CPUs (the SDK's share; log only)"
timeout 120 "$PY" benchmarks/bench_gpu_host.py --streams 128,64x4 --concurrency 1 --seconds 3 --rounds 1 2>&1 | tail -n 8 | tee -a "$LOG"
[ "${PIPESTATUS[0]}" -eq 0 ] || LATE+=("bench_gpu_host.py (or its self-check)")

fi  # --decode: only the steps below

step "VideoSource on the GPU: decode='cuda' gives the CPU's frames, or falls back with the reason (reported, not fatal)"
if "$PY" -c "import av" 2>/dev/null; then
    "${PYTEST[@]}" -m gpu -rA tests/integration/test_gpu_decode.py 2>&1 | tail -n 15 | tee -a "$LOG"
    [ "${PIPESTATUS[0]}" -eq 0 ] || LATE+=("the GPU decode test")
else
    echo "not run: PyAV missing" | tee -a "$LOG"; LATE+=("the GPU decode test (PyAV missing)")
fi

step "bench_cameras.py: decode probe, then 1080p30 cameras -> GPU -> SQLite for growing N (budget ${CAMERAS_BUDGET} s)"
if "$PY" -c "import av, sqlalchemy" 2>>"$LOG"; then
    timeout $(( CAMERAS_BUDGET + 60 )) "$PY" benchmarks/bench_cameras.py --budget "$CAMERAS_BUDGET" --streams "$CAMERAS_STREAMS" \
        --write docs/performance.md 2>&1 | tee -a "$LOG"
    [ "${PIPESTATUS[0]}" -eq 0 ] || LATE+=("bench_cameras.py (or its self-check)")
else
    echo "bench_cameras.py not run: PyAV or SQLAlchemy missing (wheels in $GPU_WHEELS?)" | tee -a "$LOG"
    LATE+=("bench_cameras.py (not run: PyAV or SQLAlchemy missing)")
fi

step "done"
if [ ${#LATE[@]} -gt 0 ]; then
    echo "gpu-check: the GPU path passed; these later steps failed (see above): ${LATE[*]}" | tee -a "$LOG" >&2
    finish 1
fi
finish 0
