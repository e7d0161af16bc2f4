"""Exact resume with the real trainer (the tiny model, so each run takes seconds).

A training killed right after a checkpoint and started again on the same output ends as an
uninterrupted run of the same settings would: the same loss at every step after the resume point and
the same adapter, bit for bit (optimizer, scheduler, RNG and data order restored; LoRA dropout on, so a
lost RNG state would show). The same holds under torchrun with two processes (gloo), with a
`--late-data` run (laid out in one pass, each rank taking its own share of it). (A checkpoint that comes
back from the store into another host's empty scratch directory: test/distributed.test.ts.)

Killing torchrun's launcher outright also takes its ranks down (each asked the kernel for it:
distributed.die_with_launcher), so no rank trains on as an orphan.

The 1-process and 2-process runs are compared within 1e-5 of the loss at every step (absolute; the tiny
model's loss is near 10): the same examples make each optimiser step, and only float32 rounding differs
(the gradient of two half batches summed by an all-reduce instead of one batch); measured differences
are ~1e-6 at most. A wrong split of the batch or of the data changes which examples a step sees, and
the loss by more than 1e-2 from the first steps.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from .conftest import FACTS, PY, env, parse_events, train_cmd, write_chat_jsonl

TORCHRUN = [PY, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
# 12 examples, 3 epochs of batch 4: 9 steps, a checkpoint every 3
SETTINGS = ["--epochs", "3", "--save-steps", "3", "--lora-dropout", "0.1", "--device", "cpu"]
TOLERANCE = 1e-5  # absolute, per step, 1 process against 2 (see the module doc)


def command(data: Path, out: Path, base: Path, *extra: str, processes: int = 1) -> list[str]:
    cmd = train_cmd(data, out, *SETTINGS, *extra, base=base)
    return [*TORCHRUN, *cmd[1:]] if processes > 1 else cmd


def run_events(cmd: list[str], *, kill_after_checkpoint: bool = False) -> tuple[list[dict], int]:
    """(the events, the exit code); SIGKILL to the launcher right after the first checkpoint event."""
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env(SLEARN_THREADS="1"))
    evs: list[dict] = []
    try:
        for line in p.stdout:
            evs += parse_events(line)
            if kill_after_checkpoint and evs[-1]["event"] == "checkpoint":
                p.send_signal(signal.SIGKILL)
                break
    finally:
        rc = p.wait(timeout=300)
        p.stdout.close()
    return evs, rc


def losses(evs: list[dict]) -> dict[int, float]:
    return {e["step"]: e["loss"] for e in evs if e["event"] == "progress"}


def adapter_tensors(out: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(out / "adapter" / "adapter_model.safetensors"))


def assert_same_adapter(a: Path, b: Path) -> None:
    ta, tb = adapter_tensors(a), adapter_tensors(b)
    assert ta.keys() == tb.keys()
    assert all(bool((ta[k] == tb[k]).all()) for k in ta), "the resumed adapter differs from the uninterrupted one"


def trainers_alive(out: Path) -> list[int]:
    """Processes whose command line names `out`: trainers (any rank) still running on it."""
    alive = []
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if str(out) in cmdline and "slearn_trainer" in cmdline:
                alive.append(int(pid))
    return alive


def kill_and_resume(data, out, base, *extra, processes=1):
    first, rc = run_events(command(data, out, base, *extra, processes=processes), kill_after_checkpoint=True)
    assert rc == -signal.SIGKILL
    checkpoint = next(e for e in first if e["event"] == "checkpoint")
    deadline = time.time() + 30  # the ranks die with their launcher
    while trainers_alive(out) and time.time() < deadline:
        time.sleep(0.2)
    assert not trainers_alive(out), "a rank outlived its launcher"
    second, rc = run_events(command(data, out, base, *extra, processes=processes))
    assert rc == 0 and second[-1]["event"] == "done", second[-1:]
    return checkpoint["step"], second


@pytest.fixture(scope="module")
def facts(tmp_path_factory) -> Path:
    return write_chat_jsonl(tmp_path_factory.mktemp("resume") / "train.jsonl", FACTS)


@pytest.fixture(scope="module")
def reference(tmp_path_factory, facts, tiny_base):
    """An uninterrupted 1-process run."""
    out = tmp_path_factory.mktemp("reference") / "out"
    evs, rc = run_events(command(facts, out, tiny_base))
    assert rc == 0 and evs[-1]["event"] == "done", evs[-1:]
    return out, evs


def test_killed_and_resumed_equals_uninterrupted(tmp_path, facts, tiny_base, reference):
    ref_out, ref = reference
    out = tmp_path / "out"
    resumed_at, second = kill_and_resume(facts, out, tiny_base)
    assert second[0]["resumed_from_step"] == resumed_at > 0
    after = losses(second)
    assert sorted(after) == list(range(resumed_at + 1, ref[-1]["steps"] + 1))
    assert after == {s: v for s, v in losses(ref).items() if s > resumed_at}  # exactly
    assert_same_adapter(out, ref_out)


def test_two_processes_resume_exactly_and_follow_one(tmp_path, tiny_base):
    """torchrun, 2 processes on gloo, a --late-data run (sequential, each rank its share of the one
    laid-out sequence): killed after a checkpoint (launcher SIGKILLed, ranks gone with it) and resumed,
    it equals an uninterrupted 2-process run; and its curve is the 1-process curve within TOLERANCE."""
    data = write_chat_jsonl(tmp_path / "train.jsonl", FACTS[:8])
    late = write_chat_jsonl(tmp_path / "late.jsonl", FACTS[8:])
    extra = ["--late-data", str(late), "--lora-dropout", "0"]  # no dropout: 1 and 2 processes comparable
    ref2, rc = run_events(command(data, tmp_path / "ref2", tiny_base, *extra, processes=2))
    assert rc == 0, ref2[-1:]
    start = ref2[0]
    assert (start["processes"], start["per_device_batch"], start["gradient_accumulation"]) == (2, 2, 1)
    assert start["effective_batch"] == 4 and start["distributed"] == "ddp"
    assert [e["event"] for e in ref2].count("start") == 1 and [e["event"] for e in ref2].count("done") == 1
    resumed_at, second = kill_and_resume(data, tmp_path / "out", tiny_base, *extra, processes=2)
    assert losses(second) == {s: v for s, v in losses(ref2).items() if s > resumed_at}
    assert_same_adapter(tmp_path / "out", tmp_path / "ref2")

    ref1, rc = run_events(command(data, tmp_path / "ref1", tiny_base, *extra))
    assert rc == 0 and ref1[0]["effective_batch"] == 4
    one, two = losses(ref1), losses(ref2)
    assert one.keys() == two.keys()
    worst = max(abs(one[s] - two[s]) for s in one)
    print(f"1 vs 2 processes: largest loss difference {worst:.2e} over {len(one)} steps")
    assert worst < TOLERANCE


def test_a_checkpoint_resumes_on_another_process_count(tmp_path, facts, tiny_base, reference):
    """Written by one process, resumed by two: the same step, the same examples after it (the effective
    batch is the same), close to the uninterrupted curve (dropout masks differ with the micro-batch)."""
    _, ref = reference
    out = tmp_path / "out"
    evs, _ = run_events(command(facts, out, tiny_base), kill_after_checkpoint=True)
    step = next(e for e in evs if e["event"] == "checkpoint")["step"]
    second, rc = run_events(command(facts, out, tiny_base, processes=2))
    assert rc == 0 and second[0]["resumed_from_step"] == step and second[0]["processes"] == 2
    assert second[-1]["steps"] == ref[-1]["steps"]
    after, want = losses(second), {s: v for s, v in losses(ref).items() if s > step}
    assert after.keys() == want.keys()
    assert all(abs(after[s] - want[s]) / want[s] < 0.05 for s in after), (after, want)


def test_cancelling_the_launcher_stops_every_rank(tmp_path, facts, tiny_base):
    """What the activity does on cancellation: SIGTERM to the launcher's process group (the ranks sit
    in sessions of their own, torchrun passes the signal on). Every rank stops within seconds, and the
    trainer says it was interrupted (retryable)."""
    out = tmp_path / "out"
    p = subprocess.Popen(
        command(facts, out, tiny_base, "--epochs", "1000", processes=2),
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=env(SLEARN_THREADS="1"),
        start_new_session=True,
    )
    evs: list[dict] = []
    try:
        for line in p.stdout:
            evs += parse_events(line)
            if evs[-1]["event"] == "progress":
                break
        assert len(trainers_alive(out)) == 3  # the launcher and two ranks
        t0 = time.time()
        os.killpg(p.pid, signal.SIGTERM)
        evs += parse_events(p.stdout.read())
        p.wait(timeout=60)
        while trainers_alive(out) and time.time() - t0 < 30:
            time.sleep(0.2)
        assert not trainers_alive(out)
        assert time.time() - t0 < 30
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
        p.stdout.close()
    errors = [e for e in evs if e["event"] == "error"]
    assert errors and all(e["retryable"] for e in errors) and "SIGTERM" in errors[0]["message"]
