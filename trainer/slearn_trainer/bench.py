"""Training speed on a named model shape: the project's trainer beside a plain PEFT loop.

    python -m slearn_trainer.bench --shape 8b --seq 2048 --batch 4            # one GPU: plain, then slearn
    torchrun --standalone --nproc-per-node 2 -m slearn_trainer.bench --shape 1b --mode slearn --distributed ddp
    python -m slearn_trainer.bench --shape tiny --device cpu --precision fp32 --seq 64 --batch 2 --steps 2

A randomly initialised Llama of the shape (no weights to download, as shared/gpu/anchor_lora.py
builds them) trains LoRA (rank 16, all linear layers) on random tokens of `--seq` tokens, `--batch`
sequences per device and step:

- `plain`: the anchor's loop (model(ids, labels=ids), backward, fused AdamW step), nothing else;
- `slearn`: the project's trainer, TRL's SFTTrainer as train.py configures it (the same plan: batch
  split, attention kernel, gradient checkpointing, callbacks, intervals), on the same model and tokens.

Each prints one JSON line: tokens/s (all processes), MFU under the anchor's two conventions (6·P +
12·L·H·S FLOPs per token, and 4·P + 8·L·H·S for a frozen base) against the GPU's dense bf16 peak,
peak memory, and for `slearn` its ratio to `plain` when both ran. `--quantization 4bit` runs slearn
on the base quantised by bitsandbytes (QLoRA; the model is saved once to disk and loaded as the
trainer loads any base). `--save-tiny DIR` writes the tiny shape with a tokenizer (for a CLI run).
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import sys
import tempfile
import time
from pathlib import Path

SHAPES = {  # hidden, layers, intermediate, heads, kv heads, vocab (shared/gpu/anchor_lora.py's table)
    "tiny": (256, 2, 688, 4, 4, 32000),
    "135m": (576, 30, 1536, 9, 3, 49152),
    "1b": (2048, 16, 8192, 32, 8, 128256),
    "7b": (4096, 32, 11008, 32, 32, 32000),
    "8b": (4096, 32, 14336, 32, 8, 128256),
}
# dense bf16/fp16 peaks, TFLOP/s, by a name the GPU's name contains
PEAK_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0, "L4": 121.0, "A10": 125.0}
LORA_R = 16


def llama_config(shape: str, seq: int, attention: str):
    from transformers import LlamaConfig

    hidden, layers, inter, heads, kv, vocab = SHAPES[shape]
    return LlamaConfig(
        hidden_size=hidden,
        num_hidden_layers=layers,
        intermediate_size=inter,
        num_attention_heads=heads,
        num_key_value_heads=kv,
        vocab_size=vocab,
        max_position_embeddings=max(seq, 2048),
        attn_implementation=attention,
    )


def build_model(shape: str, seq: int, runtime, attention: str):
    """The shape, randomly initialised (seed 0) in the runtime's dtype, directly on its device."""
    import torch
    from transformers import LlamaForCausalLM

    torch.manual_seed(0)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(runtime.dtype)
    try:
        with runtime.torch_device:
            model = LlamaForCausalLM(llama_config(shape, seq, attention))
    finally:
        torch.set_default_dtype(previous)
    return model


def flops_per_token(model, seq: int) -> tuple[float, float]:
    """(6·P + 12·L·H·S, 4·P + 8·L·H·S): P non-embedding parameters of the base, as the anchor counts."""
    cfg = model.config
    embed = cfg.vocab_size * cfg.hidden_size
    base = sum(p.numel() for n, p in model.named_parameters() if "lora_" not in n) - embed
    attn = cfg.num_hidden_layers * cfg.hidden_size * seq
    return 6 * base + 12 * attn, 4 * base + 8 * attn


def figures(what: str, a, runtime, model, tokens_per_s: float, seconds_per_step: float, **extra) -> dict:
    import torch

    full, frozen = flops_per_token(model, a.seq)
    name = torch.cuda.get_device_name(runtime.index) if runtime.device == "cuda" else "cpu"
    peak = a.peak_tflops or next((v for k, v in PEAK_TFLOPS.items() if k in name), None)
    if runtime.precision == "fp32":
        peak = None  # the table holds bf16/fp16 dense peaks only
    world = int(os.environ.get("WORLD_SIZE", "1"))
    return {
        "what": what,
        "shape": a.shape,
        "device": name,
        "precision": runtime.precision,
        "quantization": a.quantization if what == "slearn" else "none",
        "seq": a.seq,
        "batch_per_device": a.batch,
        "processes": world,
        "steps": a.steps,
        "step_s": round(seconds_per_step, 4),
        "tokens_per_s": round(tokens_per_s, 1),
        "mfu_6p": round(tokens_per_s * full / (peak * 1e12 * world), 4) if peak else None,
        "mfu_4p_frozen": round(tokens_per_s * frozen / (peak * 1e12 * world), 4) if peak else None,
        "peak_mem_gib": round(torch.cuda.max_memory_allocated(runtime.index) / 2**30, 2)
        if runtime.device == "cuda"
        else None,
        **extra,
    }


