#!/usr/bin/env bash
# prefloop against TRL 1.16 on one CUDA GPU, offline, in one call of under 8 minutes (installs included).
#
#   bash bench/wheels.sh                 # beforehand, on a machine with an index: bench/wheels/ (git-ignored)
#   bash bench/gpu_check.sh [OUT_DIR]    # on the CUDA machine (the device runner: carry=["bench/wheels"])
#   bash bench/gpu_check.sh --cpu [OUT]  # the same steps on this CPU with tiny shapes (checks the script)
#
# No package index and no model hub are needed: what the image lacks (trl, datasets, ollama, pydantic, jsonlines,
# bitsandbytes, ...) installs from bench/wheels; models of real shapes with random weights (SmolLM2-135M,
# Llama-3.2-1B, Llama-3.1-8B; bench/gpu_bench.py) are built on the GPU; the data are the seed pairs beside the
# checkout, or synthetic pairs. Both sides run bench/train.py's sides on the same batches in the same order, bf16.
# Each check has its own time limit and writes its JSON as soon as it ends; at most 8 files land in OUT_DIR
# (default $OUT, the runner's folder, else ./gpu-check-out): log.txt, peak.json (the bf16 matmul peak measured
# here, and the packed-attention check: dense mask vs flex block mask, gradients and speed), one JSON per check,
# figures.md (first-step and steady tokens/s, MFU, peak GPU memory, loss and log-prob differences against TRL).
set -uo pipefail

MODE=gpu
[ "${1:-}" = "--cpu" ] && { MODE=cpu; shift; }
cd "$(dirname "$0")/.."
ROOT=$PWD
OUT=${1:-${OUT:-$ROOT/gpu-check-out}}
mkdir -p "$OUT"
WORK=${GPU_CHECK_WORK:-${TMPDIR:-/tmp}/prefloop-gpu-check}   # models, installed wheels, stderr: never in OUT
mkdir -p "$WORK"
START=$(date +%s)
log() { echo "[gpu_check +$(( $(date +%s) - START ))s] $*" | tee -a "$OUT/log.txt"; }
export HF_HUB_OFFLINE=1 HF_HUB_DISABLE_TELEMETRY=1 TOKENIZERS_PARALLELISM=false TQDM_DISABLE=1
export PYTHONPATH=$ROOT${PYTHONPATH:+:$PYTHONPATH}

# ------------------------------------------------------------------------------------------ 1. python
if [ "$MODE" = cpu ]; then
    PY=${PYTHON:-}
    [ -z "$PY" ] && [ -x "$ROOT/.venv/bin/python" ] && PY=$ROOT/.venv/bin/python
    [ -z "$PY" ] && [ -x /work/main/.venv/bin/python ] && PY=/work/main/.venv/bin/python
    PY=${PY:-python3}
    log "cpu mode: $PY, no installs, tiny shapes"
else
    if ! command -v nvidia-smi >/dev/null || ! nvidia-smi -L >/dev/null 2>&1; then
        log "no CUDA GPU here (nvidia-smi finds none); use --cpu to check the script on a CPU"; exit 2
    fi
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader >>"$OUT/log.txt"
    PY=${PYTHON:-python3}
    $PY -c "import torch, sys; print('torch', torch.__version__, 'cuda', torch.version.cuda); sys.exit(0 if torch.cuda.is_available() else 1)" \
        >>"$OUT/log.txt" 2>&1 || { log "this python's torch cannot use the GPU; stopping"; exit 2; }
    # the carried wheels whose distribution this image lacks, without dependencies, into a folder of our own
    # (the image's packages stay as they are, and come first on the path)
    SITE=$WORK/site
    MISSING=$($PY - "$ROOT/bench/wheels" <<'PYEOF'
import sys
from importlib import metadata
from pathlib import Path
for whl in sorted(Path(sys.argv[1]).glob("*.whl")):
    try:
        metadata.version(whl.name.split("-")[0])
    except metadata.PackageNotFoundError:
        print(whl)
PYEOF
)
    if [ -n "$MISSING" ]; then
        log "installing from bench/wheels: $(for w in $MISSING; do basename "$w" | cut -d- -f1; done | xargs)"
        $PY -m pip install --quiet --disable-pip-version-check --no-index --no-deps --target "$SITE" $MISSING \
            >>"$OUT/log.txt" 2>&1 || log "some wheels did not install (see log.txt)"
        export PYTHONPATH=$PYTHONPATH:$SITE
    fi
    $PY -c "import trl, datasets, peft; print('trl', trl.__version__, 'peft', peft.__version__)" >>"$OUT/log.txt" 2>&1 \
        || log "trl or peft cannot be imported: the TRL sides are skipped"
