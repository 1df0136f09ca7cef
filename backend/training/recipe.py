"""The training recipe: one run of LoRA / QLoRA fine-tuning with TRL's trainers, read top to bottom.

The objective picks the trainer: SFTTrainer (sft) on our pre-tokenized examples, or TRL's DPOTrainer, ORPOTrainer
or KTOTrainer on preference data, which they tokenize themselves. Everything else (device, model, adapter,
checkpoints, cancel, resume, progress, scoring) is the same for all of them. A run may start from the adapter of a
finished run (``continue_from``): the manager copies it into the job folder; DPO and KTO then use that adapter,
frozen, as their reference (TRL loads a copy of it under the name "ref"), so no second model is in memory.

``Recipe.setup()`` prepares, in dependency order, the device, the model, the data and the trainer; ``train()``
runs it and saves the adapter (also when cancelled); the result goes to ``result.json`` via the worker. Progress
and metrics go to the store through ``StoreCallback``; a cancel request (SIGTERM to the worker) sets ``stop``,
which the callback turns into "stop after this step and save a checkpoint".

A job may *resume* another one (``JobSpec.resume_from``: a checkpoint the manager copied into this job's
``checkpoints/``): the trainer restores the adapter, optimizer, scheduler, RNG and step count from it, so the step
count, the learning-rate schedule and the loss curve go on from where they stopped.

Run by ``backend.training.worker`` in one process, or in several under ``accelerate launch`` (``num_devices`` > 1): then
every process trains its share of each batch and only the first writes progress, metrics and the result.
"""

from __future__ import annotations

import json
import logging
import math
import os
import threading
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from backend.core.store import Store
from backend.errors import OOM_FIX, RunFailed, explain, is_out_of_memory
from backend.jobs import estimate
from backend.jobs.config import PREFERENCE_OBJECTIVES, RunConfig
from backend.jobs.handoff import START_ADAPTER, JobSpec, RunResult, checkpoint_step, last_checkpoint
from backend.models import devices
from backend.settings import Paths

log = logging.getLogger(__name__)

# Metrics the trainer logs that we chart; anything else it logs is ignored. tokens_per_s and peak_gpu_gb are ours.
CHARTED = (
    "loss",
    "learning_rate",
    "grad_norm",
    "epoch",
    "mean_token_accuracy",
    "num_tokens",
    "entropy",
    "eval_loss",
    "eval_mean_token_accuracy",
    # preference methods: the implied rewards of the better and the worse answer, their gap, and how often the better
    # one is ahead (TRL logs these for DPO and ORPO; KTO logs rewards and margins, no accuracy)
    "rewards/chosen",
    "rewards/rejected",
    "rewards/margins",
    "rewards/accuracies",
    "eval_rewards/chosen",
    "eval_rewards/rejected",
    "eval_rewards/margins",
    "eval_rewards/accuracies",
)


# -- signs of life -------------------------------------------------------------------------------------------------


class Heartbeat:
    """The worker's signs of life, which the manager's watchdog reads (``progress.updated``).

    While training, every step is one (the callback writes progress). A phase the worker cannot interrupt to report
    (loading a model, tokenizing, saving, scoring) runs inside ``during(...)``: a thread beats every ``every_s``
    seconds meanwhile and the phase shows as the job's activity. Anything else that stops the beats (a deadlock, a
    stuck device call, a stopped process) lets the watchdog fail the job and kill the worker."""

    def __init__(self, store: Store, job_id: str, every_s: float = 15.0, enabled: bool = True):
        self.store, self.job_id, self.every_s, self.enabled = store, job_id, every_s, enabled
        self.current = ""  # the latest activity, sent again with every beat

    def during(self, activity: str):
        import contextlib

        @contextlib.contextmanager
        def phase():
            if not self.enabled:
                yield
                return
            done = threading.Event()

            def beat() -> None:
                while not done.wait(self.every_s):
                    try:
                        self.store.set_activity(self.job_id, self.current)
                    except Exception:  # noqa: BLE001 - a missed beat is not worth stopping the work for
                        log.warning("could not record a heartbeat", exc_info=True)

            self.say(activity)
            thread = threading.Thread(target=beat, name="tunedeck-heartbeat", daemon=True)
            thread.start()
            try:
                yield
            finally:
                done.set()
                thread.join()

        return phase()

    def say(self, activity: str) -> None:
        """Show what the worker does now (also a beat)."""
        self.current = activity[:1].lower() + activity[1:]
        if self.enabled:
            self.store.set_activity(self.job_id, self.current)


