"""The command line follows contract.json; device, precision and model choices fail fast and clearly."""

import json
import os
import subprocess
import time

import pytest
from jsonschema import Draft202012Validator

from slearn_trainer import cli, contract, device, modelload, train
from slearn_trainer.events import FatalError

from .conftest import PY, env, parse_events, train_cmd, write_chat_jsonl


def _options(cmd: str) -> dict:
    sub = cli.build_parser()._subparsers._group_actions[0].choices[cmd]
    return {a.option_strings[0]: a for a in sub._actions if a.option_strings and a.dest != "help"}


@pytest.mark.parametrize("cmd", ["train", "serve"])
def test_parsers_follow_the_contract(cmd):
    schema = contract.CONTRACT[cmd]
    opts = _options(cmd)
    assert set(opts) == {p["flag"] for p in schema["properties"].values()}
    for key, prop in schema["properties"].items():
        a = opts[prop["flag"]]
        assert a.dest == contract.dest(key)
        assert a.help.startswith(prop["description"].replace("%", "%%"))
        assert a.required == (key in schema.get("required", ()))
        if "enum" in prop:
            assert list(a.choices) == prop["enum"]
        if prop.get("type") == "boolean":
            assert a.nargs == 0 and a.default is False
        elif prop.get("type") != "array" and not a.required:
            assert a.default == prop.get("default")
    args = cli.parse_args([cmd, "--base", "b", *(["--data", "d", "--out", "o"] if cmd == "train" else [])])
    for key, prop in schema["properties"].items():
        if "default" in prop:
            assert getattr(args, contract.dest(key)) == prop["default"], key


def test_serve_adapter_is_repeatable_and_checked():
    args = cli.parse_args(["serve", "--base", "b", "--adapter", "a=/x", "--adapter", "b=/y"])
    assert args.adapter == ["a=/x", "b=/y"] and args.max_queue == contract.LIMITS["maxQueue"]
    with pytest.raises(SystemExit) as e:
        cli.parse_args(["serve", "--base", "b", "--adapter", "no-equals-sign"])
    assert e.value.code == 2


def test_usage_errors_exit_2_not_retryable(tmp_path):
    data = write_chat_jsonl(tmp_path / "d.jsonl", [("q", "a")])
    for extra, named in (
        (["--lr", "-1"], "--lr"),
        (["--epochs", "x"], "--epochs"),
        (["--device", "tpu"], "--device"),
        (["--lora-dropout", "1.5"], "--lora-dropout"),
    ):
        r = subprocess.run(
            train_cmd(data, tmp_path / "out", *extra), capture_output=True, text=True, env=env(), timeout=120
        )
        assert r.returncode == 2, (extra, r.stderr[-2000:])
        evs = parse_events(r.stdout)
        assert evs[-1]["event"] == "error" and evs[-1]["retryable"] is False and named in evs[-1]["message"]


@pytest.mark.parametrize(
    ("req", "cuda", "bf16", "want"),
    [
        (("auto", "auto"), False, False, ("cpu", "fp32")),
        (("auto", "auto"), True, True, ("cuda", "bf16")),
        (("auto", "auto"), True, False, ("cuda", "fp16")),
        (("cpu", "auto"), True, True, ("cpu", "fp32")),
        (("cuda", "fp32"), True, True, ("cuda", "fp32")),
        (("auto", "fp16"), True, True, ("cuda", "fp16")),
        (("cpu", "fp32"), False, False, ("cpu", "fp32")),
    ],
)
def test_device_choice(req, cuda, bf16, want):
    assert device.choose(*req, cuda_available=cuda, bf16_supported=bf16) == want


@pytest.mark.parametrize(
    ("req", "cuda", "bf16", "says"),
    [
        (("cuda", "auto"), False, False, "--device cuda"),
        (("cpu", "bf16"), True, True, "--precision bf16 needs a GPU"),
        (("auto", "fp16"), False, False, "--precision fp16 needs a GPU"),
        (("cuda", "bf16"), True, False, "does not support bf16"),
    ],
)
def test_device_choice_refusals(req, cuda, bf16, says):
    with pytest.raises(device.DeviceError, match=says):
        device.choose(*req, cuda_available=cuda, bf16_supported=bf16)


