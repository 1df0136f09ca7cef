"""Pure translators: our ``RunConfig`` → the configs of PEFT, bitsandbytes, TRL and ``accelerate launch``.

Each function only maps values (no I/O, no model loading), so each is unit-tested on its own. Every SFTConfig
setting we rely on is set explicitly, because TRL's defaults differ from transformers' and change between releases.
"""

from __future__ import annotations

from typing import Any

from backend.errors import TuneDeckError
from backend.jobs.config import CUDA_OPTIMIZERS, RunConfig
from backend.models.devices import DeviceCaps, compute_dtype_name


class UnsupportedOnDevice(TuneDeckError, ValueError):
    """A setting that this device cannot honour; the message says which and what to use instead."""


def lora_config(cfg: RunConfig, n_blocks: int | None = None, block_linears: list[str] | None = None) -> Any:
    """PEFT's LoraConfig. With ``lora_layers`` N > 0 (and fewer than the model's ``n_blocks``), only the last N
    blocks get adapters; PEFT then needs the layer names spelled out, so 'all-linear' becomes ``block_linears``
    (the names of the linear layers inside a block, read from the model)."""
    from peft import LoraConfig, TaskType

    targets: str | list[str] = cfg.target_modules
    if targets != "all-linear":
        targets = [t.strip() for t in targets.split(",") if t.strip()]
    layers: dict[str, Any] = {}
    if cfg.lora_layers and n_blocks and cfg.lora_layers < n_blocks:
        if targets == "all-linear":
            if not block_linears:
                raise ValueError(
                    "lora_layers with all-linear needs the names of the linear layers of a block"
                )
            targets = list(block_linears)
        layers["layers_to_transform"] = list(range(n_blocks - cfg.lora_layers, n_blocks))
    return LoraConfig(
        task_type=TaskType.CAUSAL_LM,
        r=cfg.lora_r,
        lora_alpha=cfg.lora_alpha,
        lora_dropout=cfg.lora_dropout,
        target_modules=targets,
        bias="none",
        use_dora=cfg.use_dora,
        use_rslora=cfg.use_rslora,
        **layers,
    )


def bnb_config(cfg: RunConfig, caps: DeviceCaps) -> Any | None:
    """4-bit NF4 with double quantization for QLoRA (compute in bf16 where supported); None for plain LoRA.

    With FSDP the 4-bit weights are stored in the compute dtype, so that FSDP can shard them like other parameters.
    """
    if cfg.method != "qlora":
        return None
    import torch
    from transformers import BitsAndBytesConfig

    dtype = getattr(torch, compute_dtype_name(caps))
    extra: dict[str, Any] = {}
    if cfg.num_devices > 1 and cfg.multi_device == "fsdp":
        extra["bnb_4bit_quant_storage"] = dtype
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=dtype,
        **extra,
    )


def optimizer_name(cfg: RunConfig, caps: DeviceCaps) -> str:
    """The transformers ``optim`` name. ``auto``: paged 8-bit AdamW for QLoRA on CUDA (its state can spill to CPU
    memory instead of failing), fused AdamW for LoRA on CUDA and for everything on a CPU (the adapter's state is
    small, so speed matters more: ~12 % faster steps than plain AdamW on a CPU), plain AdamW on Apple MPS."""
    if cfg.optimizer != "auto":
        if cfg.optimizer in CUDA_OPTIMIZERS and caps.kind != "cuda":
            raise UnsupportedOnDevice(
                f"optimizer = {cfg.optimizer} needs a CUDA GPU, and this job runs on {caps.kind}. "
                "Fix: use optimizer auto or adamw_torch."
            )
        return cfg.optimizer
    if caps.kind == "cuda":
        return "paged_adamw_8bit" if cfg.method == "qlora" else "adamw_torch_fused"
    return "adamw_torch_fused" if caps.kind == "cpu" else "adamw_torch"


