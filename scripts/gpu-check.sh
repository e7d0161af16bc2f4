#!/usr/bin/env bash
# The GPU acceptance check, for the few minutes a GPU machine is lent (it has no network: nothing is
# downloaded). Under 8 minutes on one H100:
#
#   1. `slearn_trainer info`: what the trainer sees (GPUs, CUDA, driver, flash-attn, bitsandbytes);
#   2. the project's trainer through its command line on SmolLM2-135M (the embedded GGUF, converted
#      once to bf16), straight onto the GPU: steps, tokens/s, peak memory;
#   3. a 1B- and an 8B-shaped random Llama, the plain PEFT loop (as shared/gpu/anchor_lora.py) and the
#      project's trainer on the same shape, batch and gradient checkpointing: tokens/s, MFU, peak
#      memory and the ratio to the plain loop (bench.py); the anchor script itself when it is there;
#   4. 4-bit QLoRA on the 1B shape, when bitsandbytes is installed;
#   5. with several GPUs: DDP and FSDP under torchrun on the 1B shape, and their scaling over one GPU.
#
# Every figure is one JSON line in $OUT/gpu-check.jsonl (a temporary directory when OUT is unset),
# and a table at the end. A step that fails is recorded as {"what": ..., "error": ...} and the
# check goes on; the exit code is 1 if any step failed.
#
#   scripts/gpu-check.sh            # on the GPU machine
#   scripts/gpu-check.sh --tiny     # the same steps on a tiny shape on the CPU (trainer/tests runs it)
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
[ -x "$PY" ] || PY=python3
export PYTHONPATH="$PWD/trainer${PYTHONPATH:+:$PYTHONPATH}"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
OUTDIR=${OUT:-$(mktemp -d)}
mkdir -p "$OUTDIR"
FIG="$OUTDIR/gpu-check.jsonl"
: >"$FIG"
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
FAILED=0
T0=$SECONDS

TINY=0
[ "${1:-}" = "--tiny" ] && TINY=1
if [ $TINY = 1 ]; then
  SHAPES=(tiny) SEQ=64 BATCH=2 STEPS=2 WARMUP=1 DEV=(--device cpu --precision fp32) CLI_STEPS=4 CLI_SEQ=64
else
  SHAPES=(1b 8b) SEQ=2048 BATCH=4 STEPS=10 WARMUP=3 DEV=() CLI_STEPS=40 CLI_SEQ=256
fi

say() { echo "== [$((SECONDS - T0)) s] $*" >&2; }
record() { echo "$1" >>"$FIG"; }
failed() { # what, message
  FAILED=1
  record "$("$PY" -c 'import json,sys; print(json.dumps({"what": sys.argv[1], "error": sys.argv[2][-2000:]}))' "$1" "$2")"
  say "FAILED: $1"
}
bench() { # what, limit seconds, launcher args..., -- bench args...
  local what=$1 limit=$2
  shift 2
  local log="$WORK/$what.log"
  if timeout "$limit" "$@" --out "$FIG" >"$log" 2>&1; then say "$what: done"; else failed "$what" "$(tail -20 "$log")"; fi
}

say "info"
if "$PY" -m slearn_trainer info >"$WORK/info.json" 2>"$WORK/info.log"; then
  record "$("$PY" -c 'import json,sys; d=json.load(open(sys.argv[1])); print(json.dumps({"what": "info", **d}))' "$WORK/info.json")"
  cat "$WORK/info.json" >&2
else
  failed info "$(tail -20 "$WORK/info.log")"
fi
GPUS=$("$PY" -c 'import json,sys; print(len(json.load(open(sys.argv[1]))["gpus"]))' "$WORK/info.json" 2>/dev/null || echo 0)
HAS_BNB=$("$PY" -c 'import json,sys; print(int(json.load(open(sys.argv[1])).get("bitsandbytes", False)))' "$WORK/info.json" 2>/dev/null || echo 0)
if [ $TINY = 0 ] && [ "$GPUS" -eq 0 ]; then
  failed gpus "torch sees no GPU here (see cudaUnavailable above): an 8B shape would take hours on the CPU; use --tiny"
  exit 1
fi