def test_quantization_check():
    device.check_quantization("none", "cpu", False)
    device.check_quantization("4bit", "cuda", True)
    with pytest.raises(device.DeviceError, match="needs a CUDA GPU"):
        device.check_quantization("4bit", "cpu", True)
    with pytest.raises(device.DeviceError, match=r"slearn_trainer\[qlora\]"):
        device.check_quantization("4bit", "cuda", False)


def test_info_matches_the_contract():
    r = subprocess.run([PY, "-m", "slearn_trainer", "info"], capture_output=True, text=True, env=env(), timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    info = json.loads(r.stdout)
    Draft202012Validator(contract.CONTRACT["info"]).validate(info)
    import torch

    assert info["device"] == ("cuda" if torch.cuda.is_available() else "cpu")
    assert info["torch"] == torch.__version__


def _has_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


@pytest.mark.skipif(_has_cuda(), reason="this machine has CUDA")
def test_device_cuda_without_cuda_fails_at_once(tmp_path, train_data):
    out = tmp_path / "out"
    t0 = time.time()
    r = subprocess.run(
        train_cmd(train_data, out, "--device", "cuda"), capture_output=True, text=True, env=env(), timeout=120
    )
    assert r.returncode == 1, r.stderr[-2000:]
    evs = parse_events(r.stdout)
    assert [e["event"] for e in evs] == ["error"] and evs[0]["retryable"] is False
    assert "--device cuda" in evs[0]["message"] and "no CUDA GPU" in evs[0]["message"]
    assert not out.exists()  # refused before reading data, writing or loading anything
    assert time.time() - t0 < 60


def _train_args(tmp_path, *extra):
    data = write_chat_jsonl(tmp_path / "d.jsonl", [("q", "a")])
    return cli.parse_args(["train", "--base", "embedded", "--data", str(data), "--out", str(tmp_path / "o"), *extra])


@pytest.mark.parametrize(
    ("extra", "says"),
    [
        (["--precision", "fp16", "--device", "cpu"], "--precision fp16 needs a GPU"),
        (["--quantization", "4bit", "--device", "cpu"], "--quantization 4bit needs a CUDA GPU"),
        (["--init-adapter", "/no/such/adapter"], "--init-adapter /no/such/adapter: not a PEFT adapter"),
        (["--lora-targets", " , "], "--lora-targets"),
    ],
)
def test_preflight_refuses_before_loading(tmp_path, extra, says):
    with pytest.raises(FatalError, match=says):
        train.preflight(_train_args(tmp_path, *extra))


@pytest.mark.parametrize("integration", ["tensorboard", "mlflow", "wandb"])
def test_report_to_needs_its_package(tmp_path, integration):
    args = _train_args(tmp_path, "--report-to", integration)
    if any(device.installed(m) for m in train.REPORT_TO_MODULES[integration]):
        train.preflight(args)
    else:
        with pytest.raises(FatalError, match=f"pip install {integration}"):
            train.preflight(args)


def test_offline_switches_belong_to_local_models(monkeypatch, tiny_base):
    monkeypatch.setattr(os, "environ", {k: v for k, v in os.environ.items() if k not in modelload.OFFLINE_ENV})
    modelload.use_offline_for("some-org/some-model")
    assert not any(k in os.environ for k in modelload.OFFLINE_ENV)
    modelload.use_offline_for(str(tiny_base))
    assert all(os.environ[k] == "1" for k in modelload.OFFLINE_ENV)
    os.environ["HF_HUB_OFFLINE"] = "0"  # the user's own choice stays
    modelload.use_offline_for("embedded")
    assert os.environ["HF_HUB_OFFLINE"] == "0"


@pytest.mark.parametrize(("base", "kind"), [("embedded", "gguf"), ("org/name", "hub"), ("gpt2", "hub")])
def test_base_resolution(base, kind):
    assert modelload.resolve_base(base)[0] == kind


def test_base_that_is_nothing_is_refused():
    with pytest.raises(modelload.ModelSpecError, match="not a Hub id"):
        modelload.resolve_base("./no/such/dir")


def test_hub_id_that_cannot_be_fetched_is_fatal_and_named():
    t0 = time.time()
    with pytest.raises(modelload.ModelSpecError, match="slearn-tests/no-such-model") as e:
        modelload.load_model_and_tokenizer("slearn-tests/no-such-model")
    assert "Hugging Face Hub" in str(e.value)
    assert time.time() - t0 < 60
