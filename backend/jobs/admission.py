"""Admission: what a job will cost and whether it fits, decided before it is queued. Torch-free.

The Train tab's estimate (``fit_report``), the CPU run's time and memory (``cpu_estimate``), and the checks ``submit``
runs on a whole job: max_length against the longest prompt (the dataset report's exact token counts, the one count
the worker uses too) and the peak memory against the GPU, or this machine's RAM when it trains on the CPU, refusing
with concrete changes that would fit. The scheduler (``backend.jobs.manager``) only asks; it decides nothing here.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from backend.core.status import JobStatus
from backend.core.store import DatasetRecord, Store
from backend.jobs import estimate
from backend.jobs.accelerator import Accelerator
from backend.jobs.config import OBJECTIVE_SHAPES, Problem, RunConfig, max_length_for
from backend.models import devices as hardware
from backend.models import registry as models
from backend.settings import Paths


@dataclass(frozen=True)
class CpuEstimate:
    """What a run will cost on this CPU (``estimate.CpuRun``), from the dataset's exact token counts."""

    run: estimate.CpuRun
    longest: int  # the longest training example, in tokens, capped at max_length
    available_gb: float  # memory this job can count on: free now, plus what our running job will give back
    cores: int
    bf16: bool
    train_rows: int = 0
    tokens_per_epoch: int = 0
    epochs: float = 0.0

    @property
    def fits(self) -> bool:
        return self.run.ram_gb <= self.available_gb


@dataclass(frozen=True)
class GpuEstimate:
    """What a job will cost on the GPUs it would use: the fit (peak memory against what they have free) and, with
    the dataset's token counts, the training time. One computation for the Train tab, the refusal at submit and
    ``tunedeck estimate``."""

    fit: estimate.Fit
    where: str  # the card, as messages name it
    steps: int = 0
    epochs: float = 0.0
    train_s: float | None = None  # None: the card's speed is not known, or no dataset
    train_rows: int = 0
    tokens_per_epoch: int = 0