# -- the callback --------------------------------------------------------------------------------------------------


class StoreWriter:
    """Writes progress and metrics to the store from a thread of its own, in order, so that the training loop never
    waits for SQLite (a committed transaction costs milliseconds, a few % of a small model's step). ``flush`` waits
    until everything queued is written; the recipe flushes before it reports the run's result."""

    def __init__(self, store: Store, job_id: str):
        import queue

        self.store, self.job_id = store, job_id
        self._queue: queue.Queue = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="tunedeck-metrics", daemon=True)
        self._thread.start()

    def progress(self, step: int, total: int, eta: float | None) -> None:
        self._queue.put(("progress", step, total, eta, None, time.time()))

    def beat(self) -> None:
        self._queue.put(("beat", 0, None, None, None, time.time()))

    def step(self, step: int, total: int | None, eta: float | None, values: dict[str, float]) -> None:
        self._queue.put(("step", step, total, eta, values, time.time()))

    def flush(self) -> None:
        self._queue.join()

    def _run(self) -> None:
        while True:
            kind, step, total, eta, values, at = self._queue.get()
            try:
                if kind == "progress":
                    self.store.set_progress(self.job_id, step, total, eta)
                elif kind == "beat":
                    self.store.beat(self.job_id)
                else:
                    self.store.record_step(self.job_id, step, total, eta, values, at=at)
            except Exception:  # noqa: BLE001 - a lost chart point must not stop training; the log says so
                log.exception("could not record step %d in the store", step)
            finally:
                self._queue.task_done()


def make_store_callback(
    store: Store, job_id: str, stop: threading.Event, *, submitted_at: float = 0.0
) -> Any:
    from transformers import TrainerCallback

    class StoreCallback(TrainerCallback):
        """Writes progress and metrics to the store (first process only); turns a cancel request into 'stop after
        this step and save a checkpoint', agreed by every process of a multi-device run."""

        def __init__(self) -> None:
            self.writer = StoreWriter(store, job_id)
            self.t0 = 0.0
            self.start_step = 0
            self.losses: list[float] = []
            self.first_step_at: float | None = None
            self.tokens_offset = 0.0
            self.last_tokens: tuple[float, float] | None = None  # (num_tokens, time) at the previous log
            self.cuda = False
            self.progress: tuple[int, int, float] | None = None
            self.last_beat = time.monotonic()

        def on_train_begin(self, args, state, control, **kw):
            import torch

            self.t0 = time.monotonic()
            self.start_step = state.global_step
            self.cuda = args.device.type == "cuda" and torch.cuda.is_available()
            if self.cuda:
                torch.cuda.reset_peak_memory_stats()
            # A resumed run carries the earlier run's points (the manager copied them); TRL counts tokens from 0
            # again, so its cumulative count is shifted to go on from the last one.
            earlier = store.metrics(job_id, "num_tokens") if state.is_world_process_zero else []
            self.tokens_offset = earlier[-1][2] if earlier and state.global_step else 0.0
            self.losses = (
                [v for s, _, v in store.metrics(job_id, "loss") if s <= state.global_step]
                if state.is_world_process_zero and state.global_step
                else []
            )
            if state.is_world_process_zero:
                self.writer.progress(state.global_step, state.max_steps, None)

        def on_train_end(self, args, state, control, **kw):
            self.writer.flush()

        def on_step_end(self, args, state, control, **kw):
            done = state.global_step
            if self.first_step_at is None:
                self.first_step_at = time.time()
                if submitted_at:
                    log.info(
                        "first optimizer step %.2f s after the job was queued",
                        self.first_step_at - submitted_at,
                    )
            if state.is_world_process_zero:
                elapsed = time.monotonic() - self.t0
                eta = elapsed / max(done - self.start_step, 1) * max(state.max_steps - done, 0)
                self.progress = (done, state.max_steps, eta)
                if not control.should_log:  # a logged step writes its progress with its metrics, in one go
                    self.writer.progress(done, state.max_steps, eta)
            if _agree(stop.is_set(), args):
                log.info("cancel requested: stopping after step %d and saving a checkpoint", done)
                control.should_training_stop = True
                control.should_save = True  # the trainer writes checkpoint-<step> before it stops

        def on_prediction_step(self, args, state, control, **kw):
            # A validation pass takes no training steps: its batches are the worker's signs of life meanwhile.
            if state.is_world_process_zero and time.monotonic() - self.last_beat > 10:
                self.last_beat = time.monotonic()
                self.writer.beat()

        def on_log(self, args, state, control, logs=None, **kw):
            if not state.is_world_process_zero:
                return
            values = {
                k: float(v) for k, v in (logs or {}).items() if k in CHARTED and isinstance(v, (int, float))
            }
            values = {k: v for k, v in values.items() if math.isfinite(v)}
            now = time.monotonic()
            if "num_tokens" in values:
                values["num_tokens"] += self.tokens_offset
                prev_tokens, prev_t = self.last_tokens or (self.tokens_offset, self.t0)
                if now > prev_t and values["num_tokens"] >= prev_tokens:
                    values["tokens_per_s"] = (values["num_tokens"] - prev_tokens) / (now - prev_t)
                self.last_tokens = (values["num_tokens"], now)
            if self.cuda:
                import torch

                values["peak_gpu_gb"] = torch.cuda.max_memory_allocated() / 2**30
            if "loss" in values:
                self.losses.append(values["loss"])
            if self.progress is not None and self.progress[0] == state.global_step:
                self.writer.step(state.global_step, *self.progress[1:], values)
            else:
                self.writer.step(state.global_step, None, None, values)
            log.info("step %d %s", state.global_step, " ".join(f"{k}={v:.4g}" for k, v in values.items()))

    return StoreCallback()


