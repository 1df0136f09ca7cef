"""Before a job starts: how much GPU memory it will need at its peak, and roughly how long an epoch takes.

Pure arithmetic on the model's ``config.json`` (hidden size, layers, heads, vocabulary, MLP width) and the run
config, with no torch, so the web UI and the job manager can use it. Sizes are in GB of 2**30 bytes (what
``nvidia-smi`` and ``torch.cuda.max_memory_allocated`` report). The terms:

- **weights**: 2 bytes a parameter in 16-bit (4 on a device without 16-bit); with QLoRA the linear layers of the
  transformer blocks are NF4 with double quantization, 4.127 bits a parameter (Dettmers et al. 2023), while the
  embeddings and the output layer stay 16-bit, as bitsandbytes keeps them;
- **adapter**: the LoRA matrices (r x (in + out) for each adapted layer) with their gradients and the optimizer's
  state (8 bytes a parameter for AdamW, 2 for 8-bit AdamW); fp32 for LoRA (PEFT upcasts), bf16 for QLoRA (TRL
  casts them, as the QLoRA paper does);
- **activations**: what the backward pass keeps for each token of a micro-batch: with gradient checkpointing only
  each block's input plus one block being recomputed; without it every block's intermediate tensors (attention
  projections, the MLP's four intermediate-width tensors, and a copy of each adapted layer's input when
  lora_dropout > 0);
- **logits**: TRL scores tokens in tiles of at most 4096 tokens x 32768 vocabulary entries in fp32, never the full
  logits;
- **overhead**: the CUDA context and the caching allocator's slack, which ``max_memory_allocated`` does not count
  but the card does (0.6 GB + 8 %).

Measured peaks will differ by kernel choices; ``bench/RESULTS.md`` records the comparison where a GPU was available,
and ``tests/test_estimate.py`` checks these figures against published ones within a stated tolerance.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from backend.jobs.config import PREFERENCE_OBJECTIVES, RunConfig, passes_for

GB = 2**30
NF4_BYTES = 4.127 / 8  # NF4 + double-quantized absmax (Dettmers et al. 2023)
CONTEXT_GB = 0.6
SLACK = 0.08
LOGIT_TILE_TOKENS, LOGIT_TILE_VOCAB = 4096, 32768
LINEAR_NAMES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@dataclass(frozen=True)
class ModelShape:
    """The numbers of a decoder-only transformer that decide its cost."""

    hidden: int
    layers: int
    heads: int
    kv_heads: int
    intermediate: int
    vocab: int
    tie_embeddings: bool = False
    head_dim: int = 0  # 0: hidden // heads
    name: str = ""

    @property
    def hd(self) -> int:
        return self.head_dim or self.hidden // self.heads

    def linear_shapes(self) -> dict[str, tuple[int, int]]:
        """(in, out) of each linear layer of one block."""
        h, q, kv, i = self.hidden, self.heads * self.hd, self.kv_heads * self.hd, self.intermediate
        return {
            "q_proj": (h, q),
            "k_proj": (h, kv),
            "v_proj": (h, kv),
            "o_proj": (q, h),
            "gate_proj": (h, i),
            "up_proj": (h, i),
            "down_proj": (i, h),
        }

    @property
    def block_linear_params(self) -> int:
        return self.layers * sum(a * b for a, b in self.linear_shapes().values())

    @property
    def embedding_params(self) -> int:
        return self.vocab * self.hidden * (1 if self.tie_embeddings else 2)

    @property
    def params(self) -> int:
        norms = self.layers * 2 * self.hidden + self.hidden
        return self.block_linear_params + self.embedding_params + norms


def shape_from_config(config: dict[str, Any], name: str = "") -> ModelShape:
    """From a Hugging Face ``config.json`` (text config of multimodal models too)."""
    c = config.get("text_config") or config
    heads = int(c.get("num_attention_heads") or c.get("n_head"))
    return ModelShape(
        hidden=int(c.get("hidden_size") or c.get("n_embd")),
        layers=int(c.get("num_hidden_layers") or c.get("n_layer")),
        heads=heads,
        kv_heads=int(c.get("num_key_value_heads") or heads),
        intermediate=int(c.get("intermediate_size") or 4 * int(c.get("hidden_size") or c.get("n_embd"))),
        vocab=int(c.get("vocab_size")),
        tie_embeddings=bool(c.get("tie_word_embeddings", config.get("tie_word_embeddings", False))),
        head_dim=int(c.get("head_dim") or 0),
        name=name,
    )


# Shapes of the models our presets name, from their published config.json, so an estimate is possible before the
# first download. Any other model is read from its config.json once it is on this machine.
KNOWN: dict[str, ModelShape] = {
    "huggingfacetb/smollm2-135m-instruct": ModelShape(576, 30, 9, 3, 1536, 49152, True, name="SmolLM2-135M"),
    "huggingfacetb/smollm2-360m-instruct": ModelShape(960, 32, 15, 5, 2560, 49152, True, name="SmolLM2-360M"),
    "smollm2-135m": ModelShape(576, 30, 9, 3, 1536, 49152, True, name="SmolLM2-135M"),  # the starter model
    "qwen/qwen2.5-0.5b-instruct": ModelShape(896, 24, 14, 2, 4864, 151936, True, name="Qwen2.5-0.5B"),
    "qwen/qwen2.5-1.5b-instruct": ModelShape(1536, 28, 12, 2, 8960, 151936, True, name="Qwen2.5-1.5B"),
    "qwen/qwen2.5-3b-instruct": ModelShape(2048, 36, 16, 2, 11008, 151936, True, name="Qwen2.5-3B"),
    "qwen/qwen2.5-7b-instruct": ModelShape(3584, 28, 28, 4, 18944, 152064, False, name="Qwen2.5-7B"),
    "meta-llama/llama-3.2-1b-instruct": ModelShape(2048, 16, 32, 8, 8192, 128256, True, name="Llama-3.2-1B"),
    "meta-llama/llama-3.2-3b-instruct": ModelShape(3072, 28, 24, 8, 8192, 128256, True, name="Llama-3.2-3B"),
    "meta-llama/llama-3.1-8b-instruct": ModelShape(
        4096, 32, 32, 8, 14336, 128256, False, name="Llama-3.1-8B"
    ),
    "mistralai/mistral-7b-instruct-v0.3": ModelShape(4096, 32, 32, 8, 14336, 32768, False, name="Mistral-7B"),
}


def model_shape(base_model: str, paths: Any = None) -> ModelShape | None:
    """The shape of a base model from its config.json on this machine, or the built-in table; None if unknown."""
    from backend.models import registry as models

    try:
        ref = models.resolve(base_model, paths) if paths is not None else None
    except models.ModelError:
        return None
    config_file: str | None = None
    if ref is not None and ref.kind != "hub":
        f = Path(ref.location) / "config.json"
        config_file = str(f) if f.is_file() else None
        if config_file is None and ref.is_tiny:
            from backend.models.tiny import SHAPE

            return shape_from_config(SHAPE, "tiny-offline")
        if config_file is None and ref.source:  # a GGUF not converted yet: its header has the shape
            from backend.models import gguf as gguf_import

            try:
                return shape_from_config(gguf_import.inspect(ref.source).config, base_model)
            except (gguf_import.GgufError, TypeError, ValueError):
                return None
    elif ref is not None:
        config_file = models.hub_cached_file(ref.location, "config.json")
    if config_file:
        try:
            return shape_from_config(json.loads(Path(config_file).read_text()), base_model)
        except (OSError, ValueError, TypeError, KeyError):
            pass
    return KNOWN.get(base_model.strip().lower())


def planned_steps(cfg: RunConfig, n_train: int, world_size: int = 1, n_rows_per_example: float = 1.0) -> int:
    """Optimizer steps the run will take: max_steps, or its passes (``config.passes_for``: num_epochs, more for a
    small dataset when min_steps asks) over ``n_train`` batches' worth of examples."""
    if cfg.max_steps > 0:
        return cfg.max_steps
    per_step = cfg.batch_size * cfg.grad_accum * max(world_size, 1)
    examples = math.ceil(max(n_train, 1) * n_rows_per_example)
    return max(1, math.ceil(passes_for(cfg, examples, world_size) * math.ceil(examples / per_step)))


