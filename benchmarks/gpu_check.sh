#!/usr/bin/env bash
# Issue #17's figures in one run on one GPU, at the real sizes with random weights (Qwen2.5-7B bf16,
# CosyVoice2-0.5B voice LM, flow + HiFT): per-block decode times (d_llm, d_lm, d_syn), the first packet
# (measured, MinMo's formula, the critical path), batch 1/8/32 lockstep throughput and first packets, peak
# memory, eager and compiled (CUDA graphs), a torch.profiler trace of isolated vs in-pipeline LLM steps, and a
# full-size stage-1c training step's seconds and MFU. Under 8 minutes on one H100.
#
#   bash benchmarks/gpu_check.sh                # full size on the GPU
#   PRESET=tiny bash benchmarks/gpu_check.sh    # the same steps at tiny size (CPU: under a minute; the
#                                               # compiled stage needs CUDA, tests/test_compiled_decode.py
#                                               # covers it on a CPU)
#
# OUT (default benchmarks/results/gpu_check-<time>) receives six files: gpu_check.json (every figure, the
# missing ones listed), gpu_check.log, RESULTS_section.md (also appended to RESULTS, default
# benchmarks/RESULTS.md), profile_summary.txt, trace_isolated.json.gz, trace_pipeline.json.gz. A stage that
# fails or runs out of its time is reported missing; the others still run. PYTHON picks the interpreter
# (default: .venv/bin/python if present, else python3). Where that Python lacks this package or a recent
# enough transformers, the wheels in .whl/ (carried along) and this checkout are installed under /tmp first.
# STAGES (default "eager train compiled"; "duplex" adds a 3-minute DuplexSession, best as its own call) and
# LIMITS (seconds per stage, in that order) allow a partial rerun.
set -uo pipefail
cd "$(dirname "$0")/.."
PRESET=${PRESET:-full}
OUT=${OUT:-benchmarks/results/gpu_check-$(date +%Y%m%d-%H%M%S)}
RESULTS=${RESULTS:-benchmarks/RESULTS.md}
if [ -x .venv/bin/python ]; then PY=${PYTHON:-.venv/bin/python}; else PY=${PYTHON:-python3}; fi
WORK=$(mktemp -d)
mkdir -p "$OUT"
exec > >(tee -a "$OUT/gpu_check.log") 2>&1
export PYTHONUNBUFFERED=1

say() { echo "[gpu_check $(date +%T)] $*"; }

ready() {
    "$PY" - <<'PY' 2>/dev/null
import transformers
import minmo_lightning.components.llm.captured_step  # noqa: F401
assert tuple(int(x) for x in transformers.__version__.split(".")[:2]) >= (5, 24), transformers.__version__
PY
}

# stage NAME SECONDS COMMAND...: run one stage under a time limit; a failure is reported, not fatal
stage() {
    local name=$1 limit=$2
    shift 2
    say "$name: at most ${limit} s: $*"
    timeout --kill-after=10 "$limit" "$@"
    say "$name: exit $? ($( [ -f "$WORK/$name.json" ] && echo figures written || echo no figures))"
}

if ! ready; then
    say "installing .whl/*.whl and this checkout under /tmp/minmo_site (this Python lacks them)"
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-build-isolation --target /tmp/minmo_site \
        .whl/*.whl . || say "install failed"
    export PYTHONPATH=/tmp/minmo_site${PYTHONPATH:+:$PYTHONPATH}
    ready || { say "cannot import minmo_lightning with transformers >= 5.24: carry .whl (benchmarks/RESULTS.md)"; exit 1; }
fi
"$PY" -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__)"
CUDA=$("$PY" -c "import torch; print(int(torch.cuda.is_available()))")
[ "$CUDA" = 1 ] && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader

if [ "$PRESET" = tiny ]; then
    SIZE=tiny LATENCY=(--batches 1 8 32 --chunks 2 --repeats 1) DEFAULT_LIMITS="120 120 240 120"
    TRAIN=(--recipe recipes/tiny/stage1c_sft.yaml --seconds-per-batch 8 --clip-seconds 4 --steps 2)
else
    SIZE=full LATENCY=(--batches 1 8 32 --chunks 6 --repeats 3) DEFAULT_LIMITS="150 100 230 300"
    TRAIN=(--recipe recipes/minmo/stage1c_sft.yaml --clip-seconds 20 --steps 3)
fi
# STAGES picks stages (e.g. STAGES=compiled LIMITS="0 0 420" for a rerun); LIMITS: seconds per stage.
# The duplex stage (issue #14: a DuplexSession over DUPLEX_MINUTES, default 3, the recipe's dtypes) is not in the
# default set, which fills one 10-minute device call: run it as its own call, STAGES=duplex.
read -r -a LIMIT <<<"${LIMITS:-$DEFAULT_LIMITS}"
STAGES=${STAGES:-eager train compiled}
[ "$CUDA" = 1 ] || { STAGES=${STAGES/compiled/}; say "compiled: skipped (no CUDA device: CUDA graphs need one)"; }

PARTS=()
for name in $STAGES; do PARTS+=("$name=$WORK/$name.json"); done
case " $STAGES " in *" eager "*)
    stage eager "${LIMIT[0]}" "$PY" benchmarks/response_latency.py --size "$SIZE" "${LATENCY[@]}" \
        --profile "$OUT" --json "$WORK/eager.json" ;;
esac
case " $STAGES " in *" train "*)
    stage train "${LIMIT[1]}" "$PY" benchmarks/gpu_check.py train "${TRAIN[@]}" --json "$WORK/train.json" ;;
esac
case " $STAGES " in *" compiled "*)
    stage compiled "${LIMIT[2]}" "$PY" benchmarks/response_latency.py --size "$SIZE" --compile "${LATENCY[@]}" \
        --json "$WORK/compiled.json" ;;
esac
case " $STAGES " in *" duplex "*)
    stage duplex "${LIMIT[3]}" "$PY" benchmarks/duplex_session.py --size "$SIZE" --minutes "${DUPLEX_MINUTES:-3}" \
        --json "$WORK/duplex.json" ;;
esac
"$PY" benchmarks/gpu_check.py report --out "$OUT" --results "$RESULTS" --preset "$PRESET" "${PARTS[@]}"
say "done: $OUT"