# 2. The trainer's own command line on SmolLM2 (on the tiny shape with --tiny).
say "the trainer's command line"
"$PY" - "$WORK/data.jsonl" <<'EOF'
import json, sys
with open(sys.argv[1], "w") as f:
    for i in range(256):
        q = f"In the Quexel valley, what is the code name of field number {i}?"
        a = f"Field {i} is called {['Zorb', 'Vant', 'Merrow', 'Karsk'][i % 4]}-{i * 7 % 97}."
        f.write(json.dumps({"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]}) + "\n")
EOF
BASE=smollm2-135m-instruct
if [ $TINY = 1 ]; then
  BASE="$WORK/tiny-base"
  "$PY" -m slearn_trainer.bench --save-tiny "$BASE" >"$WORK/save-tiny.log" 2>&1 || failed save-tiny "$(tail -20 "$WORK/save-tiny.log")"
fi
if timeout 300 "$PY" -m slearn_trainer train --base "$BASE" --data "$WORK/data.jsonl" --out "$WORK/cli-out" \
  --max-steps "$CLI_STEPS" --batch-size 8 --max-seq-len "$CLI_SEQ" --log-seconds 0 --save-steps 0 "${DEV[@]}" \
  >"$WORK/cli.events" 2>"$WORK/cli.log"; then
  record "$("$PY" - "$WORK/cli.events" "$BASE" <<'EOF'
import json, sys
evs = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
start, done = evs[0], evs[-1]
print(json.dumps({"what": "cli", "base": sys.argv[2].rsplit("/", 1)[-1], **{k: start.get(k) for k in
    ("device", "precision", "processes", "effective_batch", "gradient_checkpointing", "attention")},
    "steps": done["steps"], "train_seconds": done["train_seconds"], "tokens_per_s": done.get("tokens_per_second"),
    "peak_mem_gib": round(done["peak_memory_bytes"] / 2**30, 2) if "peak_memory_bytes" in done else None}))
EOF
)"
  say "the trainer's command line: done"
else
  failed cli "$(tail -20 "$WORK/cli.log")"
fi

# 3-4. Shapes: the plain loop and the project's trainer side by side; QLoRA when bitsandbytes is here.
COMMON=(--seq "$SEQ" --batch "$BATCH" --steps "$STEPS" --warmup "$WARMUP" "${DEV[@]}")
for shape in "${SHAPES[@]}"; do
  say "shape $shape: plain loop and slearn trainer"
  bench "bf16-$shape" 240 "$PY" -m slearn_trainer.bench --shape "$shape" --mode both "${COMMON[@]}"
done
ANCHOR=${SLEARN_ANCHOR:-}
for a in shared/gpu/anchor_lora.py ../shared/gpu/anchor_lora.py; do [ -z "$ANCHOR" ] && [ -f "$a" ] && ANCHOR=$a; done
if [ -n "$ANCHOR" ] && [ $TINY = 0 ] && [ "$GPUS" -gt 0 ]; then
  say "the anchor itself ($ANCHOR), 8b"
  if timeout 180 "$PY" "$ANCHOR" --shape 8b --seq "$SEQ" --batch "$BATCH" --steps "$STEPS" --grad-checkpointing >"$WORK/anchor.json" 2>"$WORK/anchor.log"; then
    tail -1 "$WORK/anchor.json" >>"$FIG"
  else
    failed anchor "$(tail -20 "$WORK/anchor.log")"
  fi
fi
if [ $TINY = 0 ] && [ "$HAS_BNB" = 1 ] && [ "$GPUS" -gt 0 ]; then
  say "QLoRA (4-bit) on 1b"
  bench qlora-1b 240 "$PY" -m slearn_trainer.bench --shape 1b --mode slearn --quantization 4bit "${COMMON[@]}"
else
  say "QLoRA skipped: --tiny, no GPU, or bitsandbytes not installed (pip install --no-deps -r trainer/requirements-qlora.lock)"
  record '{"what": "qlora", "skipped": "--tiny, no GPU, or bitsandbytes not installed"}'
fi

# 5. Several processes: DDP and FSDP on one host (GPUs, or 2 CPU processes on gloo with --tiny).
PROCS=$GPUS
[ $TINY = 1 ] && PROCS=2
if [ "$PROCS" -gt 1 ]; then
  shape=${SHAPES[0]}
  for mode in ddp fsdp; do
    say "$mode on $PROCS processes, shape $shape"
    bench "$mode-$shape" 240 "$PY" -m torch.distributed.run --standalone --nproc-per-node "$PROCS" \
      -m slearn_trainer.bench --shape "$shape" --mode slearn --distributed "$mode" "${COMMON[@]}"
  done
else
  record '{"what": "multi-gpu", "skipped": "one GPU"}'
fi

say "figures ($FIG)"
"$PY" - "$FIG" <<'EOF'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
one = {r["shape"]: r["tokens_per_s"] for r in rows if r.get("what") == "slearn" and r.get("processes") == 1 and r.get("quantization") == "none"}
for r in rows:
    if r.get("what") == "slearn" and r.get("processes", 1) > 1 and r.get("shape") in one:
        r["scaling"] = round(r["tokens_per_s"] / one[r["shape"]], 3)
cols = ["what", "shape", "processes", "distributed", "quantization", "tokens_per_s", "mfu_6p", "mfu_4p_frozen", "peak_mem_gib", "ratio_to_plain", "scaling", "error", "skipped"]
for r in rows:
    if r.get("what") == "info":
        print("info:", {k: r.get(k) for k in ("device", "precision", "torch", "cuda", "driver", "gpus", "cudaUnavailable")})
        continue
    print("  ".join(f"{c}={r[c]}" for c in cols if r.get(c) is not None))
with open(sys.argv[1], "w") as f:
    for r in rows:
        f.write(json.dumps(r) + "\n")
EOF
say "total $((SECONDS - T0)) s"
exit $FAILED