# -- memory ------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Memory:
    weights: float
    adapter: float  # LoRA parameters + gradients + optimizer state
    activations: float
    logits: float
    overhead: float
    lora_params: int

    @property
    def peak(self) -> float:
        """What ``torch.cuda.max_memory_allocated`` should show (no CUDA context)."""
        return self.weights + self.adapter + self.activations + self.logits

    @property
    def total(self) -> float:
        """What the card needs free."""
        return self.peak + self.overhead

    def summary(self) -> str:
        return (
            f"{size(self.total)}: weights {size(self.weights)}, adapter and optimizer {size(self.adapter)}, "
            f"activations {size(self.activations)}, logits {size(self.logits)}, CUDA overhead {size(self.overhead)}"
        )


def size(gb: float) -> str:
    """A memory size with its unit: "12 MB", "1.4 GB" (never a bare "0.00")."""
    if gb < 1:
        return f"{max(gb * 1024, 1):.0f} MB"
    return f"{gb:.1f} GB"


def _adapted_blocks(shape: ModelShape, cfg: RunConfig) -> int:
    return min(cfg.lora_layers, shape.layers) if cfg.lora_layers else shape.layers


def lora_params(shape: ModelShape, cfg: RunConfig) -> int:
    targets = _targets(cfg.target_modules)
    per_block = sum(
        cfg.lora_r * (a + b) + (b if cfg.use_dora else 0)
        for name, (a, b) in shape.linear_shapes().items()
        if name in targets
    )
    return per_block * _adapted_blocks(shape, cfg)


