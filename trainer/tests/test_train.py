import json
import subprocess

from .conftest import TOTAL_STEPS, env, parse_events, train_cmd, write_chat_jsonl


def test_killed_run_resumes_to_same_total(resumed_run):
    first = resumed_run["first"]
    assert first[0] == {"event": "start", "total_steps": TOTAL_STEPS, "resumed_from_step": 0}
    assert any(e["event"] == "progress" for e in first)
    ck = [e for e in first if e["event"] == "checkpoint"][0]
    assert resumed_run["killed_rc"] != 0

    second = resumed_run["second"]
    assert second.returncode == 0, second.stderr[-3000:]
    evs = resumed_run["second_events"]
    assert evs[0]["event"] == "start"
    assert evs[0]["total_steps"] == TOTAL_STEPS
    assert evs[0]["resumed_from_step"] >= ck["step"] > 0
    assert evs[0]["resumed_from_step"] < 999  # the half-written checkpoint was ignored
    progress = [e for e in evs if e["event"] == "progress"]
    assert [e["step"] for e in progress] == list(range(evs[0]["resumed_from_step"] + 1, TOTAL_STEPS + 1))
    assert all(isinstance(e["loss"], float) and e["total_steps"] == TOTAL_STEPS for e in progress)
    cks = [e for e in evs if e["event"] == "checkpoint"]
    assert cks and cks[-1]["step"] == TOTAL_STEPS  # older ones may be rotated away (save_total_limit=2)
    assert (resumed_run["out"] / f"checkpoint-{TOTAL_STEPS}" / "slearn-complete.json").is_file()
    done = evs[-1]
    assert done["event"] == "done" and done["steps"] == TOTAL_STEPS
    assert done["train_seconds"] > 0
    assert not (resumed_run["out"] / "checkpoint-999").exists()


def test_completed_run_is_not_repeated(resumed_run):
    third = resumed_run["third"]
    assert third.returncode == 0, third.stderr[-2000:]
    evs = resumed_run["third_events"]
    assert [e["event"] for e in evs] == ["start", "done"]
    assert evs[1]["steps"] == TOTAL_STEPS
    assert resumed_run["third_seconds"] < 30


def test_adapter_loads_with_peft(adapter_path):
    cfg = json.loads((adapter_path / "adapter_config.json").read_text())
    assert cfg["peft_type"] == "LORA" and cfg["r"] == 8
    assert (adapter_path / "adapter_model.safetensors").is_file()
    from peft import PeftModel

    from slearn_trainer import modelload

    model, tok, _ = modelload.load_model_and_tokenizer("embedded")
    peft_model = PeftModel.from_pretrained(model, str(adapter_path))
    assert "default" in peft_model.peft_config
    n_lora = sum(1 for n, _ in peft_model.named_parameters() if "lora_" in n)
    assert n_lora > 0


def test_bad_data_fails_fast_not_retryable(tmp_path):
    data = tmp_path / "bad.jsonl"
    data.write_text('{"messages":[{"role":"user","content":"q"},{"role":"assistant","content":"a"}]}\n'
                    '{"messages":[{"role":"user","content":"q only"}]}\n'
                    'not json\n')
    r = subprocess.run(train_cmd(data, tmp_path / "out"), capture_output=True, text=True, env=env(), timeout=120)
    assert r.returncode != 0
    evs = parse_events(r.stdout)
    assert len(evs) == 1 and evs[0]["event"] == "error" and evs[0]["retryable"] is False
    assert "bad.jsonl:2" in evs[0]["message"] and "bad.jsonl:3" in evs[0]["message"]


def test_bad_args_fail_not_retryable(tmp_path):
    data = write_chat_jsonl(tmp_path / "d.jsonl", [("q", "a")])
    r = subprocess.run(train_cmd(data, tmp_path / "out", "--lr", "-1"), capture_output=True, text=True,
                       env=env(), timeout=120)
    assert r.returncode != 0
    evs = parse_events(r.stdout)
    assert evs[-1]["event"] == "error" and evs[-1]["retryable"] is False and "--lr" in evs[-1]["message"]
    r = subprocess.run(train_cmd(data, tmp_path / "out", "--epochs", "x"), capture_output=True, text=True,
                       env=env(), timeout=120)
    assert r.returncode == 2
    assert parse_events(r.stdout)[-1]["retryable"] is False
