"""scripts/gpu-check.sh, the check for the minutes a GPU is lent, runs here on a tiny shape on the CPU
(`--tiny`): every step it takes on a GPU (info, the trainer's command line, the plain loop beside the
project's trainer, DDP and FSDP under torchrun on two processes) runs and writes its figures.
About 2 minutes here."""

import json
import subprocess
from pathlib import Path

from .conftest import PY, env

ROOT = Path(__file__).resolve().parents[2]


def test_gpu_check_tiny_runs_every_step_and_writes_its_figures(tmp_path, runtime_info):
    r = subprocess.run(
        ["bash", str(ROOT / "scripts" / "gpu-check.sh"), "--tiny"],
        env=env(OUT=str(tmp_path), PYTHON=PY),
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert r.returncode == 0, r.stderr[-4000:]
    rows = [json.loads(line) for line in (tmp_path / "gpu-check.jsonl").read_text().splitlines()]
    assert not [x for x in rows if "error" in x], rows
    by = {(x["what"], x.get("processes", 1), x.get("distributed")): x for x in rows}
    assert by[("info", 1, None)]["device"] == runtime_info["device"]
    cli = by[("cli", 1, None)]
    assert cli["steps"] == 4 and cli["tokens_per_s"] > 0 and cli["processes"] == 1
    plain = by[("plain", 1, None)]
    slearn = by[("slearn", 1, "none")]
    assert plain["shape"] == slearn["shape"] == "tiny" and plain["seq"] == slearn["seq"] == 64
    assert plain["tokens_per_s"] > 0 and slearn["ratio_to_plain"] == round(
        slearn["tokens_per_s"] / plain["tokens_per_s"], 3
    )
    for mode in ("ddp", "fsdp"):
        x = by[("slearn", 2, mode)]
        assert x["tokens_per_s"] > 0 and x["scaling"] > 0
    assert by[("qlora", 1, None)]["skipped"]
    # the figures table closes the output
    assert "ratio_to_plain=" in r.stdout and "scaling=" in r.stdout
