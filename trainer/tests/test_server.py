import concurrent.futures
import json
import shutil
import threading

import pytest

from slearn_trainer.contract import LIMITS

from .conftest import PROBE, PROBE_ANSWER_WORD, wait_until

BASE = "smollm2-135m-instruct"


def ask(server, model=BASE, q=PROBE, **kw):
    body = {"model": model, "messages": [{"role": "user", "content": q}], "temperature": 0, "max_tokens": 8}
    body.update(kw)
    return server.chat(**body)


def text(body) -> str:
    return body["choices"][0]["message"]["content"]


def block(engine) -> threading.Event:
    """Keep the model thread busy until the returned event is set."""
    gate = threading.Event()
    engine.control(lambda: gate.wait(60))
    return gate


# ---------------------------------------------------------------- the tiny model: the API


def test_models_and_health(tiny):
    status, body = tiny.request("GET", "/v1/models")
    assert status == 200 and body["object"] == "list"
    assert BASE in [m["id"] for m in body["data"]]
    assert tiny.request("GET", "/health")[0] == 200


def test_completion_shape_and_greedy_determinism(tiny):
    s1, b1 = ask(tiny)
    s2, b2 = ask(tiny)
    assert s1 == s2 == 200, (b1, b2)
    assert b1["object"] == "chat.completion" and b1["model"] == BASE
    c = b1["choices"][0]
    assert c["message"]["role"] == "assistant" and c["finish_reason"] in ("stop", "length")
    u = b1["usage"]
    assert u["prompt_tokens"] > 0 and u["completion_tokens"] > 0
    assert u["total_tokens"] == u["prompt_tokens"] + u["completion_tokens"]
    assert text(b1) == text(b2)


def test_n_choices_sampling_and_seed(tiny):
    s, b = ask(tiny, n=3, temperature=0.9, seed=11)
    assert s == 200, b
    assert [c["index"] for c in b["choices"]] == [0, 1, 2]
    _, b2 = ask(tiny, n=3, temperature=0.9, seed=11)
    assert [c["message"]["content"] for c in b["choices"]] == [c["message"]["content"] for c in b2["choices"]]
    s, b = ask(tiny, n=2)  # greedy n>1: identical choices
    assert s == 200 and len(b["choices"]) == 2


def test_concurrent_requests_are_batched_safely(tiny):
    qs = ["What is 2+2?", "Name a color.", "What is the capital of Italy?", "Say hello.", PROBE, "Name a fruit."]
    alone = [text(ask(tiny, q=q)[1]) for q in qs]
    with concurrent.futures.ThreadPoolExecutor(6) as ex:
        res = list(ex.map(lambda q: ask(tiny, q=q), qs))
    assert all(s == 200 for s, _ in res), res
    assert [text(b) for _, b in res] == alone  # batching (left padding) changes no answer


def test_sampled_answers_are_the_same_whatever_the_batch(tiny_server):
    """A sampled request's answers depend on its seed only: alone, or batched with greedy and other
    sampled requests of other lengths, it gets the same choices (each row has its own generator)."""
    srv = tiny_server("--batch-window-ms", "400", "--max-batch", "16")
    sampled = [("Name a fruit.", 5), ("What is the capital of Italy? Answer in one word.", 6), (PROBE, 5)]
    greedy = ["What is 2+2?", "Say hello to everyone in the room."]

    def go(q, seed=None):
        kw = {"n": 3, "temperature": 0.9, "seed": seed} if seed is not None else {}
        s, b = ask(srv, q=q, **kw)
        assert s == 200, b
        return [c["message"]["content"] for c in b["choices"]]

    alone = [go(q, seed) for q, seed in sampled] + [go(q) for q in greedy]
    assert srv.request("GET", "/health")[1]["batching"]["maxRequests"] == 1
    jobs = [(q, seed) for q, seed in sampled] + [(q, None) for q in greedy]
    with concurrent.futures.ThreadPoolExecutor(len(jobs)) as ex:
        together = list(ex.map(lambda j: go(*j), jobs))
    assert together == alone
    # they did run as one batch: 3 requests x 3 samples + 2 greedy rows
    stats = srv.request("GET", "/health")[1]["batching"]
    assert stats["maxRequests"] > 1 and stats["maxRows"] > 3, stats
    # another seed, other samples; the same seed on another prompt is not the same stream
    assert go(sampled[0][0], 99) != alone[0]


