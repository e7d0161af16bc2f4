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


# ---------------------------------------------------------------- typed arguments


def test_typed_arguments_follow_the_contract_and_drift_is_caught():
    import dataclasses

    from slearn_trainer import arguments

    args = cli.parse_args(["train", "--base", "b", "--data", "d", "--out", "o", "--lr", "0.01", "--packing"])
    assert isinstance(args, arguments.TrainArguments)
    assert args.learning_rate == 0.01 and args.packing is True and args.save_steps is None
    f = {x.name: x for x in dataclasses.fields(arguments.TrainArguments)}["learning_rate"]
    assert (
        f.metadata["flag"] == "--lr"
        and f.metadata["help"] == contract.CONTRACT["train"]["properties"]["learningRate"]["description"]
    )
    with pytest.raises(dataclasses.FrozenInstanceError):
        args.epochs = 1
    # a default that is not the contract's, a key the contract does not have: refused at import
    meta = {x.name: x for x in dataclasses.fields(arguments.TrainArguments)}["epochs"].metadata

    @dataclasses.dataclass(frozen=True)
    class Drifted(arguments.TrainArguments):
        epochs: float = dataclasses.field(default=2, metadata=meta)

    with pytest.raises(TypeError, match="epochs: default 2"):
        arguments.check(Drifted, "train")
    with pytest.raises(TypeError, match="keys differ"):
        arguments.check(arguments.ServeArguments, "train")


# ---------------------------------------------------------------- processes, batch, kernels, memory, intervals


@pytest.mark.parametrize(
    ("batch", "accum", "procs", "want"),
    [
        (4, 1, 1, (4, 1)),
        (4, 1, 2, (2, 1)),  # no accumulation to divide: the per-device batch halves
        (4, 4, 2, (4, 2)),  # the accumulation is divided first: per-device memory unchanged
        (4, 4, 8, (2, 1)),
        (8, 3, 4, (6, 1)),  # 24 / 4 = 6 per process, at most 8 per device
        (3, 4, 8, None),  # 12 is not a multiple of 8: refused
    ],
)
def test_the_effective_batch_is_the_configs_whatever_the_process_count(batch, accum, procs, want):
    from slearn_trainer import distributed

    if want is None:
        with pytest.raises(FatalError, match="multiple of 8"):
            distributed.split_batch(batch, accum, procs)
        return
    per_device, accumulation = distributed.split_batch(batch, accum, procs)
    assert (per_device, accumulation) == want
    assert per_device * accumulation * procs == batch * accum


def test_attention_choice():
    assert device.check_attention("auto", "cpu", "fp32") == "sdpa"
    assert device.check_attention("auto", "cuda", "bf16") == (
        "flash_attention_2" if device.installed("flash_attn") else "sdpa"
    )
    assert device.check_attention("eager", "cpu", "fp32") == "eager"
    with pytest.raises(device.DeviceError, match="--attention flash needs CUDA"):
        device.check_attention("flash", "cpu", "fp32")


def test_gradient_checkpointing_auto_follows_the_memory_left():
    from types import SimpleNamespace

    shape = lambda h, layers, inter: SimpleNamespace(hidden_size=h, num_hidden_layers=layers, intermediate_size=inter)  # noqa: E731
    gpu, cpu = device.Runtime("cuda", "bf16"), device.Runtime("cpu", "fp32")
    eight_b, one_b = shape(4096, 32, 14336), shape(2048, 16, 8192)
    free = 60 * 2**30  # an 80 GB card with a 16 GB base loaded
    # 8B at 4 × 2048 tokens: ~43 GB of activations, more than half of what is left: recompute
    assert train.use_gradient_checkpointing("auto", gpu, eight_b, 4 * 2048, free) is True
    # 1B at the same batch: ~5 GB: keep them (a third less compute per step)
    assert train.use_gradient_checkpointing("auto", gpu, one_b, 4 * 2048, free) is False
    assert train.use_gradient_checkpointing("auto", cpu, eight_b, 4 * 2048, None) is False
    assert train.use_gradient_checkpointing("on", cpu, one_b, 8, None) is True
    assert train.use_gradient_checkpointing("off", gpu, eight_b, 4 * 2048, free) is False


