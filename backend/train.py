"""The training recipe: one run of LoRA fine-tuning with TRL's SFTTrainer, read top to bottom.

``Recipe.setup()`` prepares, in dependency order, the device, the model, the data and the trainer; ``train()``
runs it and saves the adapter (also when cancelled); the result goes to ``result.json`` via the worker. Progress
and metrics go to the store through ``StoreCallback``; a cancel request (SIGTERM to the worker) sets ``stop``,
which the callback turns into "stop after this step".
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from backend.config import RunConfig
from backend.settings import Paths
from backend.store import Store

log = logging.getLogger(__name__)

# Metrics the trainer logs that we chart; anything else it logs is ignored.
CHARTED = ("loss", "learning_rate", "grad_norm", "epoch", "mean_token_accuracy", "num_tokens", "entropy")


class RunFailed(RuntimeError):
    """A failure we can explain to the person; the message is shown as the job's reason."""


@dataclass
class JobSpec:
    """Everything a worker needs, written by the manager as ``job.json`` in the job directory."""

    job_id: str
    home: str
    dataset_id: str
    dataset_path: str
    config: dict[str, Any]

    @classmethod
    def load(cls, job_dir: str | Path) -> JobSpec:
        return cls(**json.loads((Path(job_dir) / "job.json").read_text()))

    def save(self, job_dir: str | Path) -> None:
        (Path(job_dir) / "job.json").write_text(json.dumps(asdict(self), indent=2))


@dataclass
class RunResult:
    status: str  # "succeeded" | "cancelled" | "failed"
    reason: str = ""
    adapter_dir: str = ""
    steps: int = 0
    total_steps: int = 0
    first_loss: float | None = None
    final_loss: float | None = None
    train_seconds: float = 0.0
    device: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def save(self, job_dir: str | Path) -> None:
        tmp = Path(job_dir) / "result.json.tmp"
        tmp.write_text(json.dumps(asdict(self), indent=2))
        tmp.replace(Path(job_dir) / "result.json")


def read_result(job_dir: str | Path) -> RunResult | None:
    path = Path(job_dir) / "result.json"
    try:
        return RunResult(**json.loads(path.read_text()))
    except (OSError, ValueError, TypeError):
        return None


def to_conversations(frame: Any, system_prompt: str = "") -> dict[str, list]:
    """Our normalised rows → TRL's conversational prompt/completion format (loss on the completion only)."""
    prompts, completions = [], []
    systems = frame["system"] if "system" in frame else [""] * len(frame)
    for p, r, s in zip(frame["prompt"], frame["response"], systems, strict=True):
        sys_text = s or system_prompt
        msgs = ([{"role": "system", "content": sys_text}] if sys_text else []) + [{"role": "user", "content": p}]
        prompts.append(msgs)
        completions.append([{"role": "assistant", "content": r}])
    return {"prompt": prompts, "completion": completions}


def make_store_callback(store: Store, job_id: str, stop: threading.Event) -> Any:
    from transformers import TrainerCallback

    class StoreCallback(TrainerCallback):
        """Writes progress and metrics to the store; turns a cancel request into 'stop after this step'."""

        def __init__(self) -> None:
            self.t0 = 0.0
            self.losses: list[float] = []

        def on_train_begin(self, args, state, control, **kw):
            self.t0 = time.monotonic()
            store.set_progress(job_id, state.global_step, state.max_steps, None)

        def on_step_end(self, args, state, control, **kw):
            done = state.global_step
            elapsed = time.monotonic() - self.t0
            eta = elapsed / max(done, 1) * max(state.max_steps - done, 0)
            store.set_progress(job_id, done, state.max_steps, eta)
            if stop.is_set():
                log.info("cancel requested: stopping after step %d", done)
                control.should_training_stop = True
                control.should_save = False

        def on_log(self, args, state, control, logs=None, **kw):
            values = {k: float(v) for k, v in (logs or {}).items() if k in CHARTED and isinstance(v, (int, float))}
            values = {k: v for k, v in values.items() if math.isfinite(v)}
            if "loss" in values:
                self.losses.append(values["loss"])
            store.add_metrics(job_id, state.global_step, values)
            log.info("step %d %s", state.global_step, " ".join(f"{k}={v:.4g}" for k, v in values.items()))

    return StoreCallback()