def _targets(spec: str) -> set[str]:
    if spec.strip() == "all-linear":
        return set(LINEAR_NAMES)
    given = {t.strip() for t in spec.split(",") if t.strip()}
    return {name for name in LINEAR_NAMES if name in given} or set(LINEAR_NAMES) & given


def memory(
    shape: ModelShape,
    cfg: RunConfig,
    *,
    seq_len: int | None = None,
    sixteen_bit: bool = True,
    optimizer: str | None = None,
) -> Memory:
    """Peak memory of one training process. ``seq_len``: tokens of the longest micro-batch example (default
    max_length); ``sixteen_bit``: the device trains in bf16/fp16 (GPUs) rather than fp32."""
    seq = min(seq_len or cfg.max_length, cfg.max_length)
    act = 2 if sixteen_bit else 4
    shard = cfg.num_devices if cfg.num_devices > 1 and cfg.multi_device == "fsdp" else 1

    if cfg.method == "qlora":
        weights = shape.block_linear_params * NF4_BYTES + (shape.params - shape.block_linear_params) * act
    else:
        weights = shape.params * act
    n_lora = lora_params(shape, cfg)
    p_bytes = 2 if cfg.method == "qlora" and sixteen_bit else 4
    opt = optimizer or ("paged_adamw_8bit" if cfg.method == "qlora" and sixteen_bit else "adamw_torch")
    o_bytes = 2 if "8bit" in opt else 8
    adapter = n_lora * (2 * p_bytes + o_bytes)

    tokens = (
        cfg.batch_size * (cfg.max_length if cfg.batching == "packed" else seq) * sequences_per_example(cfg)
    )
    h, i = shape.hidden, shape.intermediate
    q, kv = shape.heads * shape.hd, shape.kv_heads * shape.hd
    per_token_block = 5 * h + q + 2 * kv + q + 4 * i  # norms and residuals, q/k/v, attention output, the MLP
    if cfg.lora_dropout > 0:
        shapes = shape.linear_shapes()
        per_token_block += sum(shapes[n][0] for n in _targets(cfg.target_modules)) * (
            1 + 1 / act
        )  # copy + mask
    if cfg.use_dora:
        per_token_block *= 1.15
    if cfg.gradient_checkpointing:
        activations = tokens * act * (h * shape.layers + per_token_block)
    else:
        # Only blocks with adapters (lora_layers: the top ones) keep what their backward pass needs; the frozen
        # blocks below them run as if in inference.
        activations = tokens * act * per_token_block * _adapted_blocks(shape, cfg)
    if cfg.batching in ("padding_free", "packed"):
        activations += tokens * tokens  # the block-diagonal attention mask of a flattened batch (bool)
    scored = min(tokens, LOGIT_TILE_TOKENS)
    logits = scored * min(shape.vocab, LOGIT_TILE_VOCAB) * 4 * 2 + tokens * h * 4

    peak = (weights + adapter) / shard + activations + logits
    return Memory(
        weights=weights / shard / GB,
        adapter=adapter / shard / GB,
        activations=activations / GB,
        logits=logits / GB,
        overhead=CONTEXT_GB + SLACK * peak / GB,
        lora_params=n_lora,
    )


