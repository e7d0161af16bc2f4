import json
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from .conftest import (
    BATCH,
    EPOCHS,
    FACTS,
    TOTAL_STEPS,
    env,
    parse_events,
    train_cmd,
    write_chat_jsonl,
)

# ---------------------------------------------------------------- the real model


def test_killed_run_resumes_to_same_total(resumed_run, runtime_info):
    first = resumed_run["first"]
    # where `auto` trains is what `info` says this host has (CUDA on a GPU host, else the CPU)
    assert first[0] | {"device": "?"} == {
        "event": "start",
        "total_steps": TOTAL_STEPS,
        "resumed_from_step": 0,
        "device": "?",
        "precision": runtime_info["precision"],
        "processes": 1,
        "per_device_batch": BATCH,
        "gradient_accumulation": 1,
        "effective_batch": BATCH,
        "distributed": "none",
        "gradient_checkpointing": first[0]["gradient_checkpointing"],
        "attention": first[0]["attention"],
        **({"gpus": runtime_info["gpus"][:1]} if runtime_info["device"] == "cuda" else {}),
    }
    assert first[0]["device"] == runtime_info["device"]
    assert any(e["event"] == "progress" for e in first)
    ck = next(e for e in first if e["event"] == "checkpoint")
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
    # tokens trained on in this process: counted from zero again after the resume, and growing
    tokens = [e["tokens"] for e in progress]
    assert 0 < tokens[0] < tokens[-1] and tokens == sorted(tokens)
    cks = [e for e in evs if e["event"] == "checkpoint"]
    assert cks and cks[-1]["step"] == TOTAL_STEPS  # older ones may be rotated away (save_total_limit=2)
    assert (resumed_run["out"] / f"checkpoint-{TOTAL_STEPS}" / "slearn-complete.json").is_file()
    done = evs[-1]
    assert done["event"] == "done" and done["steps"] == TOTAL_STEPS
    assert done["train_seconds"] > 0 and done["tokens_per_second"] > 0
    assert ("peak_memory_bytes" in done) == (runtime_info["device"] == "cuda")  # CUDA only
    assert not (resumed_run["out"] / "checkpoint-999").exists()


def test_every_event_kind_matches_the_contract(resumed_run):
    # parse_events validated each against contract.json; here: all kinds were seen
    kinds = {e["event"] for e in resumed_run["first"] + resumed_run["second_events"]}
    assert kinds == {"start", "progress", "checkpoint", "done"}


def test_completed_run_is_not_repeated(resumed_run):
    third = resumed_run["third"]
    assert third.returncode == 0, third.stderr[-2000:]
    evs = resumed_run["third_events"]
    assert [e["event"] for e in evs] == ["start", "done"]
    assert evs[1]["steps"] == TOTAL_STEPS
    assert evs[1]["tokens_per_second"] == resumed_run["second_events"][-1]["tokens_per_second"]
    assert resumed_run["third_seconds"] < 30


def test_adapter_loads_with_peft(adapter_path):
    cfg = json.loads((adapter_path / "adapter_config.json").read_text())
    assert cfg["peft_type"] == "LORA" and cfg["r"] == 8
    # all-linear: every projection of the Llama blocks, not the LM head
    assert set(cfg["target_modules"]) == {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}
    assert (adapter_path / "adapter_model.safetensors").is_file()
    from peft import PeftModel

    from slearn_trainer import modelload

    model, _, _ = modelload.load_model_and_tokenizer("embedded")
    peft_model = PeftModel.from_pretrained(model, str(adapter_path))
    assert "default" in peft_model.peft_config
    n_lora = sum(1 for n, _ in peft_model.named_parameters() if "lora_" in n)
    assert n_lora > 0


