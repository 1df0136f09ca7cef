"""The one typed configuration of a training run.

Every setting is declared once here, with its help text (shown in the UI, the CLI and the preset comments) and
the fix we suggest when a value is wrong. ``RunConfig.parse`` is the boundary: it takes plain values (from a
preset, the UI's widgets or ``--set key=value``), reports *every* problem at once, and returns a validated,
frozen config. The translators in ``backend.training.hf`` turn it into PEFT / bitsandbytes / TRL configs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from backend.errors import TuneDeckError
from backend.models.registry import TINY_MODEL

MAX_AUTO_PASSES = 10  # min_steps never makes a run repeat its data more often than this
CUDA_OPTIMIZERS = ("adamw_8bit", "paged_adamw_8bit", "paged_adamw_32bit")
PREFERENCE_OBJECTIVES = ("dpo", "orpo", "kto")
# The dataset shapes each objective trains on (backend.data.shapes); a preference set gives KTO both kinds of answer.
OBJECTIVE_SHAPES = {
    "sft": ("prompt_response", "chat", "text"),
    "dpo": ("preference",),
    "orpo": ("preference",),
    "kto": ("feedback", "preference"),
}


def _f(default: Any, help: str, fix: str, **constraints: Any) -> Any:
    """A field with its help text and the fix we suggest when its value is rejected."""
    return Field(default, description=help, json_schema_extra={"fix": fix}, **constraints)


class RunConfig(BaseModel):
    """What a training run needs to know, apart from the dataset."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    base_model: str = _f(
        TINY_MODEL,
        "The model to fine-tune: a Hugging Face Hub id (e.g. Qwen/Qwen2.5-0.5B-Instruct), a local folder, or "
        "'tiny-offline' (a tiny model built on this machine; it learns your examples and knows nothing else).",
        "give a Hub id like Qwen/Qwen2.5-0.5B-Instruct, a folder that holds config.json, or tiny-offline",
        min_length=1,
    )
    method: Literal["lora", "qlora"] = _f(
        "lora",
        "lora trains small adapter matrices on a 16/32-bit base; qlora loads the base in 4-bit (NF4, double "
        "quantization) to use about a quarter of the memory, at some cost in speed. qlora needs CUDA (or a CPU, slowly).",
        "use lora or qlora",
    )
    objective: Literal["sft", "dpo", "orpo", "kto"] = _f(
        "sft",
        "What the run learns from. sft: write the responses of your examples (supervised fine-tuning). dpo: prefer "
        "the better of two answers (preference pairs), staying close to where it started; orpo: the same without "
        "a reference model, learning the better answers at the same time (can start from the base model); kto: "
        "answers marked good or bad, no pairs needed. Preference methods usually follow an sft run "
        "(continue_from).",
        "use sft, dpo, orpo or kto",
    )
    beta: float = _f(
        0.1,
        "Preference methods: how strongly the preference counts. dpo and kto: higher keeps the model closer to the "
        "reference (0.1 is usual, 0.01-0.5); orpo: the weight of the preference term next to learning the better "
        "answer (0.1 is usual). Ignored by sft.",
        "use a positive number such as 0.1",
        gt=0,
        le=10,
    )
    sft_weight: float = _f(
        0.0,
        "dpo only: also learn to write the better answer itself, with this weight (the RPO loss: DPO plus the SFT "
        "loss on the chosen answers). Plain DPO (0) only moves away from the worse answers, and on a small model it "
        "can drift: answers run on past their end. 1.0 keeps them whole.",
        "use 0 (plain DPO) or a weight such as 1.0",
        ge=0,
        le=100,
    )
    continue_from: str = _f(
        "",
        "Start from the adapter of a finished run (its id) instead of a new one, e.g. a preference run after an sft "
        "run. dpo and kto then measure change against that run's model, not the base. The run must have the same "
        "base_model; its adapter's rank and layers are kept (lora_r, lora_alpha, target_modules and lora_layers "
        "here are not used).",
        "use the id of a finished run on the same base model (tunedeck jobs lists them), or leave it empty",
    )
    use_dora: bool = _f(
        False,
        "DoRA: adapters that learn a magnitude and a direction per weight; sometimes better quality at low rank, "
        "but each step is slower and uses more memory.",
        "use true or false",
    )
    use_rslora: bool = _f(
        False,
        "rsLoRA: scale updates by alpha / sqrt(r) instead of alpha / r, which keeps high ranks (64+) learning well.",
        "use true or false",
    )
    num_epochs: float = _f(
        1.0,
        "Passes over the dataset. Ignored when max_steps is set.",
        "use a positive number such as 1 or 3",
        gt=0,
        le=1000,
    )
    min_steps: int = _f(
        0,
        "When training by passes: at least this many optimizer steps. A small dataset then gets more passes (up to "
        f"{MAX_AUTO_PASSES} in all), so it sees about as many updates as a larger one: facts in 80 rows need more passes than "
        "in 300. 0: exactly num_epochs passes.",
        "use 0, or a number of steps such as 60",
        ge=0,
        le=100_000,
    )
    max_steps: int = _f(
        -1,
        "Optimizer steps to train for; -1 means 'use num_epochs'. Each step sees batch_size x grad_accum examples.",
        "use a positive number of steps such as 60, or -1 to train for num_epochs",
    )
    learning_rate: float = _f(
        2e-4,
        "How big each update is. LoRA on a large model usually wants 1e-4 to 2e-4; a small model in a short run "
        "learns its facts at more (the starter model: 2e-3). Too high and the loss jumps, too low and it barely moves.",
        "use a positive value such as 2e-4",
        gt=0,
        le=1,
    )
    lora_r: int = _f(
        16,
        "LoRA rank: the size of the adapter. Higher learns more and costs more memory; 8-64 is typical.",
        "use a whole number of at least 1, e.g. 16",
        ge=1,
        le=1024,
    )
    lora_layers: int = _f(
        0,
        "Put adapters only on the last N transformer blocks (0: on all of them). Training then runs backwards only "
        "through those blocks: half the blocks makes each step about 1.35x faster and keeps less in memory, and the "
        "top blocks are where a fine-tune changes most. 0 learns the most.",
        "use 0 (all blocks) or a whole number of blocks, e.g. half of the model's",
        ge=0,
        le=1000,
    )
    lora_alpha: int = _f(
        32,
        "LoRA scaling: updates are scaled by alpha / r. Usually r or 2*r.",
        "use a whole number of at least 1, e.g. twice lora_r",
        ge=1,
    )
    lora_dropout: float = _f(
        0.05,
        "Dropout on the adapter's input during training; 0-0.1 is typical.",
        "use a value from 0 up to (not including) 1, e.g. 0.05",
        ge=0,
        lt=1,
    )
    target_modules: str = _f(
        "all-linear",
        "Which layers get adapters: 'all-linear' (the usual choice) or a comma-separated list such as q_proj,v_proj.",
        "use all-linear or a comma-separated list of layer names",
        min_length=1,
    )
    max_length: int = _f(
        1024,
        "Longest example in tokens (prompt + response); longer ones are cut. Memory grows with it.",
        "use a whole number of at least 16, e.g. 512 or 1024",
        ge=16,
        le=131072,
    )
    batch_size: int = _f(
        4,
        "Examples per forward pass on the device. Lower it if you run out of memory.",
        "use a whole number of at least 1",
        ge=1,
        le=4096,
    )
    grad_accum: int = _f(
        1,
        "Forward passes per optimizer step; batch_size x grad_accum is the effective batch.",
        "use a whole number of at least 1",
        ge=1,
        le=4096,
    )
    warmup_ratio: float = _f(
        0.03,
        "Fraction of the steps over which the learning rate ramps up from 0.",
        "use a value from 0 to 0.5",
        ge=0,
        le=0.5,
    )
    lr_scheduler: Literal["linear", "cosine", "constant", "constant_with_warmup"] = _f(
        "cosine",
        "How the learning rate changes over the run.",
        "use linear, cosine, constant or constant_with_warmup",
    )
    gradient_checkpointing: bool = _f(
        False,
        "Recompute activations in the backward pass: much less memory for about 30% more time.",
        "use true or false",
    )
    optimizer: Literal[
        "auto", "adamw_torch", "adamw_torch_fused", "adamw_8bit", "paged_adamw_8bit", "paged_adamw_32bit"
    ] = _f(
        "auto",
        "auto picks paged 8-bit AdamW for qlora on a GPU (least memory), fused AdamW for lora on a GPU and on a "
        "CPU (fastest), plain AdamW on Apple MPS. 8-bit and paged optimizers need CUDA.",
        "use auto, adamw_torch, adamw_torch_fused, adamw_8bit, paged_adamw_8bit or paged_adamw_32bit",
    )
    batching: Literal["auto", "padding_free", "grouped", "packed", "padded"] = _f(
        "auto",
        "How examples of different lengths share a batch. padding_free joins each batch into one sequence with no "
        "padding (examples never see each other; fastest with FlashAttention); grouped batches examples of similar "
        "length together, so little padding is left (fastest without FlashAttention); packed also fills rows up to "
        "max_length (fewer, fuller steps); padded pads every example to the longest of a random batch. auto: "
        "padded when lengths are nearly equal, else padding_free with FlashAttention and grouped without.",
        "use auto, padding_free, grouped, packed or padded",
    )
    logging_steps: int = _f(
        1,
        "Record the loss every N optimizer steps.",
        "use a whole number of at least 1",
        ge=1,
    )
    save_steps: int = _f(
        100,
        "Save a checkpoint every N steps, to resume from after a crash (0: only when cancelled). A cancelled run "
        "always saves one.",
        "use 0 or a positive whole number",
        ge=0,
    )
    eval_steps: int = _f(
        0,
        "Measure the loss on the dataset's validation rows every N steps (0: about 10 times over the run). "
        "Ignored when the dataset has no validation split.",
        "use 0 or a positive whole number",
        ge=0,
    )
    score_examples: int = _f(
        50,
        "When training ends, score the run against its base model on this many held-out examples (the validation "
        "split, else a sample of the training rows): eval loss, perplexity, ROUGE-L, BLEU, chrF, exact match. "
        "0 skips it (score later with `tunedeck eval`).",
        "use 0 or a whole number up to 1000",
        ge=0,
        le=1000,
    )
    oom_retry: bool = _f(
        False,
        "If the GPU runs out of memory, retry automatically (from the last checkpoint) with half the batch_size and "
        "twice the grad_accum, which keeps the effective batch the same.",
        "use true or false",
    )
    seed: int = _f(
        42, "Random seed for the adapter's initial weights and the data order.", "use a whole number"
    )
    system_prompt: str = _f(
        "",
        "Optional system message put before every example (and used by default in chat).",
        "use any text, or leave it empty",
    )
    trust_remote_code: bool = _f(
        False,
        "Run the Python code that the model's repository ships with it (a few new architectures need it). That "
        "code runs with your permissions: turn it on only for a model whose authors you trust.",
        "use true only for a model whose code you trust, else false",
    )
    precision: Literal["auto", "fp32", "bf16", "fp16"] = _f(
        "auto",
        "Number format of the model's weights and arithmetic. auto: bf16 on GPUs that support it (fp16 on older "
        "ones) and on CPUs with bf16 instructions (AVX512-BF16 or AMX: about 1.3x faster steps and half the weights' "
        "memory), else fp32. fp32 is exact and slowest; fp16 needs a CUDA GPU.",
        "use auto, fp32, bf16 or fp16 (fp16 only on a CUDA GPU)",
    )
    device: Literal["auto", "cpu", "cuda", "mps"] = _f(
        "auto",
        "Where to train: auto picks CUDA, then Apple MPS, then CPU.",
        "use auto, cpu, cuda or mps",
    )
    num_devices: int = _f(
        1,
        "How many GPUs to train on. More than 1 runs the same job through `accelerate launch`, one process per "
        "GPU (on a CPU: that many processes).",
        "use a whole number of at least 1, no more than the GPUs you have",
        ge=1,
        le=64,
    )
    multi_device: Literal["ddp", "fsdp"] = _f(
        "ddp",
        "With several GPUs: ddp keeps a whole copy of the model on each (fastest, when it fits on one); fsdp splits "
        "the model across them (for models too big for one card).",
        "use ddp or fsdp",
    )

    @field_validator("max_steps")
    @classmethod
    def _steps(cls, v: int) -> int:
        if v == 0 or v < -1:
            raise ValueError("zero or negative steps would train nothing")
        return v

    # -- the boundary --------------------------------------------------------------------------------------

    @classmethod
    def parse(cls, values: dict[str, Any]) -> RunConfig:
        """Validate plain values; raise ``ConfigError`` listing every problem with its fix."""
        try:
            cfg = cls.model_validate(values)
        except ValidationError as exc:
            problems = [_problem(err, values) for err in exc.errors()]
            taken = {p.field for p in problems}
            problems += [p for p in _combination_problems(values) if p.field not in taken]
            raise ConfigError(problems) from None
        problems = _combination_problems(cfg.model_dump())
        if problems:
            raise ConfigError(problems)
        return cfg

    @classmethod
    def field_help(cls) -> dict[str, str]:
        return {name: f.description or "" for name, f in cls.model_fields.items()}

    def updated(self, **changes: Any) -> RunConfig:
        """A copy with some values changed, validated again."""
        return RunConfig.parse({**self.model_dump(), **changes})