class Admission:
    """Estimates and fit checks for jobs on this machine. ``gpu_probe`` lists the GPUs; ``running_pids`` gives the
    process groups of the jobs this process runs (their memory comes back before a new job starts)."""

    def __init__(
        self,
        store: Store,
        paths: Paths,
        *,
        gpu_probe: Callable[[], list[hardware.Gpu]],
        running_pids: Callable[[], list[int]] = list,
    ):
        self.store = store
        self.paths = paths
        self.gpu_probe = gpu_probe
        self.running_pids = running_pids

    def fit_report(self, dataset: str | None, config: RunConfig) -> tuple[bool, str]:
        """(fits, a few lines for the Train tab): estimated peak GPU memory and time per epoch. Torch-free."""
        record = self.store.get_dataset(dataset) if dataset else None
        shape = estimate.model_shape(config.base_model, self.paths)
        if shape is None:
            return True, (
                f"No estimate for {config.base_model}: its config.json is not on this machine yet "
                "(it is read after the first download)."
            )
        gpus = self.gpus_for(config)
        if not gpus:
            cpu = self.cpu_estimate(record, config) if record else None
            if cpu is not None:
                return cpu.fits, self._cpu_lines(cpu, shape, config)
            if record is None:
                return True, (
                    "No NVIDIA GPU here: it will train on the CPU. Choose a dataset above to see how long it will "
                    "take and how much memory it needs."
                )
            need = estimate.memory(shape, config)
            return True, (
                f"No NVIDIA GPU here: it will train on the CPU. On a GPU it would need about {need.summary()}."
            )
        gpu = self.gpu_estimate(record, config, shape, gpus)
        lines = [
            gpu.fit.message(gpu.where) if gpu.fit.fits else "Will not fit: " + gpu.fit.message(gpu.where)
        ]
        if gpu.train_s is not None:
            scoring = (
                f", then scoring {config.score_examples} held-out examples" if config.score_examples else ""
            )
            lines.append(
                f"Training alone: about {_duration(gpu.train_s)} ({gpu.steps} steps, {gpu.epochs:.3g} passes over "
                f"{gpu.train_rows} examples, {gpu.tokens_per_epoch:,} tokens) on the GPU, plus loading the "
                f"model{scoring}. A rough figure; the Runs tab shows the real pace."
            )
        return gpu.fit.fits, "  \n".join(lines)

    def token_report(self, record: DatasetRecord, config: RunConfig):
        """The dataset's exact token counts with this model's tokenizer and chat template, as it will be trained
        (the Data tab's report, cached per dataset version and model): the one count the estimate, the length
        check and the Data tab share. None while the model's tokenizer is not on this machine. Torch-free."""
        from backend.data import report
        from backend.data.chatformat import ChatFormat
        from backend.data.readers import DataError

        try:
            fmt = ChatFormat.load(config.base_model, self.paths)
            return report.token_report(
                record, fmt, system_prompt=config.system_prompt, max_length=config.max_length
            )
        except (DataError, OSError, ValueError):
            return None

    def cpu_estimate(self, dataset: str | DatasetRecord | None, config: RunConfig) -> CpuEstimate | None:
        """Memory and time of this job on this machine's CPU, from the dataset's exact token counts with the
        model's own tokenizer and chat template (the Data tab's report, cached per dataset version); None while the
        model's shape or tokenizer is not on this machine. Torch-free."""
        record = self.store.get_dataset(dataset) if isinstance(dataset, str) else dataset
        shape = estimate.model_shape(config.base_model, self.paths)
        tokens = self.token_report(record, config) if record is not None else None
        if shape is None or tokens is None or not tokens.train_rows:
            return None
        bf16 = config.precision == "bf16" or (config.precision == "auto" and hardware.cpu_has_bf16())
        cores = os.cpu_count() or 1
        n_val = tokens.validation_rows
        reference = (
            (tokens.validation_trained_tokens / n_val)
            if n_val
            else (tokens.trained_tokens_per_epoch / tokens.train_rows)
        )
        prompt = (
            ((tokens.validation_tokens - tokens.validation_trained_tokens) / n_val)
            if n_val
            else ((tokens.tokens_per_epoch - tokens.trained_tokens_per_epoch) / tokens.train_rows)
        )
        run = estimate.cpu_run(
            shape,
            config,
            train_tokens=tokens.tokens_per_epoch,
            train_examples=tokens.train_rows,
            longest=tokens.train_longest,
            eval_tokens=tokens.validation_tokens,
            eval_examples=n_val,
            reference_tokens=reference,
            prompt_tokens=prompt,
            steps=estimate.planned_steps(config, tokens.train_rows),
            cores=cores,
            bf16=bf16,
        )
        per_step = config.batch_size * config.grad_accum * max(config.num_devices, 1)
        return CpuEstimate(
            run,
            tokens.train_longest,
            self.ram_budget_gb(),
            cores,
            bf16,
            train_rows=tokens.train_rows,
            tokens_per_epoch=tokens.tokens_per_epoch,
            epochs=run.steps * per_step / tokens.train_rows,
        )

    def ram_budget_gb(self) -> float:
        """Memory a new CPU job can count on: free now, plus what our running job holds (it finishes first)."""
        running = self.running_pids() or [j.pid for j in self.store.list_jobs((JobStatus.RUNNING,)) if j.pid]
        return hardware.ram_available_gb(running)

    def _cpu_lines(self, cpu: CpuEstimate, shape: estimate.ModelShape, config: RunConfig) -> str:
        r = cpu.run
        lines = [
            f"No NVIDIA GPU here: it will train on the CPU ({cpu.cores} cores; {cpu_kind(cpu.bf16, config)}). "
            f"About **{estimate._secs(r.total_s)}** from Train to finished ({r.summary()}; {r.steps} steps are "
            f"{cpu.epochs:.3g} passes over {cpu.train_rows:,} examples of {cpu.tokens_per_epoch:,} tokens). A "
            "rough figure (±30 %): the Runs tab shows the real pace.",
        ]
        if cpu.fits:
            lines.append(
                f"Peak memory about {r.ram_gb:.1f} GB of the {cpu.available_gb:.1f} GB this machine has free."
            )
        else:
            lines.append("Will not fit: " + self._cpu_refusal(cpu, shape, config))
        return "  \n".join(lines)

    def _cpu_refusal(self, cpu: CpuEstimate, shape: estimate.ModelShape, config: RunConfig) -> str:
        tips = []
        for label, changed in estimate._alternatives(config, cpu.longest):
            if changed.method == "qlora":
                continue  # 4-bit saves little on a CPU and makes every step slower
            need = estimate.cpu_memory_gb(
                shape,
                changed,
                seq_len=cpu.longest,
                bf16=cpu.bf16,
                mean_len=cpu.tokens_per_epoch / max(cpu.train_rows, 1),
            )
            if need <= cpu.available_gb:
                tips.append(f"{label} (about {need:.1f} GB)")
        return (
            f"this job needs about {cpu.run.ram_gb:.1f} GB of memory on the CPU, and this machine has "
            f"{cpu.available_gb:.1f} GB free. Fix: "
            + ("; or ".join(tips[:3]) if tips else "use a smaller model, or a machine with more memory")
            + "."
        )

    def length_problems(self, record: DatasetRecord, config: RunConfig) -> list[Problem]:
        """max_length must leave room for a response after the longest prompt, counted exactly as the worker will
        (the model's chat template and tokenizer; on a sample of a very big dataset, and then said so)."""
        if _shape(record) == "text":
            return []  # plain text is cut to max_length and still trains on what is left
        tokens = self.token_report(record, config)
        if tokens is None or tokens.longest_prompt < config.max_length:
            return []  # no tokenizer here yet: the worker checks once it has it
        longest, row = tokens.longest_prompt, tokens.longest_prompt_row
        need = max_length_for(longest)
        chat = _shape(record) == "chat"
        what = "conversation before its first assistant reply" if chat else "prompt"
        return [
            Problem(
                "max_length",
                config.max_length,
                f"the longest {what} (row {row} of the file) is {longest} tokens"
                + (" (of a sample of the rows)" if tokens.sampled else "")
                + ", so its response would be cut off",
                f"set max_length to at least {need}, or shorten that {'conversation' if chat else 'prompt'}",
            )
        ]

    def objective_problems(self, record: DatasetRecord | None, config: RunConfig) -> list[Problem]:
        """The objective against the dataset's shape, and the run to continue from (it exists, it finished with an
        adapter, on the same base model)."""
        problems = []
        shape = _shape(record) if record is not None else None
        wanted = OBJECTIVE_SHAPES[config.objective]
        if shape is not None and shape not in wanted:
            fits = [o for o, shapes in OBJECTIVE_SHAPES.items() if shape in shapes]
            if config.objective == "sft":
                fix = f"use objective {' or '.join(fits)} for this dataset, or pick a dataset of examples"
            else:
                fix = (
                    "pick a dataset of preference pairs (prompt / chosen / rejected columns"
                    + (", or answers marked good or bad" if config.objective == "kto" else "")
                    + "), or make one from your blind-test votes in the Compare tab"
                    + (f"; for this dataset use objective {' or '.join(fits)}" if fits else "")
                )
            problems.append(
                Problem(
                    "objective",
                    config.objective,
                    f"the dataset {record.name!r} holds {SHAPE_WORDS.get(shape, shape)}, and "
                    f"{config.objective} trains on {' or '.join(SHAPE_WORDS[s] for s in wanted)}",
                    fix,
                )
            )
        if config.objective == "kto" and shape == "feedback" and not problems:
            problem = _one_kind_only(record)
            if problem:
                problems.append(problem)
        if config.continue_from:
            problem = self._continue_problem(config)
            if problem:
                problems.append(problem)
        return problems

    def _continue_problem(self, config: RunConfig) -> Problem | None:
        from pathlib import Path

        job = self.store.get_job(config.continue_from)
        fix = "use the id of a finished run on the same base model (`tunedeck jobs` lists them), or leave it empty"
        if job is None:
            return Problem("continue_from", config.continue_from, "there is no run with this id", fix)
        adapter = (job.result or {}).get("adapter_dir") or ""
        if job.status is not JobStatus.SUCCEEDED or not adapter or not Path(adapter).is_dir():
            return Problem(
                "continue_from",
                config.continue_from,
                f"that run is {job.status.value} and has no finished adapter to start from",
                fix,
            )
        base = job.config.get("base_model")
        if base != config.base_model:
            return Problem(
                "continue_from",
                config.continue_from,
                f"that run trained {base!r}, and this run's base_model is {config.base_model!r}",
                f"set base_model to {base}, or continue from a run on {config.base_model}",
            )
        return None

    def gpus_for(self, config: RunConfig) -> list[hardware.Gpu]:
        if config.device in ("cpu", "mps"):
            return []
        gpus = self.gpu_probe()
        return gpus[: max(config.num_devices, 1)]

    def gpu_budget_gb(self, gpu: hardware.Gpu) -> float:
        """Memory a new job can count on: free memory, plus what our own running job holds (it will be done first,
        since jobs run one at a time), plus what chat, scoring or export hold (they let go when a job needs it)."""
        ours = hardware.gpu_memory_of_groups(
            self.running_pids() or [j.pid for j in self.store.list_jobs((JobStatus.RUNNING,)) if j.pid],
            gpu.index,
        )
        return gpu.free_gb + ours + Accelerator(self.store).held_gb()

    def gpu_estimate(
        self,
        record: DatasetRecord | None,
        config: RunConfig,
        shape: estimate.ModelShape,
        gpus: list[hardware.Gpu],
    ) -> GpuEstimate:
        """Peak memory against the free memory of ``gpus`` (the dataset's longest example sets the activations) and,
        when the dataset's token counts are known, the steps and the training time on that card."""
        stats = self.token_report(record, config) if record is not None else None
        seq = stats.train_longest if stats and stats.train_longest else config.max_length
        budget = min(self.gpu_budget_gb(g) for g in gpus)
        fit = estimate.check_fit(shape, config, budget, seq_len=seq)
        where = gpus[0].name + (f" (x{len(gpus)})" if len(gpus) > 1 else "")
        rows = stats.train_rows if stats else 0
        if not rows:
            return GpuEstimate(fit, where)
        per_step = config.batch_size * config.grad_accum * max(config.num_devices, 1)
        steps = estimate.planned_steps(config, rows, config.num_devices)
        epochs = steps * per_step / rows
        secs = estimate.seconds_per_epoch(
            shape,
            config,
            tokens_per_epoch=stats.tokens_per_epoch,
            mean_len=stats.tokens_per_epoch / rows,
            device_kind="cuda",
            device_name=gpus[0].name,
        )
        return GpuEstimate(
            fit,
            where,
            steps=steps,
            epochs=epochs,
            train_s=secs * epochs if secs is not None else None,
            train_rows=rows,
            tokens_per_epoch=stats.tokens_per_epoch,
        )

    def memory_problems(
        self, config: RunConfig, record: DatasetRecord | None, ref: models.ModelRef | None
    ) -> list[Problem]:
        """Refuse, before queueing, a job that will not fit the GPU, or this machine's memory when it trains on the
        CPU, with changes that would fit."""
        gpus = self.gpus_for(config)
        if ref is None or record is None:
            return []
        if not gpus:
            mshape = estimate.model_shape(config.base_model, self.paths)
            cpu = self.cpu_estimate(record, config)
            if cpu is None or mshape is None or cpu.fits:
                return []
            return [_memory_problem(f"{cpu.run.ram_gb:.1f} GB", self._cpu_refusal(cpu, mshape, config))]
        mshape = estimate.model_shape(config.base_model, self.paths)
        if mshape is None:
            return []
        fit = self.gpu_estimate(record, config, mshape, gpus).fit
        if fit.fits:
            return []
        return [_memory_problem(f"{fit.need.total:.1f} GB", fit.message(gpus[0].name))]

    def estimate_dict(self, dataset: str | None, config: RunConfig) -> dict[str, Any]:
        """The Train tab's estimate as plain data, for ``tunedeck estimate`` and ``tunedeck train --json``: the same
        verdict, figures and text (``fit_report``; ``message`` without its Markdown) under ESTIMATE_KEYS, each key
        always there and None where this machine cannot tell (the model's config.json or tokenizer not here yet;
        on a GPU, the parts of the time other than training). ``suggestions``: the changes that would fit, when it
        will not. Torch-free."""
        record = self.store.get_dataset(dataset) if dataset else None
        gpus = self.gpus_for(config)
        shape = estimate.model_shape(config.base_model, self.paths)
        out: dict[str, Any] = dict.fromkeys(ESTIMATE_KEYS)
        out.update(
            device="cuda" if gpus else "cpu",
            base_model=config.base_model,
            dataset=record.name if record else dataset,
            suggestions=[],
        )
        cpu = self.cpu_estimate(record, config) if record and shape and not gpus else None
        if cpu is not None:  # the figures and the text from one estimate, as fit_report makes them
            r = cpu.run
            out.update(
                fits=cpu.fits,
                message=_plain(self._cpu_lines(cpu, shape, config)),
                ram_gb=round(r.ram_gb, 2),
                available_gb=round(cpu.available_gb, 2),
                total_s=round(r.total_s, 1),
                train_s=round(r.train_s, 1),
                eval_s=round(r.eval_s, 1),
                score_s=round(r.score_s, 1),
                start_s=round(r.start_s, 1),
                steps=r.steps,
                epochs=round(cpu.epochs, 3),
                train_rows=cpu.train_rows,
                tokens_per_epoch=cpu.tokens_per_epoch,
                precision="bf16" if cpu.bf16 else "fp32",
                cores=cpu.cores,
            )
            if not cpu.fits:
                out["suggestions"] = _fixes(self._cpu_refusal(cpu, shape, config))
            return out
        fits, text = self.fit_report(dataset, config)
        out.update(fits=fits, message=_plain(text))
        if not gpus or shape is None or record is None:
            return out
        gpu = self.gpu_estimate(record, config, shape, gpus)
        out.update(
            gpu_gb=round(gpu.fit.need.total, 2),
            available_gb=round(gpu.fit.budget_gb, 2),
            precision=None if config.precision == "auto" else config.precision,  # auto: the GPU decides
            suggestions=[] if gpu.fit.fits else _fixes(gpu.fit.message(gpus[0].name)),
        )
        if gpu.train_rows:
            out.update(
                train_s=round(gpu.train_s, 1) if gpu.train_s is not None else None,
                steps=gpu.steps,
                epochs=round(gpu.epochs, 3),
                train_rows=gpu.train_rows,
                tokens_per_epoch=gpu.tokens_per_epoch,
            )
        return out