def test_json_schema_output_validates(tiny):
    schema = {
        "type": "object",
        "properties": {
            "score": {"type": "number", "minimum": 0, "maximum": 1},
            "correct": {"type": "boolean"},
            "rationale": {"type": "string"},
            "label": {"enum": ["right", "wrong"]},
        },
        "required": ["score", "correct", "rationale", "label"],
    }
    rf = {"type": "json_schema", "json_schema": {"name": "grade", "schema": schema, "strict": True}}
    q = "Question: capital of France? Reference: Paris. Candidate: Paris. Grade the candidate."
    for temp in (0, 0.8):
        s, b = ask(tiny, q=q, response_format=rf, temperature=temp, max_tokens=64, n=2, seed=3)
        assert s == 200, b
        for c in b["choices"]:
            obj = json.loads(c["message"]["content"])
            assert set(obj) == {"score", "correct", "rationale", "label"}
            assert isinstance(obj["score"], (int, float)) and 0 <= obj["score"] <= 1
            assert isinstance(obj["correct"], bool)
            assert isinstance(obj["rationale"], str)
            assert obj["label"] in ("right", "wrong")


HI = [{"role": "user", "content": "hi"}]
BIG_SCHEMA = {
    "type": "object",
    "properties": {
        f"p{i}": {"type": "string", "description": "x" * 100} for i in range(LIMITS["maxSchemaBytes"] // 100)
    },
}


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"model": BASE}, "messages"),
        ({"model": BASE, "messages": []}, "messages"),
        ({"model": BASE, "messages": "hi"}, "messages"),
        ({"model": BASE, "messages": [{"role": "wizard", "content": "hi"}]}, "messages[0].role"),
        ({"model": BASE, "messages": [{"role": "user", "content": 3}]}, "messages[0].content"),
        ({"model": BASE, "messages": [{"role": "user"}]}, "messages[0]"),
        ({"model": BASE, "messages": [{"role": "user", "content": [{"type": "image_url"}]}]}, "messages[0].content"),
        ({"model": "", "messages": HI}, "model"),
        ({"model": BASE, "messages": HI, "n": 0}, "n"),
        ({"model": BASE, "messages": HI, "n": "2"}, "n"),
        ({"model": BASE, "messages": HI, "n": LIMITS["maxN"] + 1}, "n"),
        ({"model": BASE, "messages": HI, "temperature": -1}, "temperature"),
        ({"model": BASE, "messages": HI, "top_p": 0}, "top_p"),
        ({"model": BASE, "messages": HI, "max_tokens": 0}, "max_tokens"),
        ({"model": BASE, "messages": HI, "max_tokens": LIMITS["maxTokens"] + 1}, "max_tokens"),
        ({"model": BASE, "messages": HI, "max_completion_tokens": LIMITS["maxTokens"] + 1}, "max_completion_tokens"),
        ({"model": BASE, "messages": HI, "n": LIMITS["maxN"], "max_tokens": LIMITS["maxTokens"]}, "max_tokens"),
        ({"model": BASE, "messages": HI, "seed": "x"}, "seed"),
        ({"model": BASE, "messages": HI, "stop": ["a", "b", "c", "d", "e"]}, "stop"),
        ({"model": BASE, "messages": HI, "stream": True}, "stream"),
        ({"model": BASE, "messages": HI, "response_format": {"type": "yaml"}}, "response_format"),
        (
            {
                "model": BASE,
                "messages": HI,
                "response_format": {"type": "json_schema", "json_schema": {"schema": BIG_SCHEMA}},
            },
            "response_format.json_schema",
        ),
        ([1, 2], None),
    ],
)
def test_bad_requests_400_name_the_field(tiny, body, param):
    s, b = tiny.request("POST", "/v1/chat/completions", body)
    assert s == 400, b
    err = b["error"]
    assert err["type"] == "invalid_request_error" and err["param"] == param, err
    assert err["message"] and (param is None or param in err["message"])


def test_limits_are_the_contract_limits():
    from slearn_trainer.server import api

    fields = api.ChatRequest.model_fields
    assert any(getattr(m, "le", None) == LIMITS["maxN"] for m in fields["n"].metadata)
    assert any(getattr(m, "le", None) == LIMITS["maxTokens"] for m in fields["max_tokens"].metadata)


def test_bad_json_and_non_object_400(tiny):
    s, b = tiny.request("POST", "/v1/chat/completions", raw=b'{"model": ')
    assert s == 400 and "JSON" in b["error"]["message"]
    s, b = tiny.request("POST", "/v1/chat/completions", raw=b"[1]")
    assert s == 400 and "JSON object" in b["error"]["message"]


def test_body_over_the_limit_413(tiny):
    s, b = tiny.request("POST", "/v1/chat/completions", raw=b" " * (LIMITS["maxBodyBytes"] + 1000))
    assert s == 413 and str(LIMITS["maxBodyBytes"]) in b["error"]["message"]
    assert tiny.request("GET", "/health")[0] == 200  # and the server carries on