def _agree(flag: bool, args: Any) -> bool:
    """Any process's flag, seen by all of them (every process of a multi-device run must stop at the same step)."""
    if args.world_size <= 1:
        return flag
    import torch
    import torch.distributed as dist

    t = torch.tensor([1.0 if flag else 0.0], device=args.device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def auto_batching(choice: str, padding_waste: float, device_kind: str) -> str:
    """``batching: auto`` decided from the data: padded when padding would waste under 10 % of a batch (nothing to
    gain); padding-free where FlashAttention-2 handles a joined batch as separate sequences; otherwise batches grouped
    by length: without FlashAttention a joined batch needs a block-diagonal mask over all its tokens, and on a CPU
    grouped batches measured fastest (bench/RESULTS.md)."""
    if choice != "auto":
        return choice
    if padding_waste < 0.1:
        return "padded"
    if device_kind == "cuda":
        from transformers.utils import is_flash_attn_2_available

        if is_flash_attn_2_available():
            return "padding_free"
    return "grouped"


def guard_bnb_cpu(model: Any) -> int:
    """The bitsandbytes CPU trap (see docs: a 4-bit model that ran a no-grad forward in eval mode gets its weights
    repacked into an inference-only layout, after which no gradient flows through them and the loss goes flat).

    We switch that repacking off on every 4-bit layer, so evaluation during training cannot trigger it, and undo it
    where it already happened. Returns how many layers had to be undone."""
    try:
        import bitsandbytes as bnb
        from bitsandbytes.functional import _convert_weight_packed_for_cpu_inverse
    except ImportError:
        return 0
    undone = 0
    for module in model.modules():
        if isinstance(module, bnb.nn.Linear4bit):
            module.support_avx512bf16_for_cpu = False
            state = getattr(module.weight, "quant_state", None)
            if state is not None and getattr(state, "packing_format_for_cpu", False):
                module.weight.data, module.weight.quant_state = _convert_weight_packed_for_cpu_inverse(
                    module.weight.data, state
                )
                undone += 1
    if undone:
        log.warning(
            "bitsandbytes had repacked %d 4-bit layers for inference on this CPU; restored them for training",
            undone,
        )
    return undone


# -- the recipe ----------------------------------------------------------------------------------------------------


class Recipe:
    def __init__(self, spec: JobSpec, job_dir: str | Path, store: Store, stop: threading.Event):
        self.spec = spec
        self.job_dir = Path(job_dir)
        self.store = store
        self.stop = stop
        self.cfg = RunConfig.parse(spec.config)
        self.paths = Paths.from_env(spec.home)
        self.rank = int(os.environ.get("RANK", "0"))
        self.local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        self.world_size = int(os.environ.get("WORLD_SIZE", "1"))
        self.trainer: Any = None
        self.model_shape: Any = None
        self.kto_counts = (0, 0)  # KTO: good and bad training answers
        self.heartbeat = Heartbeat(store, spec.job_id, enabled=self.is_main)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def step(self) -> int:
        return self.trainer.state.global_step if self.trainer is not None else 0

    def _say(self, text: str) -> None:
        """Log a long preparation step and show it as the job's activity in the Runs tab."""
        log.info("%s", text)
        self.heartbeat.say(text)

    # -- setup, in dependency order -------------------------------------------------------------------------

    def setup(self) -> None:
        self._setup_device()
        with self.heartbeat.during("loading the model"):
            self._setup_model()
        with self.heartbeat.during("preparing the data"):
            self._setup_data()
            self._setup_trainer()

    def _setup_device(self) -> None:
        from backend.models.devices import detect

        self.caps = detect(self.cfg.device, self.cfg.precision)
        if self.caps.kind == "cpu":
            import torch

            # LoRA's optimizer state and gradients drift into denormal floats on a CPU (tiny squared gradients),
            # where each operation on them is ~10x slower; flushing them to zero changes nothing that matters.
            torch.set_flush_denormal(True)
        if self.cfg.method == "qlora" and self.caps.kind == "mps":
            raise RunFailed(
                "QLoRA (4-bit) needs bitsandbytes, which does not support Apple MPS. Fix: use method lora."
            )
        if self.world_size > 1 and self.caps.kind == "cuda":
            import torch

            torch.cuda.set_device(self.local_rank)
        log.info(
            "device: %s (%s)%s",
            self.caps.kind,
            self.caps.name,
            f", process {self.rank + 1} of {self.world_size}" if self.world_size > 1 else "",
        )

    def _setup_model(self) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from backend.jobs import estimate
        from backend.models import registry as models
        from backend.training import hf

        try:
            self.model_ref = models.check_available(self.cfg.base_model, self.paths)
            source = models.materialize(self.model_ref, progress=self._say)
        except models.ModelError as exc:
            raise RunFailed(str(exc)) from None
        # Code from the model's repository runs only when the person turned trust_remote_code on for this run.
        try:
            models.require_no_own_code(self.model_ref, self.cfg.trust_remote_code)
        except models.ModelError as exc:
            raise RunFailed(str(exc)) from None
        self.tokenizer = AutoTokenizer.from_pretrained(source, trust_remote_code=self.cfg.trust_remote_code)
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        if not getattr(self.tokenizer, "chat_template", None) and self.spec.shape != "text":
            raise RunFailed(
                f"The model {self.cfg.base_model} has no chat template, so TuneDeck cannot format prompts and "
                "responses for it. Fix: pick an instruct/chat model (e.g. Qwen/Qwen2.5-0.5B-Instruct)."
            )
        dtype = getattr(torch, devices.compute_dtype_name(self.caps))
        quant = hf.bnb_config(self.cfg, self.caps)
        kwargs: dict[str, Any] = {"dtype": dtype, "trust_remote_code": self.cfg.trust_remote_code}
        if quant is not None:
            kwargs["quantization_config"] = quant
            if self.caps.kind == "cuda":
                kwargs["device_map"] = {"": self.local_rank}
        log.info("loading %s (%s, %s)", self.cfg.base_model, self.cfg.method, dtype)
        self.model = AutoModelForCausalLM.from_pretrained(source, **kwargs)
        try:
            self.model_shape = estimate.shape_from_config(self.model.config.to_dict(), self.cfg.base_model)
        except (TypeError, ValueError, KeyError):
            self.model_shape = None
        # from_pretrained returns eval mode. A 4-bit model that runs any no-grad forward in eval mode before
        # training gets repacked by bitsandbytes on some CPUs and then silently stops learning: train mode now,
        # and the repacking switched off for good (evaluation during training would trigger it too).
        self.model.train()
        if quant is not None and self.caps.kind == "cpu":
            guard_bnb_cpu(self.model)
        start = self.job_dir / START_ADAPTER
        if start.is_dir():  # continue_from: train on from that run's adapter
            from peft import PeftModel

            log.info("starting from the adapter of %s", self.cfg.continue_from)
            self.model = PeftModel.from_pretrained(self.model, str(start), is_trainable=True)
            self.model.train()

    def _setup_data(self) -> None:
        from backend.models import registry as models
        from backend.training import prepare

        if self.cfg.objective in PREFERENCE_OBJECTIVES:
            self._setup_preference_data()
            return

        prepared = prepare.prepare(
            self.spec.dataset_path,
            self.spec.shape,
            self.tokenizer,
            max_length=self.cfg.max_length,
            system_prompt=self.cfg.system_prompt,
            batch_size=self.cfg.batch_size,
            tokenizer_file=models.tokenizer_file(self.model_ref),
        )
        self.stats = prepared.stats
        self.batching = auto_batching(self.cfg.batching, prepared.stats.padding_waste, self.caps.kind)
        self.train_dataset, self.eval_dataset = prepared.train, prepared.eval
        if self.batching == "packed":
            self.train_dataset = prepare.pack(self.train_dataset, self.cfg.max_length)
            if self.eval_dataset is not None:
                self.eval_dataset = prepare.pack(self.eval_dataset, self.cfg.max_length)
        s = prepared.stats
        log.info(
            "dataset %s (%s): %d training and %d validation examples, %d tokens, loss on %s; %s in %.2f s%s%s",
            self.spec.dataset_id,
            self.spec.shape,
            s.n_train,
            s.n_eval,
            s.train_tokens,
            s.mask_method,
            "cached tokens loaded" if s.cache_hit else "tokenized",
            s.seconds,
            f"; {s.truncated} cut to max_length" if s.truncated else "",
            f"; {s.dropped_no_loss} dropped (no response left within max_length)"
            if s.dropped_no_loss
            else "",
        )
        log.info(
            "batching: %s (padding would waste %.0f%% of each batch)", self.batching, 100 * s.padding_waste
        )
        rows_per_example = len(self.train_dataset) / max(s.n_train, 1)
        self.total_steps = estimate.planned_steps(self.cfg, s.n_train, self.world_size, rows_per_example)
        self._resolve_passes(len(self.train_dataset))

    def _setup_preference_data(self) -> None:
        """The dataset's preference rows as the conversational columns TRL's DPO, ORPO and KTO trainers read."""
        import pyarrow.parquet as pq
        from datasets import Dataset

        from backend.data import shapes

        # Read with pyarrow, which datasets has loaded already: pandas' read_parquet cost 10 MB more peak memory
        # than the bare TRL script (bench/bench_dpo.py), for a few hundred rows.
        data = pq.read_table(self.spec.dataset_path).to_pydict()
        parts: dict[str, Any] = {}
        for split in ("train", "validation"):
            keep = [i for i, s in enumerate(data["split"]) if s == split]
            if not keep:
                parts[split] = None
                continue
            rows = {k: [v[i] for i in keep] for k, v in data.items()}
            cols = shapes.preference_columns(rows, self.spec.shape, self.cfg.system_prompt)
            if self.cfg.objective == "kto" and self.spec.shape == "preference":
                cols = shapes.unpaired(cols)
            parts[split] = Dataset.from_dict(cols)
            if (
                self.cfg.objective == "kto"
            ):  # it samples in order (see hf.preference_config): mix good and bad
                parts[split] = parts[split].shuffle(seed=self.cfg.seed)
        self.train_dataset, self.eval_dataset = parts["train"], parts["validation"]
        if self.cfg.objective == "kto":
            labels = self.train_dataset["label"]
            self.kto_counts = (sum(labels), len(labels) - sum(labels))
            if not all(self.kto_counts):
                raise RunFailed(
                    "KTO needs answers marked good and answers marked bad, and every training answer of this "
                    f"dataset is {'good' if self.kto_counts[0] else 'bad'}. Fix: add answers of the other kind."
                )
        self.stats = None
        self.batching = "padded"
        log.info(
            "dataset %s (%s) for %s: %d training and %d validation examples",
            self.spec.dataset_id,
            self.spec.shape,
            self.cfg.objective,
            len(self.train_dataset),
            len(self.eval_dataset) if self.eval_dataset is not None else 0,
        )
        self.total_steps = estimate.planned_steps(self.cfg, len(self.train_dataset), self.world_size, 1.0)
        self._resolve_passes(len(self.train_dataset))

    def _resolve_passes(self, rows: int) -> None:
        """min_steps: a small dataset trains for more passes (the same rule as the estimate, config.passes_for)."""
        from backend.jobs.config import passes_for

        passes = passes_for(self.cfg, rows, self.world_size)
        if self.cfg.max_steps <= 0 and passes != self.cfg.num_epochs:
            log.info(
                "%.3g passes over %d examples instead of %g: at least %d steps (min_steps) for a dataset this size",
                passes,
                rows,
                self.cfg.num_epochs,
                self.cfg.min_steps,
            )
            self.cfg = self.cfg.updated(num_epochs=passes)

    def _setup_trainer(self) -> None:
        from transformers.trainer_callback import PrinterCallback

        from backend.training import hf

        cfg = self.cfg.updated(batching=self.batching)
        eval_every = hf.eval_interval(cfg, self.total_steps) if self.eval_dataset is not None else None
        self.callback = make_store_callback(
            self.store, self.spec.job_id, self.stop, submitted_at=self.spec.submitted_at
        )
        output_dir = str(self.job_dir / "checkpoints")
        try:
            if cfg.objective == "sft":
                args = hf.sft_config(cfg, self.caps, output_dir, eval_every=eval_every)
            else:
                args = hf.preference_config(
                    cfg, self.caps, output_dir, eval_every=eval_every, kto_counts=self.kto_counts
                )
        except hf.UnsupportedOnDevice as exc:
            raise RunFailed(str(exc)) from None
        from peft import PeftModel

        continuing = isinstance(self.model, PeftModel)  # continue_from: the adapter is there already
        self.trainer = hf.trainer_class(cfg.objective)(
            model=self.model,
            args=args,
            train_dataset=self.train_dataset,
            eval_dataset=self.eval_dataset,
            processing_class=self.tokenizer,
            peft_config=None if continuing else hf.lora_config(cfg, *_blocks(self.model)),
            callbacks=[self.callback],
        )
        # Our callback logs each step with the job id; the Trainer's own printer would log it a second time.
        self.trainer.remove_callback(PrinterCallback)
        if self.batching == "grouped":
            # The Trainer would read the "length" column one row at a time (~2 s per 10k rows before the first
            # step); the same sampler from the column read at once.
            from transformers.trainer_pt_utils import LengthGroupedSampler

            lengths = self.train_dataset.data.column("length").to_pylist()
            group = args.train_batch_size * args.gradient_accumulation_steps
            self.trainer._get_train_sampler = lambda dataset=None: LengthGroupedSampler(
                group, lengths=lengths
            )
        trainable, total = self.trainer.model.get_nb_trainable_parameters()
        log.info(
            "trainable parameters: %d of %d (%.2f%%); %s",
            trainable,
            total,
            100 * trainable / total,
            f"evaluating every {eval_every} steps" if eval_every else "no validation split: no evaluation",
        )

    # -- run ------------------------------------------------------------------------------------------------

    def train(self) -> RunResult:
        from backend.models import runcard

        t0 = time.monotonic()
        if self.stop.is_set():
            return RunResult(
                status="cancelled", reason="cancelled before training started", device=self.caps.kind
            )
        resume = self.spec.resume_from or None
        resume_step = checkpoint_step(resume) if resume else 0  # read now: newer checkpoints rotate it away
        if resume:
            log.info("resuming from %s (step %d)", resume, resume_step)
        if self.cfg.method == "qlora" and self.caps.kind == "cpu":
            guard_bnb_cpu(self.trainer.model)
        try:
            output = self.trainer.train(resume_from_checkpoint=resume)
        finally:
            self.callback.writer.flush()  # every point is in the store before the result says the run ended
        state = self.trainer.state
        adapter_dir = self.job_dir / "adapter"
        with self.heartbeat.during("saving the adapter"):
            # every process takes part (FSDP gathers); the first one writes
            self.trainer.save_model(str(adapter_dir))
        if self.is_main and (adapter_dir / "ref").is_dir():
            # PEFT saves every adapter: a run that continued another also wrote TRL's frozen reference copy, the
            # adapter it started from, into ref/. The run's adapter is the default one; the copy would only double
            # every download and push.
            import shutil

            shutil.rmtree(adapter_dir / "ref")
        if self.is_main:
            self.tokenizer.save_pretrained(str(adapter_dir))
            name_base_model(adapter_dir, self.model_ref.portable_name)
            runcard.write(
                adapter_dir,
                run=self.spec.job_id,
                base_model=self.cfg.base_model,
                upstream=self.model_ref.upstream,
                dtype=devices.compute_dtype_name(self.caps),
                dataset=self.spec.dataset_id,
                config=self.spec.config,
            )
        losses = self.callback.losses
        cancelled = self.stop.is_set() and state.global_step < state.max_steps
        checkpoint = last_checkpoint(self.job_dir)
        extra = {
            "base_model": self.cfg.base_model,
            "base_model_upstream": self.model_ref.upstream,
            "method": self.cfg.method,
            "batching": self.batching,
            "world_size": self.world_size,
            "resumed_from_step": resume_step,
            "checkpoint": str(checkpoint) if checkpoint else "",
            "first_step_at": self.callback.first_step_at,
            "objective": self.cfg.objective,
            "continued_from": self.cfg.continue_from,
            "dataset": {k: v for k, v in asdict(self.stats).items() if k != "lengths_sample"}
            if self.stats is not None
            else {"n_train": len(self.train_dataset), "n_eval": len(self.eval_dataset or [])},
            "peak_rss_mb": _peak_rss_mb(),
            "train_runtime": output.metrics.get(
                "train_runtime"
            ),  # the trainer's own clock, as in the benchmarks
            "train_tokens": getattr(
                self.trainer, "_total_train_tokens", None
            ),  # real tokens, this process's run
        }
        if self.callback.cuda:
            import torch

            extra["peak_gpu_gb"] = round(torch.cuda.max_memory_allocated() / 2**30, 3)
        return RunResult(
            status="cancelled" if cancelled else "succeeded",
            reason=f"cancelled at step {state.global_step} of {state.max_steps}; the adapter so far is saved, and "
            "a checkpoint to resume from"
            if cancelled
            else "",
            adapter_dir=str(adapter_dir),
            steps=state.global_step,
            total_steps=state.max_steps,
            first_loss=losses[0] if losses else None,
            final_loss=losses[-1] if losses else None,
            train_seconds=round(time.monotonic() - t0, 2),
            device=self.caps.kind,
            extra=extra,
        )

    # -- score ----------------------------------------------------------------------------------------------

    def score(self, result: RunResult) -> None:
        """Score the finished run against its base on held-out examples, with the model now in memory.

        No second load: the base's answers come from the same PEFT model with its adapter switched off. It never
        fails the run (the adapter is saved already): a problem is logged and noted in the result, and
        ``tunedeck eval`` can score it later. A cancel while scoring skips the rest."""
        import contextlib

        from backend.serving import evaluate
        from backend.serving.generate import Loaded

        n = self.cfg.score_examples
        if not n or result.status != "succeeded" or not self.is_main:
            return
        if self.spec.shape == "text":
            return  # raw text has no prompts and reference answers; its eval loss is on the charts
        if self.world_size > 1:
            log.info(
                "not scored here: the model is spread over %d processes; run `tunedeck eval %s`",
                self.world_size,
                self.spec.job_id,
            )
            return
        job = self.store.get_job(self.spec.job_id)
        if job is None:
            return
        model = self.trainer.model
        model.eval()
        loaded = Loaded(
            model, self.tokenizer, self.cfg.base_model, result.adapter_dir, self.cfg.system_prompt
        )

        class TrainedModel:  # what evaluate.score asks of a model pool
            def use(self, base_model: str, adapter_dir: str | None, like: str | None = None):
                if adapter_dir is None:
                    return loaded, model.disable_adapter()
                if adapter_dir == result.adapter_dir:
                    return loaded, contextlib.nullcontext()
                # The adapter a continued run started from: DPO and KTO keep it in memory already, as their frozen
                # reference "ref"; ORPO has none, so it is loaded beside the run's own.
                from trl.trainer.utils import use_adapter

                if "ref" not in model.peft_config:
                    model.load_adapter(adapter_dir, adapter_name="ref")
                return loaded, use_adapter(model, "ref")

        start = evaluate.start_adapter(job)
        log.info(
            "scoring the run against its base model%s on up to %d held-out examples",
            f" and {self.cfg.continue_from}, the run it started from," if start else "",
            n,
        )
        try:
            with self.heartbeat.during("scoring against the base model"):
                res = evaluate.score(
                    self.store,
                    job,
                    result.adapter_dir,
                    TrainedModel(),
                    limit=n,
                    should_stop=self.stop.is_set,
                    on_progress=lambda done, total: self.heartbeat.say(
                        f"scoring against the base model: {done} of {total} answers written"
                    ),
                )
        except evaluate.Stopped:
            log.info("scoring skipped: the job was cancelled")
            return
        except Exception as exc:  # noqa: BLE001 - scoring is extra; the run itself succeeded
            log.warning("could not score the run: %s", explain(exc))
            result.extra["score_error"] = explain(exc)
            return
        log.info("scored in %.1f s:\n%s", res.seconds, res.summary())


def failure(exc: BaseException, recipe: Recipe | None) -> RunResult:
    """A failed run's result: a reason a person can act on, and what the manager needs to retry it."""
    step = recipe.step if recipe is not None else 0
    total = recipe.trainer.state.max_steps if recipe is not None and recipe.trainer is not None else 0
    extra: dict[str, Any] = {"step": step, "checkpoint": ""}
    if recipe is not None:
        ckpt = last_checkpoint(recipe.job_dir)
        extra["checkpoint"] = str(ckpt) if ckpt else ""
    if is_out_of_memory(exc):
        extra["out_of_memory"] = True
        cfg = recipe.cfg if recipe is not None else None
        reason = f"out of GPU memory at step {step}" + (f" of {total}" if total else "") + "."
        return RunResult(
            status="failed",
            reason=f"{reason} Fix: {oom_suggestions(cfg, recipe)}",
            steps=step,
            total_steps=total,
            device=recipe.caps.kind if recipe else "",
            extra=extra,
        )
    return RunResult(status="failed", reason=explain(exc), steps=step, total_steps=total, extra=extra)


def oom_suggestions(cfg: RunConfig | None, recipe: Recipe | None) -> str:
    """The same concrete changes the estimate suggests before a job starts, with their estimated peaks if known."""
    if cfg is None:
        return OOM_FIX
    from backend.jobs import estimate

    shape = recipe.model_shape if recipe is not None else None
    tips = []
    for label, changed in estimate._alternatives(cfg, None)[:4]:
        if shape is not None:
            label += f" (about {estimate.memory(shape, changed).total:.1f} GB)"
        tips.append(label)
    if cfg.oom_retry and cfg.batch_size > 1:
        tips.append("oom_retry is on, so TuneDeck retries with half the batch by itself")
    return "; or ".join(tips) + "."


def _blocks(model: Any) -> tuple[int | None, list[str]]:
    """(number of transformer blocks, names of the linear layers inside a block) of a causal LM, for lora_layers."""
    import torch

    n = getattr(model.config.get_text_config(), "num_hidden_layers", None)
    names = sorted(
        {
            name.rsplit(".", 1)[-1]
            for name, module in model.named_modules()
            if isinstance(module, torch.nn.Linear) and ".layers." in name
        }
    )
    return n, names


def name_base_model(adapter_dir: str | Path, base: str) -> None:
    """Write the portable name of the base (its Hub id where known) into adapter_config.json, so the adapter loads
    anywhere with plain PEFT (AutoPeftModelForCausalLM reads it), instead of this machine's folder path."""
    path = Path(adapter_dir) / "adapter_config.json"
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return
    data["base_model_name_or_path"] = base
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True))
    tmp.replace(path)


def _peak_rss_mb() -> float:
    import resource
    import sys

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024, 1)