def eval_interval(cfg: RunConfig, total_steps: int) -> int:
    """eval_steps, or about 10 evaluations over the run when it is 0."""
    return cfg.eval_steps if cfg.eval_steps > 0 else max(1, round(total_steps / 10))


def sft_config(cfg: RunConfig, caps: DeviceCaps, output_dir: str, **kw: Any) -> Any:
    """TRL's SFTConfig from ``sft_kwargs`` (which see). SFTConfig checks the precision against this machine's device."""
    from trl import SFTConfig

    return SFTConfig(**sft_kwargs(cfg, caps, output_dir, **kw))


def sft_kwargs(
    cfg: RunConfig,
    caps: DeviceCaps,
    output_dir: str,
    *,
    eval_every: int | None = None,
    pretokenized: bool = True,
) -> dict[str, Any]:
    """The SFTConfig settings for our recipe. ``eval_every`` None: no evaluation. ``pretokenized``: the datasets hold
    ``input_ids``/``labels`` (already truncated, and packed when batching is packed), so TRL's preparation is
    skipped and only its collator is used."""
    if cfg.batching == "auto":
        raise ValueError("batching auto is decided from the data before the trainer is configured")
    padding_free = cfg.batching in ("padding_free", "packed")
    checkpoints = cfg.save_steps > 0
    return dict(
        output_dir=output_dir,
        max_steps=cfg.max_steps,
        num_train_epochs=cfg.num_epochs,
        learning_rate=cfg.learning_rate,
        per_device_train_batch_size=cfg.batch_size,
        per_device_eval_batch_size=cfg.batch_size,
        gradient_accumulation_steps=cfg.grad_accum,
        warmup_steps=cfg.warmup_ratio,  # a float in [0, 1) is a ratio of the total steps in transformers 5
        lr_scheduler_type=cfg.lr_scheduler,
        activation_checkpointing=cfg.gradient_checkpointing,
        activation_checkpointing_kwargs={"use_reentrant": False} if cfg.gradient_checkpointing else None,
        # Pre-tokenized data is already cut to max_length; TRL refuses max_length with padding-free and no packing.
        max_length=None if pretokenized else cfg.max_length,
        truncation_mode="keep_start",
        packing=cfg.batching == "packed",
        padding_free=padding_free,
        # grouped: batches of similar lengths (transformers' LengthGroupedSampler, from our "length" column)
        train_sampling_strategy="group_by_length" if cfg.batching == "grouped" else "random",
        length_column_name="length",
        dataset_kwargs={"skip_prepare_dataset": True} if pretokenized else None,
        completion_only_loss=None,  # the labels we build already mask everything but the responses
        logging_steps=cfg.logging_steps,
        logging_first_step=True,
        # Checkpoints every save_steps; a cancel asks for one from our callback whatever this says.
        save_strategy="steps",
        save_steps=cfg.save_steps if checkpoints else 10**9,
        save_total_limit=2,
        save_only_model=False,  # optimizer and scheduler too: a resumed run continues exactly
        eval_strategy="steps" if eval_every else "no",
        eval_steps=eval_every or None,
        # Validation needs only the loss (TRL logs the token accuracy with it). Without this the Trainer asks for the
        # logits too: a second forward pass per batch, and every batch's logits kept until the end (SmolLM2, 43 short
        # rows: +1.2 GB peak memory and twice the time of each validation on a CPU).
        prediction_loss_only=True,
        seed=cfg.seed,
        data_seed=cfg.seed,
        bf16=caps.bf16,
        fp16=caps.fp16 and not caps.bf16,
        use_cpu=caps.kind == "cpu",
        report_to="none",
        disable_tqdm=True,
        dataloader_num_workers=0,
        dataset_num_proc=None,
        optim=optimizer_name(cfg, caps),
        ddp_find_unused_parameters=False if cfg.num_devices > 1 else None,
        remove_unused_columns=False,  # our datasets hold only what the collator and the sampler read
    )


