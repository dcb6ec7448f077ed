#!/usr/bin/env bash
# GPU readiness check for a CUDA build of mor (scripts/check_torch2.sh --cuda, or any LibTorch 2.x CUDA build):
# one script, a few minutes on one GPU, printing figures:
#   1. mor --version
#   2. stories260K, 200 greedy tokens on --device cuda (float32) equal the expected text
#   3. mor score on CUDA float32 vs CPU float32: per-example cross-entropy within 1e-4
#   4. 30 training steps on CUDA bfloat16: the loss falls; tokens/s printed
#   5. with >= 2 GPUs: 2 processes (torchrun, NCCL) equal 1 process within 1e-5 after 8 steps
# Usage: scripts/gpu_check.sh [path/to/mor]   (default build/mor; test data from ../shared/testdata or $MOR_TESTDATA)
# Exit status non-zero when a check fails. Needs python3 (standard library only) for the comparisons.
set -euo pipefail
REPO="$(cd "$(dirname "$0")/.." && pwd)"
MOR="${1:-$REPO/build/mor}"
TD="${MOR_TESTDATA:-$REPO/../shared/testdata}"
WORK="$(mktemp -d /tmp/mor-gpu-check.XXXXXX)"
trap 'rm -rf "$WORK"' EXIT
MODEL="$TD/stories260K"
HF="$TD/sampled_scienceqa_train_all.hf"
FAIL=0
step() { echo; echo "== $*"; }
ok() { echo "   OK: $*"; }
bad() { echo "   FAILED: $*"; FAIL=1; }
[ -x "$MOR" ] || { echo "gpu_check: no mor binary at $MOR" >&2; exit 2; }
[ -d "$MODEL" ] || { echo "gpu_check: test data not found at $TD (set MOR_TESTDATA)" >&2; exit 2; }
START=$(date +%s)

step "1. version"
"$MOR" --version
"$MOR" --version | grep -q "with CUDA" || bad "not a CUDA build"

step "2. stories260K greedy 200 tokens on cuda"
T0=$(date +%s%N)
"$MOR" generate --base_model "$MODEL" --template none --prompt '' --max_new_tokens 200 --device cuda \
  --dtype float32 --threads 1 > "$WORK/greedy.txt"
echo "   $(python3 -c 'import sys; print(len(open(sys.argv[1]).read()))' "$WORK/greedy.txt") characters in $(( ($(date +%s%N) - T0) / 1000000 )) ms"
if python3 - "$WORK/greedy.txt" "$MODEL/expected_greedy200.txt" <<'PY'
import sys
got = open(sys.argv[1]).read().rstrip("\n")
want = open(sys.argv[2]).read()
# mor generate stops at EOS; the expected text (llama2.c) runs to 200 tokens or BOS: a prefix match.
sys.exit(0 if got and want.startswith(got) else 1)
PY
then ok "equals the expected text"; else bad "greedy text differs from $MODEL/expected_greedy200.txt"; fi

step "3. score: cuda float32 vs cpu float32"
for dev in cpu cuda; do
  "$MOR" score --base_model "$MODEL" --data_path "$HF" --cutoff_len 128 --batch_size 8 --device $dev \
    --dtype float32 --threads 2 > "$WORK/score_$dev.jsonl"
done
python3 - "$WORK/score_cpu.jsonl" "$WORK/score_cuda.jsonl" <<'PY' || FAIL=1
import json, sys
a = [json.loads(l) for l in open(sys.argv[1])]
b = [json.loads(l) for l in open(sys.argv[2])]
rows = [(x, y) for x, y in zip(a, b) if "ce" in x and not x.get("summary")]
d = max(abs(x["ce"] - y["ce"]) for x, y in rows)
print(f"   {len(rows)} examples, max |ce_cuda - ce_cpu| = {d:.3e}, mean ce {a[-1]['ce']:.6f} (cpu) {b[-1]['ce']:.6f} (cuda)")
print("   OK: within 1e-4" if d <= 1e-4 else "   FAILED: beyond 1e-4")
sys.exit(0 if d <= 1e-4 else 1)
PY

step "4. 30 training steps on cuda bfloat16"
"$MOR" train --base_model "$MODEL" --data_path "$HF" --output_dir "$WORK/train_bf16" --batch_size 16 \
  --micro_batch_size 8 --max_steps 30 --learning_rate 1e-2 --cutoff_len 128 --val_set_size 0 --warmup_steps 3 \
  --logging_steps 5 --save_steps 1000 --device cuda --dtype bfloat16 | grep -E "^step|done"
python3 - "$WORK/train_bf16/trainer_state.json" <<'PY' || FAIL=1
import json, sys
h = [e for e in json.load(open(sys.argv[1]))["log_history"] if "loss" in e]
print(f"   loss {h[0]['loss']} -> {h[-1]['loss']}, tokens/s {h[-1]['tokens_per_second']:.0f}")
sys.exit(0 if h[-1]["loss"] < h[0]["loss"] else 1)
PY

step "5. 2-process NCCL vs 1 process"
NGPU=$(nvidia-smi -L 2>/dev/null | wc -l || echo 0)
if [ "$NGPU" -ge 2 ]; then
  ARGS=(train --base_model "$MODEL" --data_path "$HF" --batch_size 4 --micro_batch_size 1 --max_steps 8
        --learning_rate 5e-3 --cutoff_len 32 --val_set_size 0 --warmup_steps 2 --logging_steps 1 --save_steps 1000
        --lora_dropout 0 --device cuda --dtype float32)
  "$MOR" "${ARGS[@]}" --output_dir "$WORK/one" > /dev/null
  # Debian 12's torchrun (1.13 on Python 3.11) needs the --redirects/--tee mapping; current releases do not.
  torchrun --redirects 9:1 --tee 9:1 --no_python --nproc_per_node 2 "$MOR" "${ARGS[@]}" --output_dir "$WORK/two" \
    --ddp_backend nccl > "$WORK/two.log" 2>&1 || { cat "$WORK/two.log"; bad "torchrun failed"; }
  python3 - "$WORK/one/adapter_model.safetensors" "$WORK/two/adapter_model.safetensors" <<'PY' || FAIL=1
import json, struct, sys, array
def read(p):
    b = open(p, "rb").read(); n = struct.unpack("<Q", b[:8])[0]; h = json.loads(b[8:8 + n]); out = {}
    for k, v in h.items():
        if k == "__metadata__": continue
        s, e = v["data_offsets"]; a = array.array("f"); a.frombytes(b[8 + n + s:8 + n + e]); out[k] = a
    return out
x, y = read(sys.argv[1]), read(sys.argv[2])
worst = max(max(abs(p - q) for p, q in zip(x[k], y[k])) / max(1e-30, max(abs(p) for p in x[k])) for k in x)
print(f"   {len(x)} tensors, max relative difference {worst:.3e}")
sys.exit(0 if worst <= 1e-5 else 1)
PY
else
  echo "   skipped: $NGPU GPU(s) visible (needs 2)"
fi

echo
echo "gpu_check: $(( $(date +%s) - START )) s, $([ $FAIL = 0 ] && echo 'all checks passed' || echo 'SOME CHECKS FAILED')"
exit $FAIL