def sync(runtime) -> None:
    import torch

    if runtime.device == "cuda":
        torch.cuda.synchronize(runtime.index)


def plain_loop(a, runtime, attention: str, gradient_checkpointing: bool) -> dict:
    """The anchor's loop on one device: forward with labels, backward, fused AdamW, nothing else."""
    import torch
    from peft import LoraConfig, get_peft_model

    model = build_model(a.shape, a.seq, runtime, attention)
    if gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.enable_input_require_grads()
    lora = LoraConfig(r=LORA_R, lora_alpha=2 * LORA_R, target_modules="all-linear", task_type="CAUSAL_LM")
    model = get_peft_model(model, lora)
    trainable = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(trainable, lr=1e-4, fused=runtime.device == "cuda")
    ids = torch.randint(0, model.config.vocab_size, (a.batch, a.seq), device=runtime.torch_device)
    t0 = time.perf_counter()
    for i in range(a.warmup + a.steps):
        if i == a.warmup:
            sync(runtime)
            t0 = time.perf_counter()
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    sync(runtime)
    secs = time.perf_counter() - t0
    out = figures(
        "plain",
        a,
        runtime,
        model,
        a.batch * a.seq * a.steps / secs,
        secs / a.steps,
        gradient_checkpointing=gradient_checkpointing,
        attention=attention,
    )
    del model, opt
    return out


class StepClock:
    """Times the optimiser steps after the warm-up ones (a TrainerCallback, synced on CUDA)."""

    def __init__(self, warmup: int, runtime):
        self.warmup, self.runtime = warmup, runtime
        self.t0 = self.t1 = None
        self.steps = 0

    def callback(self):
        from transformers import TrainerCallback

        clock = self

        class Clock(TrainerCallback):
            def on_step_end(self, args, state, control, **kw):
                if state.global_step == clock.warmup:
                    sync(clock.runtime)
                    clock.t0 = time.perf_counter()
                elif state.global_step > clock.warmup:
                    sync(clock.runtime)
                    clock.t1, clock.steps = time.perf_counter(), state.global_step - clock.warmup

        return Clock()


def quantised_model(a, runtime, attention: str, workdir: Path):
    """The shape saved once to disk and loaded in 4 bits as the trainer loads a base (QLoRA)."""
    from transformers import AutoModelForCausalLM

    from . import modelload

    path = workdir / f"{a.shape}-random"
    if not (path / "config.json").is_file():
        model = build_model(a.shape, a.seq, runtime, attention)
        model.save_pretrained(str(path))
        del model
        gc.collect()
    return AutoModelForCausalLM.from_pretrained(
        str(path),
        dtype=runtime.dtype,
        attn_implementation=attention,
        quantization_config=modelload._bnb_config(runtime),
        device_map={"": runtime.index},
    )


def slearn_trainer_loop(a, runtime, ranks, workdir: Path) -> dict:
    """The project's trainer (train.py's plan, SFTConfig, LoRA and callbacks) on the shape."""
    from datasets import Dataset
    from transformers import PreTrainedTokenizerFast
    from trl import SFTTrainer

    from . import device, train
    from .arguments import TrainArguments
    from .callbacks import Intervals, TrainingEvents

    args = TrainArguments(
        base=f"random-{a.shape}",
        data="-",
        out=str(workdir / "out"),
        epochs=1,
        batch_size=a.batch * ranks.world_size,  # the effective batch: a.batch per device
        max_seq_len=a.seq,
        max_steps=a.warmup + a.steps,
        lora_r=LORA_R,
        lora_alpha=2 * LORA_R,
        quantization=a.quantization,
        distributed=a.distributed,
        gradient_checkpointing=a.gradient_checkpointing,
        attention=a.attention,
        save_steps=0,
        save_minutes=1e6,
        device=runtime.device,
        precision=runtime.precision,
    )
    attention = device.check_attention(args.attention, runtime.device, runtime.precision)
    if a.quantization == "4bit":
        model = quantised_model(a, runtime, attention, workdir)
    else:
        model = build_model(a.shape, a.seq, runtime, attention)
    plan = train.make_plan(args, runtime, ranks, model)
    import torch

    g = torch.Generator().manual_seed(1)
    n = a.batch * ranks.world_size * (a.warmup + a.steps)
    rows = torch.randint(0, model.config.vocab_size, (n, a.seq), generator=g)
    dataset = Dataset.from_dict({"input_ids": rows.tolist()})
    tok = PreTrainedTokenizerFast(tokenizer_object=_word_tokenizer(), pad_token="<pad>", eos_token="</s>")
    clock = StepClock(a.warmup, runtime)
    trainer = SFTTrainer(
        model=model,
        args=train.sft_config(args, plan, workdir / "out"),
        train_dataset=dataset,
        processing_class=tok,
        peft_config=train.lora_config(args),
        callbacks=[
            TrainingEvents(workdir / "out", start_fields=plan.start_fields(args.distributed), is_main=False),
            Intervals(save_steps=0, save_seconds=0, log_seconds=plan.log_seconds, device=runtime.torch_device),
            clock.callback(),
        ],
    )
    trainer.train()
    secs = clock.t1 - clock.t0
    tokens = a.batch * ranks.world_size * a.seq * clock.steps
    out = figures(
        "slearn",
        a,
        runtime,
        trainer.model,
        tokens / secs,
        secs / clock.steps,
        gradient_checkpointing=plan.gradient_checkpointing,
        attention=plan.attention,
        distributed=a.distributed if ranks.distributed else "none",
    )
    del trainer, model
    return out