# -- preference methods ------------------------------------------------------------------------------------------

# Settings of SFTConfig that TRL's preference configs do not have (each trainer tokenizes its own data).
_SFT_ONLY = ("packing", "padding_free", "dataset_kwargs", "completion_only_loss", "truncation_mode")


def preference_kwargs(
    cfg: RunConfig, caps: DeviceCaps, output_dir: str, *, eval_every: int | None = None
) -> dict[str, Any]:
    """The settings shared with SFT (schedule, precision, checkpoints, logging, optimizer) plus the preference ones.

    TRL's preference trainers tokenize the prompt and both answers themselves from the conversational columns
    (``shapes.preference_columns``) and batch them padded, so batching is always padded and max_length is theirs
    to apply (keeping the start, like SFT)."""
    kw = sft_kwargs(
        cfg.updated(batching="padded"), caps, output_dir, eval_every=eval_every, pretokenized=False
    )
    for key in _SFT_ONLY:
        kw.pop(key, None)
    kw.update(beta=cfg.beta, max_length=cfg.max_length, remove_unused_columns=True)
    return kw


def kto_weights(n_good: int, n_bad: int) -> tuple[float, float]:
    """(desirable_weight, undesirable_weight) that balance unequal numbers of good and bad answers: the KTO paper
    keeps desirable_weight * n_good / (undesirable_weight * n_bad) between 1 and 4/3; we weigh the rarer kind up."""
    if not n_good or not n_bad or n_good == n_bad:
        return 1.0, 1.0
    if n_good < n_bad:
        return round(n_bad / n_good, 4), 1.0
    return 1.0, round(n_good / n_bad, 4)


def preference_config(
    cfg: RunConfig,
    caps: DeviceCaps,
    output_dir: str,
    *,
    eval_every: int | None = None,
    kto_counts: tuple[int, int] = (0, 0),
) -> Any:
    """TRL's DPOConfig, ORPOConfig or KTOConfig for ``cfg.objective``. ORPO lives in trl.experimental in TRL 1.x."""
    kw = preference_kwargs(cfg, caps, output_dir, eval_every=eval_every)
    if cfg.objective == "dpo":
        from trl import DPOConfig

        losses = (
            {"loss_type": ["sigmoid", "sft"], "loss_weights": [1.0, cfg.sft_weight]} if cfg.sft_weight else {}
        )
        return DPOConfig(**kw, truncation_mode="keep_start", **losses)
    if cfg.objective == "orpo":
        _quiet_experimental()
        from trl.experimental.orpo import ORPOConfig

        return ORPOConfig(**{**kw, "remove_unused_columns": False})  # its collator reads the raw columns
    if cfg.objective == "kto":
        from trl import KTOConfig

        good, bad = kto_weights(*kto_counts)
        # KTO's KL term pairs each answer with its neighbour in a fixed-order batch: TRL needs sequential sampling,
        # so the recipe shuffles the rows once (seeded) instead.
        kw["train_sampling_strategy"] = "sequential"
        return KTOConfig(**kw, desirable_weight=good, undesirable_weight=bad)
    raise ValueError(f"{cfg.objective!r} is not a preference objective")


def trainer_class(objective: str) -> Any:
    """The TRL trainer that runs ``objective``."""
    if objective == "sft":
        from trl import SFTTrainer

        return SFTTrainer
    if objective == "dpo":
        from trl import DPOTrainer

        return DPOTrainer
    if objective == "orpo":
        _quiet_experimental()
        from trl.experimental.orpo import ORPOTrainer

        return ORPOTrainer
    if objective == "kto":
        from trl import KTOTrainer

        return KTOTrainer
    raise ValueError(f"unknown objective {objective!r}")


def _quiet_experimental() -> None:
    """TRL warns at every import from trl.experimental; ORPO lives there in TRL 1.x, which we pin, and our tests
    of ORPO runs are how we notice a change (the warning would only fill every ORPO run's log)."""
    import os

    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