ESTIMATE_KEYS = (  # Admission.estimate_dict's keys, in this order (a stable shape for scripts)
    "fits",  # would submit take it (memory); True where there is nothing to measure yet
    "device",  # "cpu" or "cuda"
    "base_model",
    "dataset",
    "ram_gb",  # peak memory of the worker on the CPU
    "gpu_gb",  # peak GPU memory (per GPU)
    "available_gb",  # what this job can count on: free memory, plus what our running job gives back
    "total_s",  # from Train to finished: start_s + train_s + eval_s + score_s (CPU)
    "train_s",
    "eval_s",  # the validation passes
    "score_s",  # scoring against the base model at the end
    "start_s",  # process start, imports, loading the model and the data
    "steps",
    "epochs",
    "train_rows",
    "tokens_per_epoch",
    "precision",  # "bf16" or "fp32" on a CPU; on a GPU the setting, None for auto
    "cores",
    "message",  # the Train tab's text, plain
    "suggestions",  # changes that would fit, best first, when it will not
)


def _plain(markdown: str) -> str:
    """The Train tab's Markdown as plain text: no bold, one line per line."""
    return markdown.replace("**", "").replace("  \n", "\n")


def _fixes(refusal: str) -> list[str]:
    """The changes a refusal ("... Fix: a; or b.") lists, one per item."""
    fix = refusal.split(" Fix: ", 1)[-1].rstrip(".")
    return [tip.strip() for tip in fix.split("; or ") if tip.strip()]