@dataclass(frozen=True)
class Problem:
    field: str
    value: Any
    message: str
    fix: str

    def __str__(self) -> str:
        shown = "(missing)" if self.value is _MISSING else repr(self.value)
        return f"{self.field} = {shown}: {self.message}. Fix: {self.fix}."


class ConfigError(TuneDeckError, ValueError):
    """One or more settings are wrong. ``problems`` lists each one; ``str()`` shows them all."""

    def __init__(self, problems: list[Problem]):
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


_MISSING = object()


def _problem(err: dict[str, Any], values: dict[str, Any]) -> Problem:
    loc = [str(p) for p in err.get("loc", ())]
    msg = str(err.get("msg", "invalid value"))
    name = loc[0] if loc else "config"
    field = RunConfig.model_fields.get(name)
    if err.get("type") == "extra_forbidden":
        known = ", ".join(sorted(RunConfig.model_fields))
        return Problem(
            name, values.get(name, _MISSING), "is not a setting TuneDeck knows", f"use one of: {known}"
        )
    fix = (field.json_schema_extra or {}).get("fix", "check the value") if field else "check the value"
    msg = msg.removeprefix("Value error, ").replace("Input should be", "must be")
    return Problem(name, values.get(name, _MISSING), msg, str(fix))


def _combination_problems(values: dict[str, Any]) -> list[Problem]:
    """Settings that are each fine but do not go together (checked on plain values, so also when others are bad)."""

    def get(name: str) -> Any:
        return values.get(name, RunConfig.model_fields[name].default)

    problems = []
    device, method, optimizer = get("device"), get("method"), get("optimizer")
    if get("objective") in PREFERENCE_OBJECTIVES and get("batching") in ("padding_free", "packed"):
        problems.append(
            Problem(
                "batching",
                get("batching"),
                f"{get('objective')} compares two answers to the same prompt, which TRL's preference trainers "
                "batch padded",
                "use batching auto (or padded, or grouped)",
            )
        )
    if method == "qlora" and device == "mps":
        problems.append(
            Problem(
                "method",
                method,
                "qlora needs bitsandbytes, which does not run on Apple MPS",
                "use method lora on a Mac",
            )
        )
    precision = get("precision")
    if precision == "fp16" and device in ("cpu", "mps"):
        problems.append(
            Problem(
                "precision",
                precision,
                f"fp16 training needs a CUDA GPU, but device is {device}",
                "use precision auto, or bf16 on a CPU that has bf16 instructions",
            )
        )
    if optimizer in CUDA_OPTIMIZERS and device in ("cpu", "mps"):
        problems.append(
            Problem(
                "optimizer",
                optimizer,
                f"{optimizer} needs a CUDA GPU, but device is {device}",
                "use optimizer auto or adamw_torch",
            )
        )
    num_devices = get("num_devices")
    if isinstance(num_devices, int) and num_devices > 1:
        if device == "mps":
            problems.append(
                Problem(
                    "num_devices",
                    num_devices,
                    "several devices are not supported on Apple MPS",
                    "use num_devices 1",
                )
            )
        elif get("multi_device") == "fsdp" and device == "cpu":
            problems.append(
                Problem(
                    "multi_device",
                    "fsdp",
                    "fsdp splits a model across GPUs; it does not run on a CPU",
                    "use multi_device ddp, or device cuda",
                )
            )
    return problems


