#!/usr/bin/env bash
# Training speed of the real trainer on the bundled agronomy set (SmolLM2-135M + LoRA r=16,
# all-linear, CPU): steps, seconds and tokens/s for a few settings, from the trainer's own
# `done` event. Run from the repository root after `make setup`:
#   bash bench/trainer_speed.sh [steps=24]
set -euo pipefail
STEPS=${1:-24}
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
# The demo's training examples: system prompt, question, reference answer.
.venv/bin/python - "$TMP/data.jsonl" <<'PY'
import json, sys
with open("examples/agriculture/train.jsonl") as f, open(sys.argv[1], "w") as out:
    for line in f:
        r = json.loads(line)
        out.write(json.dumps({"messages": [
            {"role": "system", "content": "Answer the question with a short phrase only."},
            {"role": "user", "content": r["question"]},
            {"role": "assistant", "content": r["answer"]}]}) + "\n")
PY
echo "| setting | steps | seconds | s/step | sequences/s | tokens/s (non-padding) |"
echo "|---|---:|---:|---:|---:|---:|"
run() {
  local label=$1; shift
  local line
  line=$(.venv/bin/python -m slearn_trainer train --base smollm2-135m-instruct --data "$TMP/data.jsonl" \
    --out "$TMP/out-$RANDOM" --epochs 3 --max-seq-len 128 --save-steps 100000 --max-steps "$STEPS" "$@" 2>/dev/null | grep '"event": *"done"' | tail -1)
  .venv/bin/python - "$label" "$line" "$@" <<'PY'
import json, sys
label, line, args = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3:]
bs = int(args[args.index("--batch-size") + 1]) if "--batch-size" in args else 4
s, n = line["train_seconds"], line["steps"]
print(f"| {label} | {n} | {s:.1f} | {s / n:.2f} | {n * bs / s:.2f} | {line['tokens_per_second']:.0f} |")
PY
}
run "batch 4" --batch-size 4
run "batch 8" --batch-size 8
run "batch 16" --batch-size 16
run "batch 8, packing" --batch-size 8 --packing