# The preset for preference pairs alone on the starter model (measured in bench/RESULTS.md: from the base model, the
# DPO preset's rate moved the model's own preference but not its answers).
FROM_BASE_PRESET = "smollm2-135m-dpo-base"


def start_note(config: RunConfig) -> str:
    """Advice, not a problem: a DPO or KTO run with no run to start from learns which answer is better relative to
    the base model, but learns to write the better answers only through the SFT term, so at a rate meant for
    polishing a finished run its answers hardly change. Empty where there is nothing to say."""
    if config.objective not in ("dpo", "kto") or config.continue_from:
        return ""
    first = "train a run on your examples first (objective sft) and start from it"
    if config.base_model == "smollm2-135m":
        first = f"use the {FROM_BASE_PRESET} preset (learning rate 2e-3, the SFT starter's), or " + first
    return (
        f"No run to start from: this {config.objective.upper()} run starts from the base model. It will learn which "
        "answer is better, but to write the better answers it needs the supervised part ('Also learn the better "
        f"answers') and enough steps: {first}."
    )


def _memory_problem(value: str, text: str) -> Problem:
    """A refusal's text ("this job needs ... Fix: ...") as a Problem; Problem adds its own full stops, so a message
    ending in one would read "free.. Fix:"."""
    reason, _, fix = text.partition(" Fix: ")
    return Problem("memory", value, reason.rstrip("."), fix.rstrip("."))