def coerce_setting(key: str, text: str) -> Any:
    """Turn the text of ``--set key=value`` into a value of the field's type (validation happens in parse)."""
    field = RunConfig.model_fields.get(key)
    if field is None:
        return text  # parse() reports the unknown key with the list of known ones
    ann = field.annotation
    try:
        if ann is bool:
            low = text.strip().lower()
            if low in ("1", "true", "yes", "on"):
                return True
            if low in ("0", "false", "no", "off"):
                return False
            return text
        if ann is int:
            return int(text)
        if ann is float:
            return float(text)
    except ValueError:
        return text  # pydantic reports "must be a valid number" with the field's fix
    return text


def max_length_for(longest_prompt: int) -> int:
    """The max_length to suggest when a prompt of ``longest_prompt`` tokens leaves no room for its response: room
    for 64 response tokens, rounded up to a multiple of 64. The one rule the submit check and the worker share."""
    return (longest_prompt + 64 + 63) // 64 * 64


def passes_for(cfg: RunConfig, n_train: int, world_size: int = 1) -> float:
    """The passes over ``n_train`` examples a run trains for when it trains by passes: ``num_epochs``, or more where
    that would be fewer than ``min_steps`` optimizer steps (at most MAX_AUTO_PASSES). The one rule the worker, the
    estimate and the Train tab use."""
    per_step = cfg.batch_size * cfg.grad_accum * max(world_size, 1)
    steps_per_pass = max(1, math.ceil(max(n_train, 1) / per_step))
    if cfg.min_steps and cfg.num_epochs * steps_per_pass < cfg.min_steps:
        return max(cfg.num_epochs, min(cfg.min_steps / steps_per_pass, MAX_AUTO_PASSES))
    return cfg.num_epochs