# -- time --------------------------------------------------------------------------------------------------------

# Dense 16-bit peak of common cards, in TFLOP/s (fp16 where the card has no bf16).
PEAK_TFLOPS = (
    ("H200", 989),
    ("H100 PCIe", 756),
    ("H100", 989),
    ("GH200", 989),
    ("B200", 2250),
    ("A100", 312),
    ("L40S", 362),
    ("L40", 181),
    ("L4", 121),
    ("A10G", 125),
    ("A10", 125),
    ("A6000", 155),
    ("4090", 165),
    ("3090", 71),
    ("V100", 125),
    ("T4", 65),
)
ASSUMED_MFU = {
    "lora": 0.35,
    "qlora": 0.25,
}  # share of the peak a plain PyTorch stack reaches; QLoRA dequantizes


def peak_flops(device_name: str) -> float | None:
    name = device_name.upper()
    for key, tflops in PEAK_TFLOPS:
        if key.upper() in name:
            return tflops * 1e12
    return None


def sequences_per_example(cfg: RunConfig) -> int:
    """Sequences one example puts through the model: a preference pair is two (the better and the worse answer
    after the prompt), and a KTO answer is two as well (its own and a mismatched one for the KL term)."""
    return 2 if cfg.objective in PREFERENCE_OBJECTIVES else 1


def flops_per_token(shape: ModelShape, cfg: RunConfig, mean_len: float) -> float:
    """Training FLOPs per token: 4N for LoRA (forward 2N, backward to the activations 2N; the frozen base gets no
    weight gradients), 6N with checkpointing's second forward; plus causal attention, 2 x s x d a layer forward.
    With adapters on the top ``lora_layers`` blocks only, the backward pass stops at the lowest of them."""
    head = shape.vocab * shape.hidden
    ckpt = 1 if cfg.gradient_checkpointing else 0
    part = 1.0 if ckpt else _adapted_blocks(shape, cfg) / shape.layers
    attention_forward = 2 * mean_len * shape.heads * shape.hd * shape.layers
    forward = 2 * (shape.block_linear_params + head) + attention_forward
    backward = (2 + 2 * ckpt) * (shape.block_linear_params * part + head) + 2 * attention_forward * part
    # DPO and KTO also run the reference (the adapter switched off) forward, without gradients; ORPO has none.
    reference = forward if cfg.objective in ("dpo", "kto") else 0.0
    return forward + backward + ckpt * attention_forward + reference


def seconds_per_epoch(
    shape: ModelShape,
    cfg: RunConfig,
    *,
    tokens_per_epoch: int,
    mean_len: float,
    device_kind: str,
    device_name: str = "",
    cpu_cores: int | None = None,
) -> float | None:
    """Rough time of one pass over the data (about +-2x): FLOPs / (peak x assumed utilisation)."""
    work = flops_per_token(shape, cfg, mean_len) * tokens_per_epoch * sequences_per_example(cfg)
    if device_kind == "cuda":
        peak = peak_flops(device_name)
        if peak is None:
            return None
        rate = peak * ASSUMED_MFU[cfg.method] * max(cfg.num_devices, 1)
    elif device_kind == "cpu":
        rate = CPU_GFLOPS["fp32"] * 1e9 * (cpu_cores or os.cpu_count() or 1)
    else:
        return None
    return work / rate


