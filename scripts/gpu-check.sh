#!/usr/bin/env bash
# The GPU check of issue 11, run on a machine with an NVIDIA GPU and a carried `cuda` binary.
#
# Build here (no GPU needed) and carry .device/ to the GPU machine:
#   CUDARC_CUDA_VERSION=13000 cargo build --release -p mmedpo-runner --features cuda
#   mkdir -p .device && cp "$CARGO_TARGET_DIR/release/mmedpo" .device/mmedpo && strip .device/mmedpo
# Then, in the repository root there:
#   bash scripts/gpu-check.sh            # about 7 minutes on one H200
#   bash scripts/gpu-check.sh --dry-run  # the same steps on the CPU with tiny shapes (a rehearsal)
#
# Prints, each step under its own timeout:
#   1. the tiny parity goldens (pair log-probs) on CUDA against the CPU, f32 (TF32 matmuls) and bf16;
#   2. square matmul TFLOP/s, Burn f32 and bf16 (and torch bf16 when torch is installed);
#   3. `bench train` on the LLaVA-Med 7B shape in bf16 (T=776, LoRA r 128), without and with
#      activation checkpointing: s/pair, tokens/s, TFLOP/s, peak GPU memory (nvidia-smi, sampled),
#      LoRA-A changed fraction at lr 1e-7;
#   4. decode tokens/s of the 7B text model at batch 1 in bf16.
# Results go to $OUT (or ./gpu-check-out) as JSON besides the log.
set -uo pipefail

DRY=0
[[ "${1:-}" == "--dry-run" ]] && DRY=1
BIN=${MMEDPO_BIN:-.device/mmedpo}
OUTDIR=${OUT:-./gpu-check-out}
mkdir -p "$OUTDIR"
[[ -x "$BIN" ]] || { echo "no binary at $BIN (see the header of this script)"; exit 2; }

if (( DRY )); then
    DEVICE=cpu; CONFIG=models/bench-mid/config.json; T=128; R=16; MM=512; LLM_CONFIG=models/bench-mid/config.json
else
    DEVICE=cuda; CONFIG=models/llava-med-7b/config.json; T=776; R=128; MM=8192; LLM_CONFIG=models/llava-med-7b/config.json
    # NVRTC compiles the kernels at run time: it needs CUDA's headers and libnvrtc.so.
    if [[ -z "${CUDA_PATH:-}" ]]; then
        for c in /usr/local/cuda /usr/local/cuda-* /opt/cuda /usr/lib/cuda; do
            [[ -d "$c/include" ]] && { export CUDA_PATH=$c; break; }
        done
    fi
    NVRTC=$(find "${CUDA_PATH:-/usr/local/cuda}" /usr/lib /usr/lib64 /usr/local -name 'libnvrtc.so*' 2>/dev/null | head -1)
    [[ -n "$NVRTC" ]] && export LD_LIBRARY_PATH="$(dirname "$NVRTC"):${LD_LIBRARY_PATH:-}"
    echo "CUDA_PATH=${CUDA_PATH:-unset}  libnvrtc=${NVRTC:-not found}"
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
fi

step() { echo; echo "== $*"; }

# Runs a command while sampling the GPU's used memory; prints the peak.
with_peak() {
    local log=$1; shift
    local peak_file; peak_file=$(mktemp)
    if command -v nvidia-smi >/dev/null && (( ! DRY )); then
        ( while sleep 0.5; do nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits | head -1; done ) >"$peak_file" &
        local sampler=$!
    fi
    "$@" 2>&1 | tee "$log" | grep -v INFO
    local rc=${PIPESTATUS[0]}
    if [[ -n "${sampler:-}" ]]; then
        kill "$sampler" 2>/dev/null
        echo "peak GPU memory used (nvidia-smi): $(sort -n "$peak_file" | tail -1) MiB"
    fi
    rm -f "$peak_file"
    return "$rc"
}

step "1. tiny parity goldens: pair log-probs on $DEVICE vs the CPU (CPU = transformers to 1e-3, tested in CI)"
G=crates/lvlm/tests/golden
for dtype in f32 bf16; do
    for dev in cpu "$DEVICE"; do
        timeout 120 "$BIN" score --model $G/tiny-llava-hf --tokenizer models/mistral-tokenizer/tokenizer.json \
            --data $G/pairs.json --image-root data/images --out "$OUTDIR/score-$dev-$dtype.jsonl" \
            --device "$dev" --dtype "$dtype" >/dev/null 2>"$OUTDIR/score-$dev-$dtype.log" \
            || { echo "score $dev $dtype failed:"; tail -3 "$OUTDIR/score-$dev-$dtype.log"; }
    done
    # Max |Δ logp| between the two files (same ids, same order).
    paste -d' ' <(grep -o '"chosen_logp":[-0-9.e]*\|"rejected_logp":[-0-9.e]*' "$OUTDIR/score-cpu-$dtype.jsonl" | cut -d: -f2) \
                <(grep -o '"chosen_logp":[-0-9.e]*\|"rejected_logp":[-0-9.e]*' "$OUTDIR/score-$DEVICE-$dtype.jsonl" | cut -d: -f2) \
        | awk -v d="$dtype" '{x=$1-$2; if (x<0) x=-x; if (x>m) m=x; n++} END {printf "%s: %d log-probs, max |Δ| %.3e (tolerance: f32 with TF32 5e-2, bf16 5e-1 on sums of ~200 tokens)\n", d, n, m}'
done

step "2. matmul ${MM}x${MM}"
for b in $([[ $DEVICE == cuda ]] && echo "cuda cuda-bf16" || echo "flex flex-bf16"); do
    timeout 60 "$BIN" bench matmul --size "$MM" --reps 10 --backend "$b" 2>&1 | grep -v '^{' | grep -v INFO
done
if python3 -c 'import torch; assert torch.cuda.is_available()' 2>/dev/null; then
    python3 - "$MM" <<'PY'
import sys, time, torch
n = int(sys.argv[1]); a = torch.randn(n, n, device="cuda", dtype=torch.bfloat16); b = torch.randn_like(a)
for _ in range(3): a @ b
torch.cuda.synchronize(); t = time.time()
for _ in range(10): a @ b
torch.cuda.synchronize(); s = (time.time() - t) / 10
print(f"torch bf16: {n}x{n} matmul {s*1e3:.2f} ms, {2*n**3/s/1e12:.1f} TFLOP/s")
PY
else
    echo "torch with CUDA is not installed here: no torch figure"
fi

step "3. bench train: $CONFIG, bf16, T=$T, LoRA r $R"
for ck in "" "--checkpointing"; do
    name=train${ck:+-ckpt}
    with_peak "$OUTDIR/$name.log" timeout 170 "$BIN" bench train --config "$CONFIG" --device "$DEVICE" \
        --dtype bf16 --seq-len "$T" --lora-r "$R" --steps 2 $ck --json "$OUTDIR/$name.json" \
        || echo "bench train $ck failed or timed out (exit $?)"
done

step "4. decode: $LLM_CONFIG text model, bf16, batch 1"
timeout 90 "$BIN" bench llm --config "$LLM_CONFIG" --backend "$([[ $DEVICE == cuda ]] && echo cuda-bf16 || echo flex-bf16)" \
    --prompt-len 128 --new-tokens 32 --batch 1 --reps 2 2>&1 | grep -v INFO | tee "$OUTDIR/llm.log" \
    || echo "bench llm failed"
echo; echo "done; files in $OUTDIR"