fi
SLOW=1; [ "$MODE" = cpu ] && SLOW=3   # a shared 2-core CPU takes longer than a GPU, even at tiny shapes
LIMIT=$(( $(date +%s) + ${GPU_CHECK_LIMIT_S:-$(( 420 * SLOW ))} ))   # everything after the installs
left() { echo $(( LIMIT - $(date +%s) )); }

# --------------------------------------------------------------------------------------- 2. the data
# the seed pairs: GPU_CHECK_PAIRS, or beside the checkout, or in its shared/ folder; else synthetic pairs of
# similar lengths (speed and memory depend on the lengths, not on the words)
PAIRS=${GPU_CHECK_PAIRS:-}
for f in "$ROOT/../shared/seed-data/instruction-data-with-preference.json" \
         "$ROOT/shared/seed-data/instruction-data-with-preference.json"; do
    [ -z "$PAIRS" ] && [ -f "$f" ] && PAIRS=$f
done
if [ -z "$PAIRS" ]; then
    PAIRS=$WORK/pairs.json
    log "seed pairs not beside the checkout: 400 synthetic pairs instead"
    $PY - "$PAIRS" <<'PYEOF'
import json, sys
rows = [{"instruction": f"Describe the weather on day {i} in one sentence.", "input": "",
         "chosen": f"On day {i} the sky is clear and the air is mild, a good day to walk." + " It stays dry." * (i % 9),
         "rejected": f"Day {i}? Weather happens." + " Whatever." * (i % 7)} for i in range(400)]
json.dump(rows, open(sys.argv[1], "w"))
PYEOF
fi

# ------------------------------------------------------------------------------- 3. peak and models
CPUFLAG=""; DEV="--device cuda --bf16"; STEPS=8
[ "$MODE" = cpu ] && { CPUFLAG="--cpu"; DEV="--device cpu"; STEPS=3; }
timeout 60 "$PY" bench/gpu_bench.py peak "$OUT/peak.json" $CPUFLAG >>"$OUT/log.txt" 2>&1 || log "peak measurement failed"
model() {  # shape -> folder (built once per machine)
    local dir=$WORK/models/$1${CPUFLAG:+-cpu}
    timeout 120 "$PY" bench/gpu_bench.py build "$1" "$dir" --pairs "$PAIRS" $CPUFLAG >>"$OUT/log.txt" 2>&1 \
        || { log "building $1 failed"; return 1; }
    echo "$dir"
}

# -------------------------------------------------------------------------------------- 4. the checks
run_check() {  # name, its own limit (s), bench/train.py args...
    local name=$1 want=$(( $2 * SLOW )); shift 2
    local budget; budget=$(left)
    if [ "$budget" -lt 40 ]; then log "skipped $name: the overall limit is reached"; return; fi
    [ "$want" -lt "$budget" ] && budget=$want
    log "$name (limit ${budget}s): bench/train.py $*"
    timeout --kill-after=10 "$budget" "$PY" bench/train.py --pairs "$PAIRS" --json "$OUT/$name.json" "$@" \
        >>"$OUT/log.txt" 2>"$WORK/$name.err"
    local rc=$?
    [ $rc -eq 0 ] || { log "$name failed (exit $rc; 124: its limit), last lines:"; tail -8 "$WORK/$name.err" | tee -a "$OUT/log.txt"; }
}
ONLY=${GPU_CHECK_ONLY:-}   # e.g. "1b_full 8b_lora_gc": run only these
want() { [ -z "$ONLY" ] || [[ " $ONLY " == *" $1 "* ]]; }
QLORA=""; [ "$MODE" = gpu ] && $PY -c "import bitsandbytes" 2>/dev/null && QLORA="--qlora"
LR="--lr 1e-4"   # constant and large enough that the loss sequences move: a divergence would show