def test_intervals_by_device(tmp_path):
    gpu, cpu = device.Runtime("cuda", "bf16"), device.Runtime("cpu", "fp32")
    args = _train_args(tmp_path)
    assert train.intervals(args, cpu) == (20, 0.0, 0.0)  # a checkpoint every 20 steps, progress every step
    assert train.intervals(args, gpu) == (0, 600.0, 5.0)  # every 10 minutes of training, progress every 5 s
    args = _train_args(tmp_path, "--save-steps", "50", "--save-minutes", "2", "--log-seconds", "0")
    assert train.intervals(args, gpu) == (50, 120.0, 0.0)


def test_info_says_why_there_is_no_cuda():
    import torch

    why = device.cuda_unavailable()
    if torch.cuda.is_available():
        assert why is None
    else:
        assert torch.__version__ in why and (torch.version.cuda is None or f"CUDA {torch.version.cuda}" in why)


def test_loads_straight_onto_this_processes_gpu(monkeypatch, tiny_base):
    """On CUDA the weights go to LOCAL_RANK's GPU as they load (device_map), in the run's dtype,
    never through a host copy and `.to()` (shown on CPU by intercepting the loader)."""
    import transformers

    seen = {}

    class Model:
        config = None

        def eval(self):
            return self

        def to(self, *a, **k):
            raise AssertionError("the model was moved after loading")

    def fake_load(src, **kw):
        seen.update(kw)
        return Model()

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", fake_load)
    modelload.load_model_and_tokenizer(str(tiny_base), device.Runtime("cuda", "bf16", index=3), attention="sdpa")
    import torch

    assert seen["device_map"] == {"": 3} and seen["dtype"] == torch.bfloat16 and seen["attn_implementation"] == "sdpa"
    seen.clear()
    modelload.load_model_and_tokenizer(str(tiny_base), device.Runtime("cuda", "bf16", index=1), sharded=True)
    assert "device_map" not in seen  # FSDP: rank 0 reads, the others get their shards


def test_bitsandbytes_failures_are_not_retried_and_say_what_to_install(tmp_path):
    args = _train_args(tmp_path, "--quantization", "4bit")
    message, retryable = cli.classify(
        RuntimeError("CUDA Setup failed despite GPU being available: libbitsandbytes_cuda132.so"), args
    )
    assert retryable is False and "requirements-qlora.lock" in message and "bitsandbytes" in message
    assert cli.classify(RuntimeError("connection reset by peer"), args)[1] is True
    assert cli.classify(RuntimeError("bitsandbytes"), _train_args(tmp_path))[1] is True  # not a 4-bit run
    message, retryable = cli.classify(MemoryError("CUDA out of memory"), _train_args(tmp_path))
    assert retryable is False and "--gradient-checkpointing on" in message


def test_only_rank_0_speaks_and_other_ranks_only_their_own_errors():
    code = (
        "from slearn_trainer import events\n"
        "events.claim_stdout()\n"
        "events.emit('progress', step=1, total_steps=2)\n"
        "events.emit('error', message='the same check on every rank', retryable=False)\n"
        "events.all_ranks_report_errors()\n"
        "events.emit('checkpoint', step=1, path='x')\n"
        "events.emit('error', message='out of memory', retryable=False)\n"
    )
    for rank, want in (("0", 4), ("1", 1)):
        r = subprocess.run([PY, "-c", code], capture_output=True, text=True, env=env(RANK=rank), timeout=60)
        evs = parse_events(r.stdout)
        assert len(evs) == want, (rank, evs)
    assert evs == [{"event": "error", "message": "rank 1: out of memory", "retryable": False}]


def test_qlora_is_a_locked_extra_that_setup_does_not_install():
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    lock = (root / "trainer" / "requirements.lock").read_text()
    extra = (root / "trainer" / "requirements-qlora.lock").read_text()
    pins = [line for line in extra.splitlines() if line and not line.startswith("#")]
    assert pins and all("==" in p for p in pins) and any(p.startswith("bitsandbytes==") for p in pins)
    assert "bitsandbytes" not in lock  # make setup installs requirements.lock only
    assert "requirements-qlora.lock" in (root / "Dockerfile").read_text()