# -- a run on a CPU: memory (RSS) and wall-clock time -----------------------------------------------------------------

# Fitted to runs of SmolLM2-135M on the development machine (2 AMD EPYC cores with AVX512-BF16, 24 GB), fp32 and bf16.
# `python bench/bench_cpu.py --grid` prints them against fresh measurements: on 2026-12-03 peak RSS measured /
# estimated 0.85-0.97 over flat, skewed, one-outlier and cut-at-max_length data, batch 4 and 8, top 15 or all 30
# blocks, and 0.95-0.99 over whole runs (bench/RESULTS.md).
CPU_PROCESS_GB = (
    0.66  # a worker with torch, transformers, TRL and the data libraries loaded, before the model
)
CPU_ACTIVATION_FACTOR = 2.64  # autograd's saved tensors and TRL's logit tiles on a CPU vs the GPU formula
# bf16 only: a run whose batches come in many different lengths held 0.55-0.73 GB more than its activations explain
# (2026-12-03, bench/RESULTS.md: the sample support data 0.73 GB at batch 8 and 0.65 GB at batch 4, a thermostat set
# 0.55 GB; nothing of the kind in fp32, nor on rows of equal length). It does not grow with the batch, so it is not
# activations: it behaves like about 2.7 copies of the bf16 weights kept per distinct input shape by the CPU's bf16
# matrix kernels (oneDNN reorders the weights into its blocked layout and caches the primitive), up to a limit. It is
# counted whole once the longest example is 1.2x the mean (spread / (1 + spread) >= 0.17, the thermostat set's), and
# in proportion below that.
CPU_BF16_SHAPE_COPIES = 3.0  # 2.7 fitted; 3.0 so that no run measured so far is above the estimate
CPU_BF16_SPREAD_FULL = 0.17
# Measured on the starter model only (0.8 GB at most there): how it grows with a bigger model is not known, so it is
# capped rather than let it refuse, say, an 8B model on a CPU for 48 GB nobody measured.
CPU_BF16_SHAPES_MAX_GB = 1.0
# Refitted 2026-12-03 to whole runs of the starter model through the real path (bench/RESULTS.md, bench_answers.py):
# SFT at batch 4 in fp32 and bf16, DPO at batch 8 in bf16; the earlier figures (30 and 42.7, fitted to 8-step runs
# at batch 8) said 1.4-1.9x the time the runs took.
CPU_GFLOPS = {
    "fp32": 48.0,
    "bf16": 62.0,
}  # effective training rate per core (LoRA, a small Llama-shaped model)
CPU_STEP_OVERHEAD_S = 0.15  # optimizer, logging and data loading per step, whatever its size
CPU_START_S = 15.0  # from Train to the first step: process start, imports, loading the model and data
CPU_MEMORY_BANDWIDTH_GBS = 12.0  # weights read per generated token while answering (scoring, chat)
CPU_DECODE_STEP_S = (
    0.04  # transformers' generate on a CPU: Python and kernel overhead per generated token (refitted
)
# with the rates above: scoring took 0.35-0.55x what 0.09 said)


@dataclass(frozen=True)
class CpuRun:
    """What a run on this CPU will cost: peak memory of the worker and the time from Train to finished."""

    ram_gb: float
    start_s: float
    train_s: float
    eval_s: float
    score_s: float
    steps: int

    @property
    def total_s(self) -> float:
        return self.start_s + self.train_s + self.eval_s + self.score_s

    def summary(self) -> str:
        parts = [f"training {_secs(self.train_s)}"]
        if self.eval_s >= 1:
            parts.append(f"validation {_secs(self.eval_s)}")
        if self.score_s >= 1:
            parts.append(f"scoring {_secs(self.score_s)}")
        parts.append(f"start {_secs(self.start_s)}")
        return ", ".join(parts)


def _secs(s: float) -> str:
    s = int(round(s))
    return f"{s} s" if s < 90 else f"{s // 60} min {s % 60:02d} s"