# packed-row attention first: dense mask vs flex block mask (agreement, speed, memory); every later check of ours
# trains with the variant it chose, so this one call both measures the two and decides train.attention's default
ATTN=dense
if want attention && M=$(model llama-3.2-1b); then
    log "attention (limit $(( 120 * SLOW ))s): bench/gpu_bench.py attention"
    timeout --kill-after=10 $(( 120 * SLOW )) "$PY" bench/gpu_bench.py attention "$OUT/peak.json" "$M" $CPUFLAG \
        >>"$OUT/log.txt" 2>"$WORK/attention.err" || { log "attention failed:"; tail -8 "$WORK/attention.err" | tee -a "$OUT/log.txt"; }
    ATTN=$("$PY" -c "import json, sys; print(json.load(open(sys.argv[1])).get('attention', {}).get('choice', 'dense'))" \
           "$OUT/peak.json" 2>/dev/null || echo dense)
fi
DEV="$DEV --attention $ATTN"
log "our sides train with attention = $ATTN"

# the goals first (8B LoRA with checkpointing, 1B full), then the rest while time is left
if want 8b_lora_gc && M=$(model llama-3.1-8b); then
    run_check 8b_lora_gc 150 --model "$M" --steps $STEPS $DEV $LR --lora --lora-only --gradient-checkpointing
fi
if want 1b_full && M=$(model llama-3.2-1b); then
    run_check 1b_full 100 --model "$M" --steps $STEPS $DEV $LR
fi
if want smollm2 && M=$(model smollm2-135m); then
    run_check smollm2 120 --model "$M" --steps $STEPS $DEV $LR --lora $QLORA --cpu-reference
fi
if want 1b_lora && M=$(model llama-3.2-1b); then
    run_check 1b_lora 80 --model "$M" --steps $STEPS $DEV $LR --lora --lora-only
fi
if want 8b_lora_long && M=$(model llama-3.1-8b); then   # micro-batches of ~10k tokens: where MFU is judged
    LONG=$WORK/long-pairs.json
    $PY - "$LONG" <<'PYEOF'
import json, random, sys
rnd = random.Random(0)
words = "the model answers each question with care and a short clear reason about weather rivers trains".split()
text = lambda n: " ".join(rnd.choice(words) for _ in range(n)) + "."
rows = [{"instruction": text(rnd.randint(40, 120)), "input": "", "chosen": text(rnd.randint(150, 350)),
         "rejected": text(rnd.randint(150, 350))} for _ in range(400)]
json.dump(rows, open(sys.argv[1], "w"))
PYEOF
    LONGSIZE="--batch-size 16 --max-length 1024"; [ "$MODE" = cpu ] && LONGSIZE="--batch-size 2 --max-length 1024"
    run_check 8b_lora_long 110 --model "$M" --steps 6 $DEV $LR --lora --lora-only --gradient-checkpointing \
        $LONGSIZE --pairs "$LONG"
fi

# ---------------------------------------------------------------------------------------- 5. figures
timeout 30 "$PY" bench/gpu_bench.py figures "$OUT" >"$OUT/figures.md" 2>>"$OUT/log.txt"
cat "$OUT/figures.md"
log "done; files in $OUT: $(ls "$OUT" | xargs)"
