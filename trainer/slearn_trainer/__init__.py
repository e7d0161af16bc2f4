"""slearn trainer: LoRA fine-tuning (TRL + PEFT) and an OpenAI-compatible model server."""

__version__ = "0.1.0"