def cpu_memory_gb(
    shape: ModelShape,
    cfg: RunConfig,
    *,
    seq_len: int | None = None,
    bf16: bool = False,
    mean_len: float | None = None,
) -> float:
    """Peak resident memory of a training worker on a CPU (GB): the process, the weights (fp32, or bf16 where the
    CPU runs bf16), the adapter with its gradients and AdamW state (fp32), and the activations autograd keeps for
    the longest micro-batch with the scored logits (``seq_len`` the longest example, ``mean_len`` the mean), plus in
    bf16 what the CPU's bf16 kernels keep for batches of many lengths.

    The activations are those of the longest micro-batch, padded to its longest row and never more than the fully
    padded batch_size x max_length: no batching mode makes a bigger batch, so a dataset with one row far over
    max_length costs what that bound costs (issue 21: the spread of lengths once multiplied the activations, and one
    5,522-token row made a run measured near 6 GB read 29 GB)."""
    weight_bytes = shape.params * (2 if bf16 else 4)
    if cfg.method == "qlora":
        weight_bytes = shape.block_linear_params * NF4_BYTES + (shape.params - shape.block_linear_params) * 4
    longest = min(seq_len or cfg.max_length, cfg.max_length)
    first = memory(
        shape, cfg, seq_len=longest, sixteen_bit=bf16
    )  # the longest micro-batch, padded to its row
    activations = (first.activations + first.logits) * CPU_ACTIVATION_FACTOR
    shapes = 0.0
    if bf16 and mean_len:
        spread = max(longest / mean_len - 1, 0.0)
        whole = min(CPU_BF16_SHAPE_COPIES * shape.params * 2, CPU_BF16_SHAPES_MAX_GB * GB)
        shapes = whole * min(1.0, spread / (1 + spread) / CPU_BF16_SPREAD_FULL)
    return CPU_PROCESS_GB + (weight_bytes + first.lora_params * 16 + shapes) / GB + activations


def cpu_run(
    shape: ModelShape,
    cfg: RunConfig,
    *,
    train_tokens: int,
    train_examples: int,
    longest: int,
    eval_tokens: int = 0,
    eval_examples: int = 0,
    reference_tokens: float = 0.0,
    prompt_tokens: float = 0.0,
    steps: int,
    cores: int | None = None,
    bf16: bool = False,
) -> CpuRun:
    """Memory and wall-clock time of a whole run on this CPU: start, training (real tokens; ``train_tokens`` is one
    pass over the data), the periodic validation passes, and the scoring against the base model after training
    (``reference_tokens``/``prompt_tokens``: mean tokens of a reference answer / of a prompt)."""
    cores = cores or os.cpu_count() or 1
    rate = CPU_GFLOPS["bf16" if bf16 else "fp32"] * 1e9 * cores
    mean_len = train_tokens / max(train_examples, 1)
    examples_seen = steps * cfg.batch_size * cfg.grad_accum * max(cfg.num_devices, 1)
    tokens = mean_len * examples_seen * sequences_per_example(cfg)
    train_s = tokens * flops_per_token(shape, cfg, mean_len) / rate + steps * CPU_STEP_OVERHEAD_S
    forward = (
        2 * (shape.block_linear_params + shape.vocab * shape.hidden)
    ) / rate  # seconds per token, no grad
    evals = 0
    if eval_examples:
        every = cfg.eval_steps if cfg.eval_steps > 0 else max(1, round(steps / 10))
        evals = steps // every + (1 if steps % every else 0)
    eval_s = evals * eval_tokens * forward
    score_s = 0.0
    n = min(cfg.score_examples, eval_examples or train_examples)
    if n:
        weight_bytes = shape.params * (2 if bf16 else 4)
        budget = 1.5 * reference_tokens + 8
        batches = math.ceil(n / 8)
        decode = (
            batches
            * budget
            * (CPU_DECODE_STEP_S + weight_bytes / (CPU_MEMORY_BANDWIDTH_GBS * GB) + 8 * forward)
        )
        prefill = n * (prompt_tokens + reference_tokens) * forward  # prompts, and the reference loss
        # the base model, the run it started from (a continued run), then the fine-tuned one
        score_s = (3 if cfg.continue_from else 2) * (decode + prefill)
    return CpuRun(
        ram_gb=cpu_memory_gb(shape, cfg, seq_len=longest, bf16=bf16, mean_len=mean_len),
        start_s=CPU_START_S,
        train_s=train_s,
        eval_s=eval_s,
        score_s=score_s,
        steps=steps,
    )