def _word_tokenizer():
    """A stand-in tokenizer: the data is pre-tokenised, TRL only needs pad and EOS ids."""
    from tokenizers import Tokenizer, models

    return Tokenizer(models.WordLevel({"<pad>": 0, "</s>": 1, "<unk>": 2}, unk_token="<unk>"))


def save_tiny(path: Path) -> None:
    """The tiny shape with a small chat tokenizer, as a local base directory for the CLI."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from . import modelload

    tok = AutoTokenizer.from_pretrained(str(modelload.hf_dir_for("embedded")))
    hidden, layers, inter, heads, kv, _ = SHAPES["tiny"]
    cfg = LlamaConfig(
        hidden_size=hidden,
        num_hidden_layers=layers,
        intermediate_size=inter,
        num_attention_heads=heads,
        num_key_value_heads=kv,
        vocab_size=len(tok),
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
        tie_word_embeddings=True,
    )
    LlamaForCausalLM(cfg).save_pretrained(str(path))
    tok.save_pretrained(str(path))


def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shape", choices=sorted(SHAPES), default="8b")
    p.add_argument("--seq", type=int, default=2048)
    p.add_argument("--batch", type=int, default=4, help="sequences per device and step")
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--mode", choices=["both", "plain", "slearn"], default="both")
    p.add_argument("--device", choices=["auto", "cuda", "cpu"], default="auto")
    p.add_argument("--precision", choices=["auto", "bf16", "fp16", "fp32"], default="auto")
    p.add_argument("--quantization", choices=["none", "4bit"], default="none")
    p.add_argument("--distributed", choices=["ddp", "fsdp"], default="ddp")
    p.add_argument("--gradient-checkpointing", choices=["auto", "on", "off"], default="auto")
    p.add_argument("--attention", choices=["auto", "flash", "sdpa", "eager"], default="auto")
    p.add_argument("--peak-tflops", type=float, help="the device's dense peak; default from a table by GPU name")
    p.add_argument("--out", help="append each JSON line to this file too")
    p.add_argument("--save-tiny", metavar="DIR", help="write the tiny shape as a base directory and exit")
    return p.parse_args(argv)


def main(argv=None) -> int:
    a = parse(argv)
    from . import device, distributed, modelload

    modelload.use_offline_for("embedded")
    modelload.quiet_libraries()
    if a.save_tiny:
        save_tiny(Path(a.save_tiny))
        return 0
    ranks = distributed.ranks()
    runtime = device.resolve(a.device, a.precision, ranks.local_rank)
    modelload.setup_torch_threads()
    if ranks.distributed:
        distributed.init_process_group(runtime.device, ranks.local_rank)
    results = []
    with tempfile.TemporaryDirectory(prefix="slearn-bench-") as tmp:
        work = Path(tmp)
        if a.mode in ("both", "slearn"):
            results.append(slearn_trainer_loop(a, runtime, ranks, work))
            _free(runtime)
        if a.mode in ("both", "plain") and not ranks.distributed:
            attention = device.check_attention(a.attention, runtime.device, runtime.precision)
            gc_on = results[0]["gradient_checkpointing"] if results else a.gradient_checkpointing == "on"
            results.insert(0, plain_loop(a, runtime, attention, gc_on))
    plain = next((r for r in results if r["what"] == "plain"), None)
    for r in results:
        if r["what"] == "slearn" and plain:
            r["ratio_to_plain"] = round(r["tokens_per_s"] / plain["tokens_per_s"], 3)
    if ranks.is_main:
        for r in results:
            line = json.dumps(r)
            print(line, flush=True)
            if a.out:
                with open(a.out, "a") as f:
                    f.write(line + "\n")
    distributed.destroy()
    return 0


def _free(runtime) -> None:
    import torch

    gc.collect()
    if runtime.device == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(runtime.index)


if __name__ == "__main__":
    with contextlib.suppress(BrokenPipeError):
        sys.exit(main())