def test_unknown_model_404(tiny):
    s, b = ask(tiny, model="no-such-model")
    assert s == 404
    assert set(b["error"]) >= {"message", "type", "code"}
    assert "no-such-model" in b["error"]["message"]


# ---------------------------------------------------------------- security


def test_bearer_token(tiny_server, monkeypatch):
    monkeypatch.setenv("SLEARN_TEST_TOKEN", "s3cret")
    srv = tiny_server("--api-key-env", "SLEARN_TEST_TOKEN")
    assert srv.request("GET", "/health")[0] == 200  # open: readiness checks carry no secret
    for headers in ({}, {"authorization": "Bearer wrong"}, {"authorization": "s3cret"}):
        s, b, h = srv.request("GET", "/v1/models", headers=headers, full=True)
        assert s == 401 and b["error"]["type"] == "authentication_error" and h.get("www-authenticate") == "Bearer"
    assert ask(srv)[0] == 401
    srv.headers["authorization"] = "Bearer s3cret"
    assert srv.request("GET", "/v1/models")[0] == 200
    assert ask(srv)[0] == 200


def test_api_key_env_must_be_set(tiny_base, monkeypatch):
    from slearn_trainer import cli, server
    from slearn_trainer.events import FatalError

    monkeypatch.delenv("SLEARN_TEST_UNSET", raising=False)
    with pytest.raises(FatalError, match="SLEARN_TEST_UNSET"):
        server.build(cli.parse_args(["serve", "--base", str(tiny_base), "--api-key-env", "SLEARN_TEST_UNSET"]))


def test_adapters_load_only_from_below_the_adapter_root(tiny, tiny_adapter, adapter_root, tmp_path):
    load = lambda name, path: tiny.request("POST", "/v1/load_lora_adapter", {"lora_name": name, "lora_path": path})  # noqa: E731
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "adapter_config.json").write_text((tiny_adapter / "adapter_config.json").read_text())
    link = adapter_root / "escape"
    link.symlink_to(outside)
    try:
        for path in (str(outside), str(link), str(adapter_root / ".." / outside.name), "/etc"):
            s, b = load("x", path)
            assert s == 400 and "outside the server's --adapter-root" in b["error"]["message"], (path, b)
        s, b = load("tiny", str(tiny_adapter))
        assert s == 200, b
        assert load("tiny", str(tiny_adapter))[1]["error"]["message"].endswith("has already been loaded.")
        cards = {m["id"]: m for m in tiny.request("GET", "/v1/models")[1]["data"]}
        assert cards["tiny"]["root"] == "tiny" and cards["tiny"]["parent"] == BASE  # no paths shown
        assert text(ask(tiny, model="tiny")[1]) != text(ask(tiny)[1])  # the adapter is applied
        assert tiny.request("POST", "/v1/unload_lora_adapter", {"lora_name": "tiny"})[0] == 200
        s, b = load("rel", tiny_adapter.name)  # relative: below the root
        assert s == 200, b
        assert tiny.request("POST", "/v1/unload_lora_adapter", {"lora_name": "rel"})[0] == 200
        assert tiny.request("POST", "/v1/unload_lora_adapter", {"lora_name": "rel"})[0] == 404
    finally:
        link.unlink()


def test_without_adapter_root_only_startup_adapters(tiny_server, tiny_adapter):
    srv = tiny_server("--adapter", f"start={tiny_adapter}")
    assert ask(srv, model="start")[0] == 200
    s, b = srv.request("POST", "/v1/load_lora_adapter", {"lora_name": "x", "lora_path": str(tiny_adapter)})
    assert s == 400 and "--adapter-root" in b["error"]["message"]


def test_max_adapters(tiny_server, tiny_adapter, adapter_root):
    srv = tiny_server("--adapter-root", str(adapter_root), "--max-adapters", "1")
    body = {"lora_name": "a", "lora_path": str(tiny_adapter)}
    assert srv.request("POST", "/v1/load_lora_adapter", body)[0] == 200
    s, b = srv.request("POST", "/v1/load_lora_adapter", {**body, "lora_name": "b"})
    assert s == 400 and "unload one" in b["error"]["message"]


# ---------------------------------------------------------------- the queue


def test_full_queue_429_with_retry_after(tiny_server):
    srv = tiny_server("--max-queue", "1")
    gate = block(srv.engine)
    with concurrent.futures.ThreadPoolExecutor(1) as ex:
        try:
            waiting = ex.submit(ask, srv)
            wait_until(lambda: srv.engine.waiting == 1, what="one waiting request")
            s, b, h = srv.request(
                "POST", "/v1/chat/completions", {"messages": HI, "max_tokens": 4, "temperature": 0}, full=True
            )
            assert s == 429 and b["error"]["code"] == "queue_full", b
            assert int(h["retry-after"]) >= 1
        finally:
            gate.set()
        assert waiting.result()[0] == 200
    assert ask(srv)[0] == 200  # room again


