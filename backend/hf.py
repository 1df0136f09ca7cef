"""Pure translators: our ``RunConfig`` → the configs of PEFT, bitsandbytes and TRL.

Each function only maps values (no I/O, no model loading), so each is unit-tested on its own. Every SFTConfig
setting we rely on is set explicitly, because TRL's defaults differ from transformers' and change between releases.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from backend.config import RunConfig


@dataclass(frozen=True)
class DeviceCaps:
    """What the training device supports; decided by ``backend.hardware.detect`` in the worker."""

    kind: str  # "cuda" | "mps" | "cpu"
    bf16: bool
    fp16: bool
    name: str = ""


def lora_config(cfg: RunConfig) -> Any:
    from peft import LoraConfig, TaskType

    targets: str | list[str] = cfg.target_modules
    if targets != "all-linear":
        targets = [t.strip() for t in targets.split(",") if t.strip()]
    return LoraConfig(
        task_type=TaskType.CAUSAL_LM,
        r=cfg.lora_r,
        lora_alpha=cfg.lora_alpha,
        lora_dropout=cfg.lora_dropout,
        target_modules=targets,
        bias="none",
    )


def compute_dtype_name(caps: DeviceCaps) -> str:
    if caps.bf16:
        return "bfloat16"
    if caps.fp16:
        return "float16"
    return "float32"


def bnb_config(cfg: RunConfig, caps: DeviceCaps) -> Any | None:
    """4-bit NF4 with double quantization for QLoRA; None for plain LoRA."""
    if cfg.method != "qlora":
        return None
    import torch
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=getattr(torch, compute_dtype_name(caps)),
    )


def sft_config(cfg: RunConfig, caps: DeviceCaps, output_dir: str) -> Any:
    from trl import SFTConfig

    save = cfg.save_steps > 0
    return SFTConfig(
        output_dir=output_dir,
        max_steps=cfg.max_steps,
        num_train_epochs=cfg.num_epochs,
        learning_rate=cfg.learning_rate,
        per_device_train_batch_size=cfg.batch_size,
        gradient_accumulation_steps=cfg.grad_accum,
        warmup_steps=cfg.warmup_ratio,  # a float in [0, 1) is a ratio of the total steps in transformers 5
        lr_scheduler_type=cfg.lr_scheduler,
        activation_checkpointing=cfg.gradient_checkpointing,
        max_length=cfg.max_length,
        truncation_mode="keep_start",
        packing=False,
        completion_only_loss=True,  # loss on the response tokens only
        logging_steps=cfg.logging_steps,
        logging_first_step=True,
        save_strategy="steps" if save else "no",
        save_steps=cfg.save_steps if save else 500,
        save_total_limit=2,
        seed=cfg.seed,
        data_seed=cfg.seed,
        bf16=caps.bf16,
        fp16=caps.fp16 and not caps.bf16,
        use_cpu=caps.kind == "cpu",
        report_to="none",
        disable_tqdm=True,
        dataloader_num_workers=0,
        dataset_num_proc=None,
        eval_strategy="no",
        optim="adamw_torch",
    )
