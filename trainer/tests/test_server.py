import concurrent.futures
import json

import pytest

from .conftest import PROBE, PROBE_ANSWER_WORD

BASE = "smollm2-135m-instruct"


def ask(server, model=BASE, q=PROBE, **kw):
    body = {"model": model, "messages": [{"role": "user", "content": q}], "temperature": 0, "max_tokens": 24}
    body.update(kw)
    return server.chat(**body)


def test_models_and_health(server):
    status, body = server.request("GET", "/v1/models")
    assert status == 200
    assert body["object"] == "list"
    assert BASE in [m["id"] for m in body["data"]]
    assert server.request("GET", "/health")[0] == 200


def test_completion_shape_and_greedy_determinism(server):
    s1, b1 = ask(server)
    s2, b2 = ask(server)
    assert s1 == s2 == 200, (b1, b2)
    assert b1["object"] == "chat.completion" and b1["model"] == BASE
    c = b1["choices"][0]
    assert c["message"]["role"] == "assistant" and c["message"]["content"].strip()
    assert c["finish_reason"] in ("stop", "length")
    u = b1["usage"]
    assert u["prompt_tokens"] > 0 and u["completion_tokens"] > 0
    assert u["total_tokens"] == u["prompt_tokens"] + u["completion_tokens"]
    assert b1["choices"][0]["message"]["content"] == b2["choices"][0]["message"]["content"]


def test_n_choices_sampling_and_seed(server):
    s, b = ask(server, n=3, temperature=0.9, seed=11, max_tokens=12)
    assert s == 200, b
    assert [c["index"] for c in b["choices"]] == [0, 1, 2]
    s2, b2 = ask(server, n=3, temperature=0.9, seed=11, max_tokens=12)
    assert [c["message"]["content"] for c in b["choices"]] == [c["message"]["content"] for c in b2["choices"]]
    s, b = ask(server, n=2, max_tokens=8)  # greedy n>1: identical choices
    assert s == 200 and len(b["choices"]) == 2


def test_concurrent_requests_are_batched_safely(server):
    qs = ["What is 2+2?", "Name a color.", "What is the capital of Italy?", "Say hello.", PROBE, "Name a fruit."]
    with concurrent.futures.ThreadPoolExecutor(6) as ex:
        res = list(ex.map(lambda q: ask(server, q=q, max_tokens=10), qs))
    assert all(s == 200 and b["choices"][0]["message"]["content"] for s, b in res), res


def test_json_schema_output_validates(server):
    schema = {"type": "object", "properties": {
        "score": {"type": "number", "minimum": 0, "maximum": 1},
        "correct": {"type": "boolean"},
        "rationale": {"type": "string"},
        "label": {"enum": ["right", "wrong"]},
    }, "required": ["score", "correct", "rationale", "label"]}
    rf = {"type": "json_schema", "json_schema": {"name": "grade", "schema": schema, "strict": True}}
    q = "Question: capital of France? Reference: Paris. Candidate: Paris. Grade the candidate."
    for temp in (0, 0.8):
        s, b = ask(server, q=q, response_format=rf, temperature=temp, max_tokens=64, n=2, seed=3)
        assert s == 200, b
        for c in b["choices"]:
            obj = json.loads(c["message"]["content"])
            assert set(obj) == {"score", "correct", "rationale", "label"}
            assert isinstance(obj["score"], (int, float)) and 0 <= obj["score"] <= 1
            assert isinstance(obj["correct"], bool)
            assert isinstance(obj["rationale"], str)
            assert obj["label"] in ("right", "wrong")


@pytest.mark.parametrize("body", [
    {"model": BASE},
    {"model": BASE, "messages": []},
    {"model": BASE, "messages": "hi"},
    {"model": BASE, "messages": [{"role": "wizard", "content": "hi"}]},
    {"model": BASE, "messages": [{"role": "user", "content": 3}]},
    {"model": BASE, "messages": [{"role": "user", "content": "hi"}], "n": 0},
    {"model": BASE, "messages": [{"role": "user", "content": "hi"}], "n": "2"},
    {"model": BASE, "messages": [{"role": "user", "content": "hi"}], "temperature": -1},
    {"model": BASE, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 0},
    {"model": BASE, "messages": [{"role": "user", "content": "hi"}], "seed": "x"},
    {"model": BASE, "messages": [{"role": "user", "content": "hi"}], "response_format": {"type": "yaml"}},
    [1, 2],
])
def test_bad_requests_400(server, body):
    s, b = server.request("POST", "/v1/chat/completions", body)
    assert s == 400, b
    assert b["error"]["message"] and b["error"]["type"]


def test_bad_json_400(server):
    s, b = server.request("POST", "/v1/chat/completions", raw=b'{"model": ')
    assert s == 400 and "JSON" in b["error"]["message"]


def test_unknown_model_404(server):
    s, b = ask(server, model="no-such-model")
    assert s == 404
    assert set(b["error"]) >= {"message", "type", "code"}
    assert "no-such-model" in b["error"]["message"]


def test_load_unload_adapter_changes_answers(server, adapter_path):
    s, base = ask(server)
    assert s == 200
    base_text = base["choices"][0]["message"]["content"]

    s, b = server.request("POST", "/v1/load_lora_adapter", {"lora_name": "tuned", "lora_path": str(adapter_path)})
    assert s == 200, b
    s, b = server.request("POST", "/v1/load_lora_adapter", {"lora_name": "tuned", "lora_path": str(adapter_path)})
    assert s == 400  # already loaded
    s, b = server.request("POST", "/v1/load_lora_adapter", {"lora_name": "x", "lora_path": "/no/such/dir"})
    assert s == 400
    assert "tuned" in [m["id"] for m in server.request("GET", "/v1/models")[1]["data"]]

    s, tuned = ask(server, model="tuned")
    assert s == 200, tuned
    tuned_text = tuned["choices"][0]["message"]["content"]
    assert tuned_text != base_text
    assert PROBE_ANSWER_WORD in tuned_text
    # base requests run with adapters disabled
    assert ask(server)[1]["choices"][0]["message"]["content"] == base_text

    s, b = server.request("POST", "/v1/unload_lora_adapter", {"lora_name": "tuned"})
    assert s == 200, b
    assert ask(server, model="tuned")[0] == 404
    assert server.request("POST", "/v1/unload_lora_adapter", {"lora_name": "tuned"})[0] == 404
    assert ask(server)[1]["choices"][0]["message"]["content"] == base_text