def cpu_kind(bf16: bool, config: RunConfig) -> str:
    """What the number format means on this CPU, in words: a person on a laptop without bf16 instructions should
    know why their run is slower than the README's machine."""
    if bf16:
        return "it has bf16 instructions, so it trains in bf16, the faster number format"
    if config.precision == "fp32" and hardware.cpu_has_bf16():
        return "fp32, as set in precision (bf16 would be about 1.3x faster on this CPU)"
    return "no bf16 instructions on this CPU, so it trains in fp32, about 1.3x slower than on one with them"


def _one_kind_only(record: DatasetRecord) -> Problem | None:
    """KTO learns from the contrast of good and bad answers: a training split of one kind only is refused here,
    before a worker loads the model (the worker checks again)."""
    import pyarrow.parquet as pq

    table = pq.read_table(record.path, columns=["label", "split"]).to_pydict()
    labels = {v for v, split in zip(table["label"], table["split"], strict=True) if split == "train"}
    if len(labels) != 1:
        return None  # both kinds (or no training rows, which the import never leaves)
    kind = "good" if labels == {"true"} else "bad"
    return Problem(
        "dataset",
        record.name,
        f"every training answer of this dataset is marked {kind}, and KTO needs good and bad answers",
        f"add answers marked {'bad' if kind == 'good' else 'good'}, or import the good answers as prompt and "
        "response examples and use objective sft",
    )


SHAPE_WORDS = {
    "prompt_response": "prompts with responses",
    "chat": "conversations",
    "text": "plain text",
    "preference": "preference pairs (a better and a worse answer)",
    "feedback": "answers marked good or bad",
}


def _shape(record) -> str:
    return str((record.info or {}).get("shape") or "prompt_response")


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{max(seconds, 1):.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"