def test_request_of_a_client_that_left_is_not_generated(tiny_server):
    srv = tiny_server()
    engine = srv.engine
    generated = []
    run_gen = engine._run_gen
    engine._run_gen = lambda batch: generated.extend(j.req.messages[0].content for j in batch) or run_gen(batch)
    gate = block(engine)
    try:
        conn = srv.connection()
        conn.request(
            "POST",
            "/v1/chat/completions",
            json.dumps({"messages": [{"role": "user", "content": "gone"}]}),
            {"content-type": "application/json"},
        )
        wait_until(lambda: engine.waiting == 1, what="the request to wait")
        job = next(j for j in engine.q if j.kind == "gen")
        conn.close()
        wait_until(job.future.cancelled, what="the job to be cancelled")
    finally:
        gate.set()
    assert ask(srv, q="still here")[0] == 200
    assert generated == ["still here"] and engine.waiting == 0


def test_unload_while_queued_fails_instead_of_answering_with_the_base(tiny_server, tiny_adapter):
    srv = tiny_server("--adapter", f"x={tiny_adapter}")
    engine = srv.engine
    gate = block(engine)
    with concurrent.futures.ThreadPoolExecutor(2) as ex:
        try:
            unload = ex.submit(srv.request, "POST", "/v1/unload_lora_adapter", {"lora_name": "x"})
            wait_until(lambda: any(j.kind == "control" for j in engine.q), what="the unload to queue")
            chat = ex.submit(ask, srv, model="x")  # accepted: x is still loaded when it arrives
            wait_until(lambda: engine.waiting == 1, what="the request to queue behind the unload")
        finally:
            gate.set()
        assert unload.result()[0] == 200
        s, b = chat.result()
    assert s == 404 and "unloaded" in b["error"]["message"], b


# ---------------------------------------------------------------- the real model, the real command


def test_trained_adapter_changes_answers(server, adapter_path):
    s, base = ask(server, max_tokens=24)
    assert s == 200
    base_text = text(base)
    s, b = server.request("POST", "/v1/load_lora_adapter", {"lora_name": "tuned", "lora_path": str(adapter_path)})
    assert s == 200, b
    s, tuned = ask(server, model="tuned", max_tokens=24)
    assert s == 200, tuned
    assert text(tuned) != base_text and PROBE_ANSWER_WORD in text(tuned)
    assert text(ask(server, max_tokens=24)[1]) == base_text  # base requests run with adapters disabled
    assert server.request("POST", "/v1/unload_lora_adapter", {"lora_name": "tuned"})[0] == 200
    assert ask(server, model="tuned")[0] == 404
    assert text(ask(server, max_tokens=24)[1]) == base_text


def test_stop_tokens_are_every_id_of_the_generation_config(tiny_base, tmp_path, tiny_server):
    """The server stops on the tokenizer's EOS and on every id the generation config lists (Llama 3
    ends turns with <|eot_id|>, which is not its tokenizer's EOS), nothing hard-coded."""
    from types import SimpleNamespace

    from slearn_trainer.server.api import ChatRequest
    from slearn_trainer.server.engine import Row, stop_token_ids

    from .conftest import LiveServer

    llama3 = SimpleNamespace(generation_config=SimpleNamespace(eos_token_id=[128001, 128008, 128009]))
    assert stop_token_ids(llama3, SimpleNamespace(eos_token_id=128001)) == [128001, 128008, 128009]
    # the tiny model's first greedy token, made an end-of-turn id in a copy of its generation config
    srv = tiny_server()
    req = ChatRequest(model=BASE, messages=[{"role": "user", "content": PROBE}], temperature=0, max_tokens=4)
    ids = srv.engine.prompt_ids(req)
    [(tokens, _)] = srv.engine.control(lambda: srv.engine._generate([Row(ids)], max_new=1)).result()
    status, body = ask(srv, max_tokens=4)
    assert status == 200 and text(body) != "", body
    base = tmp_path / "stops"
    shutil.copytree(tiny_base, base)
    gen = json.loads((base / "generation_config.json").read_text())
    gen["eos_token_id"] = [gen["eos_token_id"], tokens[0]]
    (base / "generation_config.json").write_text(json.dumps(gen))
    stopping = LiveServer(["--base", str(base)])
    try:
        assert tokens[0] in stopping.engine.eos_ids
        status, body = ask(stopping, max_tokens=4)
        assert status == 200 and body["choices"][0]["finish_reason"] == "stop" and text(body) == "", body
    finally:
        stopping.stop()