class Recipe:
    def __init__(self, spec: JobSpec, job_dir: str | Path, store: Store, stop: threading.Event):
        self.spec = spec
        self.job_dir = Path(job_dir)
        self.store = store
        self.stop = stop
        self.cfg = RunConfig.parse(spec.config)
        self.paths = Paths.from_env(spec.home)

    # -- setup, in dependency order -------------------------------------------------------------------------

    def setup(self) -> None:
        self._setup_device()
        self._setup_model()
        self._setup_data()
        self._setup_trainer()

    def _setup_device(self) -> None:
        from backend.hardware import detect

        self.caps = detect(self.cfg.device)
        if self.cfg.method == "qlora" and self.caps.kind == "mps":
            raise RunFailed("QLoRA (4-bit) needs bitsandbytes, which does not support Apple MPS. Fix: use method lora.")
        log.info("device: %s (%s)", self.caps.kind, self.caps.name)

    def _setup_model(self) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from backend import hf, models, tinymodel

        try:
            ref = models.check_available(self.cfg.base_model, self.paths)
        except models.ModelError as exc:
            raise RunFailed(str(exc)) from None
        if ref.is_tiny:
            tinymodel.build(ref.location)
        source = ref.location
        self.tokenizer = AutoTokenizer.from_pretrained(source)
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        if not getattr(self.tokenizer, "chat_template", None):
            raise RunFailed(
                f"The model {self.cfg.base_model} has no chat template, so TuneDeck cannot format prompts and "
                "responses for it. Fix: pick an instruct/chat model (e.g. Qwen/Qwen2.5-0.5B-Instruct)."
            )
        dtype = getattr(torch, hf.compute_dtype_name(self.caps))
        quant = hf.bnb_config(self.cfg, self.caps)
        kwargs: dict[str, Any] = {"dtype": dtype}
        if quant is not None:
            kwargs["quantization_config"] = quant
            if self.caps.kind == "cuda":
                kwargs["device_map"] = {"": 0}
        log.info("loading %s (%s, %s)", self.cfg.base_model, self.cfg.method, dtype)
        self.model = AutoModelForCausalLM.from_pretrained(source, **kwargs)
        # from_pretrained returns eval mode. A 4-bit model that runs any no-grad forward in eval mode before
        # training gets repacked by bitsandbytes on some CPUs and then silently stops learning: train mode now.
        self.model.train()

    def _setup_data(self) -> None:
        import pandas as pd
        from datasets import Dataset

        frame = pd.read_parquet(self.spec.dataset_path)
        self._check_lengths(frame)
        self.train_dataset = Dataset.from_dict(to_conversations(frame, self.cfg.system_prompt))
        log.info("dataset %s: %d examples", self.spec.dataset_id, len(self.train_dataset))

    def _check_lengths(self, frame: Any) -> None:
        """Refuse a max_length that cuts off whole responses: the longest prompt must fit with room to spare."""
        convs = to_conversations(frame, self.cfg.system_prompt)
        longest, row = 0, 0
        for i, msgs in enumerate(convs["prompt"]):
            ids = self.tokenizer.apply_chat_template(msgs, add_generation_prompt=True, tokenize=True)
            n = len(ids["input_ids"] if isinstance(ids, dict) or hasattr(ids, "keys") else ids)
            if n > longest:
                longest, row = n, i
        if longest >= self.cfg.max_length:
            src_row = int(frame["source_row"].iloc[row]) if "source_row" in frame else row + 1
            raise RunFailed(
                f"max_length = {self.cfg.max_length} is shorter than the longest prompt ({longest} tokens, row "
                f"{src_row} of the file), so its response would be cut off entirely. Fix: set max_length to at "
                f"least {_round_up(longest + 64)}, or shorten that prompt."
            )

    def _setup_trainer(self) -> None:
        from trl import SFTTrainer

        from backend import hf

        self.callback = make_store_callback(self.store, self.spec.job_id, self.stop)
        self.trainer = SFTTrainer(
            model=self.model,
            args=hf.sft_config(self.cfg, self.caps, str(self.job_dir / "checkpoints")),
            train_dataset=self.train_dataset,
            processing_class=self.tokenizer,
            peft_config=hf.lora_config(self.cfg),
            callbacks=[self.callback],
        )
        # Our callback logs each step with the job id; the Trainer's own printer would log it a second time.
        from transformers.trainer_callback import PrinterCallback

        self.trainer.remove_callback(PrinterCallback)
        trainable, total = self.trainer.model.get_nb_trainable_parameters()
        log.info("trainable parameters: %d of %d (%.2f%%)", trainable, total, 100 * trainable / total)

    # -- run ------------------------------------------------------------------------------------------------

    def train(self) -> RunResult:
        t0 = time.monotonic()
        if self.stop.is_set():
            return RunResult(status="cancelled", reason="cancelled before training started", device=self.caps.kind)
        self.trainer.train()
        state = self.trainer.state
        adapter_dir = self.job_dir / "adapter"
        self.trainer.save_model(str(adapter_dir))
        self.tokenizer.save_pretrained(str(adapter_dir))
        losses = self.callback.losses
        cancelled = self.stop.is_set() and state.global_step < state.max_steps
        return RunResult(
            status="cancelled" if cancelled else "succeeded",
            reason=f"cancelled at step {state.global_step} of {state.max_steps}; the adapter so far is saved"
            if cancelled
            else "",
            adapter_dir=str(adapter_dir),
            steps=state.global_step,
            total_steps=state.max_steps,
            first_loss=losses[0] if losses else None,
            final_loss=losses[-1] if losses else None,
            train_seconds=round(time.monotonic() - t0, 2),
            device=self.caps.kind,
            extra={"base_model": self.cfg.base_model, "method": self.cfg.method},
        )


def _round_up(n: int, to: int = 64) -> int:
    return (n + to - 1) // to * to