def test_init_adapter_continues_training(tmp_path, train_data, resumed_run, adapter_path):
    """A chained run starts from the adapter: its first loss is far below a fresh run's first loss,
    and what it writes is again an adapter PEFT loads."""
    out = tmp_path / "chained"
    r = subprocess.run(
        train_cmd(train_data, out, "--init-adapter", str(adapter_path), "--max-steps", "1"),
        capture_output=True,
        text=True,
        env=env(),
        timeout=600,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    evs = parse_events(r.stdout)
    assert evs[0]["event"] == "start" and evs[0]["resumed_from_step"] == 0 and evs[0]["total_steps"] == 1
    fresh_first = next(e["loss"] for e in resumed_run["first"] if e["event"] == "progress")
    chained_first = next(e["loss"] for e in evs if e["event"] == "progress")
    assert chained_first < 0.5 * fresh_first, (chained_first, fresh_first)
    done = evs[-1]
    assert done["event"] == "done" and done["steps"] == 1
    from peft import PeftModel

    from slearn_trainer import modelload

    model, _, _ = modelload.load_model_and_tokenizer("embedded")
    PeftModel.from_pretrained(model, done["adapter"])
    info = json.loads((out / "adapter" / "slearn_training.json").read_text())
    assert info["init_adapter_sha256"]


# ---------------------------------------------------------------- fast failures


def test_bad_data_fails_fast_not_retryable(tmp_path):
    data = tmp_path / "bad.jsonl"
    data.write_text(
        '{"messages":[{"role":"user","content":"q"},{"role":"assistant","content":"a"}]}\n'
        '{"messages":[{"role":"user","content":"q only"}]}\n'
        "not json\n"
    )
    r = subprocess.run(train_cmd(data, tmp_path / "out"), capture_output=True, text=True, env=env(), timeout=120)
    assert r.returncode == 1
    evs = parse_events(r.stdout)
    assert len(evs) == 1 and evs[0]["event"] == "error" and evs[0]["retryable"] is False
    assert "bad.jsonl:2" in evs[0]["message"] and "bad.jsonl:3" in evs[0]["message"]


# ---------------------------------------------------------------- the tiny model


def test_training_options_and_fingerprint(tmp_path, tiny_base):
    """--packing, --grad-accum, --lora-targets and --lora-dropout reach TRL/PEFT, and an --out dir
    trained with other settings is refused (not resumed)."""
    data = write_chat_jsonl(tmp_path / "d.jsonl", FACTS)
    out = tmp_path / "out"
    opts = [
        "--packing",
        "--grad-accum",
        "2",
        "--lora-targets",
        "q_proj,v_proj",
        "--lora-dropout",
        "0.1",
        "--max-steps",
        "3",
        "--save-steps",
        "100",
    ]
    r = subprocess.run(
        train_cmd(data, out, *opts, base=tiny_base), capture_output=True, text=True, env=env(), timeout=300
    )
    assert r.returncode == 0, r.stderr[-3000:]
    evs = parse_events(r.stdout)
    assert [e["step"] for e in evs if e["event"] == "progress"] == [1, 2, 3] and evs[-1]["event"] == "done"
    assert all(e["tokens"] > 0 for e in evs if e["event"] == "progress")
    cfg = json.loads((out / "adapter" / "adapter_config.json").read_text())
    assert set(cfg["target_modules"]) == {"q_proj", "v_proj"} and cfg["lora_dropout"] == 0.1
    run_cfg = json.loads((out / "slearn_run.json").read_text())
    assert run_cfg["packing"] is True and run_cfg["gradient_accumulation"] == 2

    opts[opts.index("0.1")] = "0.2"
    r = subprocess.run(
        train_cmd(data, out, *opts, base=tiny_base), capture_output=True, text=True, env=env(), timeout=300
    )
    assert r.returncode == 1
    evs = parse_events(r.stdout)
    assert evs[-1]["retryable"] is False and "--lora-dropout" in evs[-1]["message"]


def test_packing_keeps_the_loss_on_answers_only(tmp_path, tiny_base):
    """TRL 1.16 builds labels before packing: the same answer tokens carry the loss packed or not."""
    from datasets import Dataset
    from trl import SFTTrainer

    from slearn_trainer import cli, device, distributed, train
    from slearn_trainer import data as data_module

    data = write_chat_jsonl(tmp_path / "d.jsonl", FACTS)
    rows = data_module.read_chat_jsonl(str(data))
    labelled = {}
    for packing in (False, True):
        args = cli.parse_args(
            [
                "train",
                "--base",
                str(tiny_base),
                "--data",
                str(data),
                "--out",
                str(tmp_path / "o"),
                "--max-seq-len",
                "256",
                *(["--packing"] if packing else []),
            ]
        )
        runtime = device.Runtime("cpu", "fp32")
        model, tok = train.load_model(args, runtime)
        ds = Dataset.from_list([{"prompt": r["prompt"], "completion": r["completion"]} for r in rows])
        trainer = SFTTrainer(
            model=model,
            args=train.sft_config(args, train.make_plan(args, runtime, distributed.Ranks(), model), tmp_path / "o"),
            train_dataset=ds,
            processing_class=tok,
            peft_config=train.lora_config(args),
        )
        labels = [x for row in trainer.train_dataset["labels"] for x in row]
        labelled[packing] = (sum(1 for x in labels if x != -100), len(labels), len(trainer.train_dataset))
    assert labelled[True][0] == labelled[False][0]  # the same answer tokens
    assert labelled[True][0] < labelled[True][1] / 2  # prompts are masked
    assert labelled[True][2] < labelled[False][2]  # and the examples were packed together


def test_stdin_watchdog_stops_an_orphaned_trainer(tmp_path, tiny_base):
    """SLEARN_TRAINER_WATCH_STDIN=1: when the worker that started the trainer dies, its pipe closes
    and the trainer stops as on SIGTERM (retryable error event, exit 143)."""
    data = write_chat_jsonl(tmp_path / "d.jsonl", FACTS)
    p = subprocess.Popen(
        train_cmd(data, tmp_path / "out", "--epochs", "1000", base=tiny_base),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=env(SLEARN_TRAINER_WATCH_STDIN="1"),
    )
    try:
        evs = []
        for line in p.stdout:
            evs += parse_events(line)
            if any(e["event"] == "progress" for e in evs):
                break
        t0 = time.time()
        p.stdin.close()  # what the kernel does when the parent is SIGKILLed
        rc = p.wait(timeout=30)
        evs += parse_events(p.stdout.read())
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
        p.stdout.close()
    assert rc == 128 + signal.SIGTERM
    assert time.time() - t0 < 10
    assert evs[-1]["event"] == "error" and evs[-1]["retryable"] is True and "stdin closed" in evs[-1]["message"]


def test_late_order_puts_late_rows_in_the_second_half_only():
    from slearn_trainer.data import late_order

    rows = [{"i": i} for i in range(10)]
    late = [{"late": k} for k in range(4)]
    order = late_order(rows, late, 2, seed=3)
    assert len(order) == 2 * 10 + 4
    first_half = order[: (2 * 10) // 2]
    assert not any("late" in r for r in first_half)
    assert sorted(r["late"] for r in order if "late" in r) == [0, 1, 2, 3]
    # each epoch is every row once, shuffled; the same seed lays out the same sequence
    epochs = [r["i"] for r in order if "i" in r]
    assert sorted(epochs[:10]) == list(range(10)) and sorted(epochs[10:]) == list(range(10))
    assert epochs[:10] != list(range(10))
    assert late_order(rows, late, 2, seed=3) == order


def test_late_data_and_warmup_train_in_one_pass(tmp_path, tiny_base):
    data = write_chat_jsonl(tmp_path / "train.jsonl", FACTS[:6])
    late = write_chat_jsonl(tmp_path / "late.jsonl", FACTS[6:8])
    out = tmp_path / "out"
    cmd = train_cmd(data, out, "--late-data", str(late), "--warmup-ratio", "0.25", "--device", "cpu", base=tiny_base)
    r = subprocess.run(cmd, capture_output=True, text=True, env=env(), timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    evs = parse_events(r.stdout)
    # EPOCHS passes over 6 rows plus the 2 late rows once, in batches of BATCH
    total = -(-(EPOCHS * 6 + 2) // BATCH)
    assert evs[0]["total_steps"] == total
    progress = [e for e in evs if e["event"] == "progress"]
    # the epoch counter still counts the requested epochs
    assert progress[-1]["epoch"] == pytest.approx(EPOCHS, abs=0.01)
    info = json.loads((out / "adapter" / "slearn_training.json").read_text())
    assert info["late_examples"] == 2 and info["warmup_ratio"] == 0.25 and info["late_data_sha256"]
    # another late set is another training: the same --out refuses to resume it
    late2 = write_chat_jsonl(tmp_path / "late2.jsonl", FACTS[5:8])
    r2 = subprocess.run(
        train_cmd(data, out, "--late-data", str(late2), "--warmup-ratio", "0.25", base=tiny_base),
        capture_output=True,
        text=True,
        env=env(),
        timeout=300,
    )
    assert r2.returncode == 1 and "--late-data" in r2.stdout


# ---------------------------------------------------------------- chat templates, converted bases

TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def base_without_template(tmp_path, tiny_base) -> Path:
    base = tmp_path / "no-template"
    shutil.copytree(tiny_base, base)
    (base / "chat_template.jinja").unlink(missing_ok=True)
    cfg = json.loads((base / "tokenizer_config.json").read_text())
    cfg.pop("chat_template", None)
    (base / "tokenizer_config.json").write_text(json.dumps(cfg))
    return base


def test_a_base_without_chat_template_takes_one_from_a_file(tmp_path, tiny_base):
    """Refused without --chat-template (not retryable, naming the flag); trained with one, and the
    file is part of what the run learns from; the model server takes the same file."""
    base = base_without_template(tmp_path, tiny_base)
    data = write_chat_jsonl(tmp_path / "d.jsonl", FACTS[:4])
    r = subprocess.run(
        train_cmd(data, tmp_path / "refused", "--max-steps", "1", base=base),
        capture_output=True,
        text=True,
        env=env(),
        timeout=300,
    )
    evs = parse_events(r.stdout)
    assert r.returncode == 1 and evs[-1]["retryable"] is False and "--chat-template FILE" in evs[-1]["message"]
    template = tmp_path / "chatml.jinja"
    template.write_text(TEMPLATE)
    out = tmp_path / "out"
    r = subprocess.run(
        train_cmd(data, out, "--max-steps", "1", "--chat-template", str(template), base=base),
        capture_output=True,
        text=True,
        env=env(),
        timeout=300,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    assert json.loads((out / "slearn_run.json").read_text())["chat_template_sha256"]

    from .conftest import LiveServer

    srv = LiveServer(["--base", str(base), "--chat-template", str(template)])
    try:
        status, body = srv.chat(messages=[{"role": "user", "content": "hi"}], max_tokens=2)
        assert status == 200, body
    finally:
        srv.stop()


def test_gguf_base_is_converted_once_in_the_runs_dtype(tmp_path, monkeypatch):
    """A GGUF base becomes a Hugging Face copy in the precision it runs in (bf16 on a GPU: half the
    memory and disk of float32), converted once and then read from the cache."""
    import torch
    from safetensors import safe_open

    from slearn_trainer import modelload

    monkeypatch.setenv("SLEARN_MODEL_CACHE", str(tmp_path))
    d = modelload.hf_dir_for("embedded", "bf16")
    assert d.name.endswith("-bf16") and d.parent == tmp_path
    weights = next(d.glob("*.safetensors"))
    with safe_open(str(weights), "pt") as f:
        assert {f.get_tensor(k).dtype for k in list(f.keys())[:5]} == {torch.bfloat16}
    stamp = (d / ".slearn-complete").stat().st_mtime_ns
    assert modelload.hf_dir_for("embedded", "bf16") == d
    assert (d / ".slearn-complete").stat().st_mtime_ns == stamp  # not converted again