# -- fitting on a card ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Fit:
    fits: bool
    need: Memory
    budget_gb: float
    suggestions: tuple[str, ...] = ()

    def message(self, where: str) -> str:
        if self.fits:
            return f"Estimated peak GPU memory {self.need.total:.1f} GB of {self.budget_gb:.1f} GB free on {where}."
        tips = "; or ".join(self.suggestions) if self.suggestions else "use a smaller model"
        return (
            f"this job needs about {self.need.total:.1f} GB of GPU memory ({self.need.summary()}), but {where} "
            f"has {self.budget_gb:.1f} GB free. Fix: {tips}"
        )


def check_fit(
    shape: ModelShape,
    cfg: RunConfig,
    budget_gb: float,
    *,
    seq_len: int | None = None,
    sixteen_bit: bool = True,
) -> Fit:
    """Does the job fit in ``budget_gb``? If not, concrete changes that would make it fit, best first."""
    need = memory(shape, cfg, seq_len=seq_len, sixteen_bit=sixteen_bit)
    if need.total <= budget_gb:
        return Fit(True, need, budget_gb)
    tips = []
    for label, changed in _alternatives(cfg, seq_len):
        est = memory(shape, changed, seq_len=seq_len, sixteen_bit=sixteen_bit).total
        if est <= budget_gb:
            tips.append(f"{label} (about {est:.1f} GB)")
    return Fit(False, need, budget_gb, tuple(tips[:3]))


def _alternatives(cfg: RunConfig, seq_len: int | None) -> list[tuple[str, RunConfig]]:
    """Single changes, then combinations, in the order a person would try them (least quality cost first)."""
    out: list[tuple[str, RunConfig]] = []
    if not cfg.gradient_checkpointing:
        out.append(("turn on gradient_checkpointing", replace_cfg(cfg, gradient_checkpointing=True)))
    if cfg.method == "lora":
        out.append(("use method qlora", replace_cfg(cfg, method="qlora")))
    if cfg.batch_size > 1:
        b = max(1, cfg.batch_size // 2)
        out.append(
            (
                f"halve the batch (batch_size {b}) and double gradient accumulation (grad_accum "
                f"{cfg.grad_accum * 2})",
                replace_cfg(cfg, batch_size=b, grad_accum=cfg.grad_accum * 2),
            )
        )
    if cfg.max_length > 1024:
        out.append(("max_length 1024 (longer examples are cut)", replace_cfg(cfg, max_length=1024)))
    # Everything memory-saving at once, for the hardest cases.
    all_in = replace_cfg(
        cfg,
        gradient_checkpointing=True,
        method="qlora",
        batch_size=1,
        grad_accum=cfg.grad_accum * cfg.batch_size,
    )
    label = (
        "use method qlora with gradient_checkpointing, batch_size 1 and grad_accum "
        f"{cfg.grad_accum * cfg.batch_size}"
    )
    out.append((label, all_in))
    if cfg.max_length > 1024:
        out.append((label + " and max_length 1024", replace_cfg(all_in, max_length=1024)))
    return out


def replace_cfg(cfg: RunConfig, **changes: Any) -> RunConfig:
    return cfg.model_copy(update=changes)


def halved_batch(cfg: RunConfig) -> RunConfig | None:
    """The automatic out-of-memory retry: half the micro-batch, twice the accumulation (same effective batch)."""
    if cfg.batch_size <= 1:
        return None
    return cfg.updated(batch_size=cfg.batch_size // 2, grad_accum=cfg.grad_accum * 2)
