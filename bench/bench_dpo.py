"""A DPO step: TuneDeck's whole path against the bare TRL ``DPOTrainer`` script, side by side in one run
(interleaved repetitions, each a fresh process, medians).

    python bench/bench_dpo.py [--model smollm2-135m] [--reps 3] [--steps 12] [--threads 1] [--write]
    python bench/bench_dpo.py --model tiny-offline --reps 1 --steps 4          # a quick check of the script

On a CPU that other work shares, use ``--threads 1`` (both sides): with one thread per core, every parallel region
of a step waits for whichever thread the other work has descheduled, and steps get 2-5x slower at random.

Both sides train on the sample preference set (``presets/samples/skylark-support-preferences.csv``, 301 pairs) with
the starter preset's settings (``presets/smollm2-135m.yaml``) and objective dpo, beta 0.1, learning rate 5e-5,
batch 4, max_length 256, no evaluation, no checkpoints, the preset's ``lora_layers`` (adapters on the top N blocks
only; ``--lora-layers 0`` puts them on every block, on both sides), bf16 where the CPU has bf16 instructions:

- ``tunedeck``: the dataset imported with ``import_dataset(..., shape="preference")`` into a temporary
  TUNEDECK_HOME, a job through ``Manager.submit`` → a fresh worker process (``python -m backend.training.worker``) →
  ``Recipe`` (conversational prompt/chosen/rejected columns, ``hf.preference_config``'s DPOConfig, ``hf.lora_config``);
  the numbers come from what the worker recorded (the trainer's ``train_runtime``, per-step log times, max RSS);
- ``trl``: a plain script as a user writes it: the same base model folder, the same rows from the CSV as a
  ``Dataset.from_dict`` of conversational columns, ``DPOConfig`` with the same settings and
  ``DPOTrainer(model, args, train_dataset, processing_class=tok, peft_config=LoraConfig(...))``, adapter saved.

Seconds per step: from the end of the first optimizer step to the end of the last, divided by the steps between
(the training loop without the first step's one-time set-up); CPU seconds per step over the same steps, sampled
from /proc (less affected by other work on the machine). Peak memory: each process's max RSS. Before the runs the
script checks that the imported dataset holds the CSV's rows and compares the two sides' settings (every field of
both DPOConfigs, and both LoraConfigs), printing what differs; after them, the report says whether both trained the
same number of parameters and logged the same losses.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

DATA = ROOT / "presets" / "samples" / "skylark-support-preferences.csv"
PRESET = "smollm2-135m"
SECTION = "## DPO: TuneDeck vs bare TRL DPOTrainer"
START, END = "<!-- dpo:start -->", "<!-- dpo:end -->"
# The linear layers inside a Llama block: what 'all-linear' means there, spelled out for layers_to_transform.
LLAMA_LINEARS = ["down_proj", "gate_proj", "k_proj", "o_proj", "q_proj", "up_proj", "v_proj"]


# -- the settings ----------------------------------------------------------------------------------------------------


def run_config(model: str, args) -> object:
    """The starter preset with the benchmark's changes: what TuneDeck runs."""
    from backend.jobs.presets import load_preset

    changes = dict(
        base_model=model,
        objective="dpo",
        beta=0.1,
        learning_rate=5e-5,
        batch_size=4,
        max_length=256,
        max_steps=args.steps,
        save_steps=0,  # no checkpoints (the bare script saves none either)
        eval_steps=0,
        score_examples=0,  # training only: the bare script does not score the run afterwards
        device="cpu",
        precision=args.precision,
    )
    if args.lora_layers is not None:
        changes["lora_layers"] = args.lora_layers
    return load_preset(PRESET).config.updated(**changes)


def bare_spec(cfg, model_dir: str, out: str) -> dict:
    """What the bare script is given: the same values, spelled out as a person would type them."""
    return {
        "model": model_dir,
        "data": str(DATA),
        "out": out,
        "system_prompt": cfg.system_prompt,
        "steps": cfg.max_steps,
        "batch_size": cfg.batch_size,
        "grad_accum": cfg.grad_accum,
        "learning_rate": cfg.learning_rate,
        "lr_scheduler": cfg.lr_scheduler,
        "warmup_ratio": cfg.warmup_ratio,
        "max_length": cfg.max_length,
        "beta": cfg.beta,
        "bf16": cfg.precision == "bf16",
        "optim": "adamw_torch_fused",  # what TuneDeck's optimizer: auto picks on a CPU (checked before the runs)
        "seed": cfg.seed,
        "logging_steps": cfg.logging_steps,
        "gradient_checkpointing": cfg.gradient_checkpointing,
        "lora_r": cfg.lora_r,
        "lora_alpha": cfg.lora_alpha,
        "lora_dropout": cfg.lora_dropout,
        "lora_layers": cfg.lora_layers,
    }


def bare_dpo_args(spec: dict) -> dict:
    """The bare script's DPOConfig arguments."""
    return dict(
        output_dir=spec["out"],
        max_steps=spec["steps"],
        per_device_train_batch_size=spec["batch_size"],
        gradient_accumulation_steps=spec["grad_accum"],
        learning_rate=spec["learning_rate"],
        lr_scheduler_type=spec["lr_scheduler"],
        warmup_steps=spec["warmup_ratio"],  # a float below 1 is a ratio of the steps in transformers 5
        max_length=spec["max_length"],
        beta=spec["beta"],
        bf16=spec["bf16"],
        use_cpu=True,
        optim=spec["optim"],
        seed=spec["seed"],
        # TRL turns activation checkpointing on by default; the preset turns it off
        activation_checkpointing=spec["gradient_checkpointing"],
        logging_steps=spec["logging_steps"],
        eval_strategy="no",
        save_strategy="no",
        report_to="none",
        disable_tqdm=True,
    )


def bare_lora(spec: dict, n_blocks: int):
    """The bare script's LoraConfig: adapters on the top ``lora_layers`` blocks (all when 0), all linear layers."""
    from peft import LoraConfig

    top = spec["lora_layers"]
    some = bool(top) and top < n_blocks
    return LoraConfig(
        r=spec["lora_r"],
        lora_alpha=spec["lora_alpha"],
        lora_dropout=spec["lora_dropout"],
        bias="none",
        task_type="CAUSAL_LM",
        target_modules=LLAMA_LINEARS if some else "all-linear",
        layers_to_transform=list(range(n_blocks - top, n_blocks)) if some else None,
    )


def compare_settings(cfg, spec: dict, model_dir: str) -> tuple[list[str], int]:
    """Every field of the two DPOConfigs and LoraConfigs that differs, as 'field: TuneDeck vs bare' lines; and the
    model's number of blocks."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM
    from trl import DPOConfig

    from backend.models.devices import detect
    from backend.training import hf
    from backend.training.recipe import _blocks

    caps = detect(cfg.device, cfg.precision)
    out = spec["out"]
    ours = hf.preference_config(cfg, caps, out).to_dict()
    bare = DPOConfig(**bare_dpo_args(spec)).to_dict()
    skip = {"output_dir", "logging_dir"}
    lines = [
        f"DPOConfig {k}: {ours.get(k)!r} vs {bare.get(k)!r}"
        for k in sorted(set(ours) | set(bare))
        if k not in skip and ours.get(k) != bare.get(k)
    ]
    with torch.device("meta"):
        skeleton = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(model_dir))
    n_blocks, names = _blocks(skeleton)
    ours_l = hf.lora_config(cfg, n_blocks, names).to_dict()
    bare_l = bare_lora(spec, n_blocks).to_dict()
    for d in (ours_l, bare_l):
        for k in ("target_modules", "layers_to_transform"):
            if isinstance(d.get(k), (set, list)):
                d[k] = sorted(d[k])
    lines += [
        f"LoraConfig {k}: {ours_l.get(k)!r} vs {bare_l.get(k)!r}"
        for k in sorted(set(ours_l) | set(bare_l))
        if ours_l.get(k) != bare_l.get(k)
    ]
    return lines, n_blocks


# -- CPU time of a process, sampled from outside -------------------------------------------------------------------


class CpuClock:
    """Samples a process's CPU time (all its threads, user + system, from /proc/<pid>/stat) every 50 ms, so that the
    CPU seconds between two moments of its run can be read afterwards. On a machine that other work shares, CPU
    time per step changes much less than wall time per step (with one thread per process)."""

    def __init__(self):
        import threading

        self.pid: int | None = None
        self.samples: list[tuple[float, float]] = []  # (time.time(), CPU seconds)
        self._tick = os.sysconf("SC_CLK_TCK")
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._done.wait(0.05):
            if self.pid is None:
                continue
            try:
                stat = Path(f"/proc/{self.pid}/stat").read_text()
            except OSError:
                continue
            fields = stat.rsplit(")", 1)[1].split()  # fields[0] is the state (field 3): utime is 14, stime 15
            self.samples.append((time.time(), (int(fields[11]) + int(fields[12])) / self._tick))

    def stop(self) -> list[tuple[float, float]]:
        self._done.set()
        self._thread.join()
        return self.samples


def cpu_at(samples: list, t: float) -> float:
    """The CPU seconds at time t, interpolated between the samples around it."""
    for (t0, c0), (t1, c1) in zip(samples, samples[1:], strict=False):
        if t0 <= t <= t1:
            return c0 + (c1 - c0) * (t - t0) / (t1 - t0) if t1 > t0 else c1
    return float("nan")


# -- the bare TRL script (a child process) ---------------------------------------------------------------------------


def bare_child(spec: dict) -> dict:
    """The bare TRL DPOTrainer script, in this (fresh) process; returns its measurements."""
    import resource

    import pandas as pd
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import DPOConfig, DPOTrainer

    tok = AutoTokenizer.from_pretrained(spec["model"])
    model = AutoModelForCausalLM.from_pretrained(
        spec["model"], dtype=torch.bfloat16 if spec["bf16"] else torch.float32
    )
    rows = pd.read_csv(spec["data"])
    system = [{"role": "system", "content": spec["system_prompt"]}] if spec["system_prompt"] else []
    dataset = Dataset.from_dict(
        {
            "prompt": [system + [{"role": "user", "content": p}] for p in rows["prompt"]],
            "chosen": [[{"role": "assistant", "content": t}] for t in rows["chosen"]],
            "rejected": [[{"role": "assistant", "content": t}] for t in rows["rejected"]],
        }
    )
    step_ends: list[float] = []

    class StepTimes(TrainerCallback):  # when each optimizer step's log arrives (as TuneDeck records it)
        def on_log(self, args, state, control, logs=None, **kw):
            if logs and "loss" in logs:
                step_ends.append(time.time())

    trainer = DPOTrainer(
        model=model,
        args=DPOConfig(**bare_dpo_args(spec)),
        train_dataset=dataset,
        processing_class=tok,
        peft_config=bare_lora(spec, model.config.num_hidden_layers),
        callbacks=[StepTimes()],
    )
    trainable, _ = trainer.model.get_nb_trainable_parameters()
    out = trainer.train()
    trainer.save_model(str(Path(spec["out"]) / "adapter"))
    return {
        "train_runtime": out.metrics["train_runtime"],
        "step_ends": step_ends,
        "losses": [h["loss"] for h in trainer.state.log_history if "loss" in h],
        "tokens": trainer._total_train_tokens,
        "trainable": trainable,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def run_bare(spec: dict) -> dict:
    clock = CpuClock()
    t0 = time.time()
    proc = subprocess.Popen(
        [sys.executable, __file__, "--child", json.dumps(spec)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    clock.pid = proc.pid
    stdout, stderr = proc.communicate(timeout=1800)
    wall = time.time() - t0  # process start to exit, as a person who runs the script sees it
    samples = clock.stop()
    if proc.returncode != 0:
        raise RuntimeError(f"the bare TRL script failed:\n{stderr[-3000:]}")
    out = json.loads(stdout.strip().splitlines()[-1])
    out["wall_s"] = wall
    out["cpu_samples"] = samples
    return out


# -- TuneDeck's path -------------------------------------------------------------------------------------------------


class TuneDeck:
    def __init__(self, home: Path):
        os.environ["TUNEDECK_HOME"] = str(home)
        from backend.core.store import Store
        from backend.jobs.manager import Manager
        from backend.settings import Paths

        self.paths = Paths.from_env(home)
        self.store = Store(self.paths.db)
        self.manager = Manager(self.store, self.paths)  # the app's scheduler settings (polls every 0.5 s)

    def add_dataset(self, name: str):
        from backend.data.datasets import import_dataset

        record, _ = import_dataset(
            self.store, self.paths, DATA, name=name, shape="preference", validation="none"
        )
        return record

    def run_job(self, dataset: str, config) -> dict:
        import sqlite3

        clock = CpuClock()
        t_press = time.time()
        job = self.manager.submit(dataset, config, preset="bench")
        while True:
            assert self.manager.try_acquire()
            self.manager.tick()
            job = self.store.get_job(job.id)
            if clock.pid is None and job.pid:
                clock.pid = job.pid  # the worker process, from the moment the scheduler started it
            if job.status.is_terminal:
                break
            time.sleep(
                self.manager.poll_s
            )  # as the app's scheduler: polling faster would take CPU from the job
        if job.status.value != "succeeded":
            raise RuntimeError(f"{job.id} {job.status.value}: {job.reason}")
        extra = job.result["extra"]
        with sqlite3.connect(self.paths.db) as db:  # each step's loss, and when the worker recorded it
            points = db.execute(
                "SELECT time, value FROM metrics WHERE job_id=? AND name='loss' ORDER BY step", (job.id,)
            ).fetchall()
        log = (self.paths.job_dir(job.id) / "worker.log").read_text(errors="replace")
        trainable = None
        for line in log.splitlines():
            if "trainable parameters: " in line:
                trainable = int(line.split("trainable parameters: ")[1].split()[0])
        return {
            "train_runtime": extra["train_runtime"],
            "step_ends": [t for t, _ in points],
            "losses": [v for _, v in points],
            "tokens": extra["train_tokens"],
            "trainable": trainable,
            "peak_rss_mb": extra["peak_rss_mb"],
            "wall_s": time.time() - t_press,
            "first_step_s": extra["first_step_at"] - t_press,
            "cpu_samples": clock.stop(),
        }


# -- measurements and the report -------------------------------------------------------------------------------------


def s_per_step(r: dict) -> float:
    """Seconds per optimizer step from the end of the first step to the end of the last."""
    ends = r["step_ends"]
    if len(ends) < 2:
        return float("nan")
    return (ends[-1] - ends[0]) / (len(ends) - 1)


def cpu_per_step(r: dict) -> float:
    """CPU seconds of the process (all its threads) per optimizer step, over the same steps as s_per_step."""
    ends = r["step_ends"]
    if len(ends) < 2:
        return float("nan")
    return (cpu_at(r["cpu_samples"], ends[-1]) - cpu_at(r["cpu_samples"], ends[0])) / (len(ends) - 1)


def med(values) -> float:
    return statistics.median(values)


def load1() -> float:
    """The 1-minute load average: how busy the machine's cores were (2 cores: above ~2 someone else is working)."""
    try:
        return os.getloadavg()[0]
    except OSError:
        return float("nan")


def _ram_gb() -> float:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    except (ValueError, OSError):
        return 0.0


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


LABELS = {"tunedeck": "TuneDeck job → worker → Recipe", "trl": "bare TRL DPOTrainer script"}


def report(results: dict, args, cfg, title: str, diffs: list[str], n_blocks: int) -> str:
    def row(variant: str) -> dict:
        rs = results[variant]
        return {
            "sps": med(s_per_step(r) for r in rs),
            "all": [round(s_per_step(r), 2) for r in rs],
            "cps": med(cpu_per_step(r) for r in rs),
            "cpu_all": [round(cpu_per_step(r), 2) for r in rs],
            "train": med(r["train_runtime"] for r in rs),
            "wall": med(r["wall_s"] for r in rs),
            "rss": med(r["peak_rss_mb"] for r in rs),
            "rss_all": [round(r["peak_rss_mb"]) for r in rs],
            "tps": med(r["tokens"] / r["train_runtime"] for r in rs if r["tokens"]),
            "loss": rs[0]["losses"][-1] if rs[0]["losses"] else float("nan"),
        }

    def paired(key) -> list[float]:
        """TuneDeck / bare of each repetition (two runs next to each other in time see similar load)."""
        return [key(b) / key(t) for t, b in zip(results["tunedeck"], results["trl"], strict=True)]

    ours, bare = row("tunedeck"), row("trl")
    layers = (
        f"adapters on the top {cfg.lora_layers} of {n_blocks} blocks (`lora_layers`; PEFT `layers_to_transform` "
        "on the bare side), the 7 linear layers of each"
        if cfg.lora_layers and cfg.lora_layers < n_blocks
        else f"adapters on all linear layers of all {n_blocks} blocks"
    )
    loads = [r["load1"] for rs in results.values() for r in rs]
    cmd = f"python bench/bench_dpo.py --model {args.model} --reps {args.reps} --steps {args.steps}"
    if args.lora_layers is not None:
        cmd += f" --lora-layers {args.lora_layers}"
    if args.threads:
        cmd += f" --threads {args.threads}"
    threads = (
        f"{args.threads} thread{'s' if args.threads > 1 else ''} per process (OMP_NUM_THREADS, both sides)"
        if args.threads
        else "the libraries' default threads (one per core)"
    )
    lines = [
        f"`{cmd}` on {time.strftime('%Y-%m-%d')}: {_cpu_name()}, {os.cpu_count()} CPU cores, {_ram_gb():.0f} GB RAM, "
        f"no GPU, Python {platform.python_version()}, {threads}. 1-minute load average at the start of the runs: "
        f"{min(loads):.1f} to {max(loads):.1f} (this benchmark's own runs keep it near "
        f"{args.threads or os.cpu_count()}; above that, other work shared the cores).",
        "",
        f"{title}, {cfg.precision}. The starter preset's settings with objective dpo: beta {cfg.beta}, learning rate "
        f"{cfg.learning_rate:g} ({cfg.lr_scheduler}, warm-up ratio {cfg.warmup_ratio}), batch {cfg.batch_size} pairs, "
        f"{args.steps} steps, max_length {cfg.max_length}, LoRA r {cfg.lora_r}, alpha {cfg.lora_alpha}, dropout "
        f"{cfg.lora_dropout}, {layers}, fused AdamW, seed {cfg.seed}, a log every step, no evaluation, no "
        "checkpoints; the reference is the base with the adapter switched off on both sides. Data: "
        "`presets/samples/skylark-support-preferences.csv` (301 pairs, no system prompt). Each run is a fresh "
        f"process; medians of {args.reps} interleaved repetitions (order shuffled per repetition). s/step = from "
        "the end of the first optimizer step to the end of the last, over the steps between (wall clock, as each "
        "side's trainer logged them); CPU s/step = the process's CPU time (all threads) over the same steps, sampled "
        "from /proc every 50 ms, which other work on the cores changes much less; wall = from the command "
        "(TuneDeck: `Manager.submit`) to the process's end, imports, model load and tokenization included "
        "(TuneDeck's also includes the scheduler's 0.5 s polling).",
        "",
        "| path | s/step, steps 2..N | each run | steps/s | CPU s/step | each run | train_runtime (s) | tokens/s | "
        "wall (s) | peak RSS (MB) | each run | final loss |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for variant, r in (("tunedeck", ours), ("trl", bare)):
        lines.append(
            f"| {LABELS[variant]} | {r['sps']:.2f} | {r['all']} | {1 / r['sps']:.3f} | {r['cps']:.2f} | "
            f"{r['cpu_all']} | {r['train']:.1f} | {r['tps']:,.0f} | {r['wall']:.1f} | {r['rss']:.0f} | "
            f"{r['rss_all']} | {r['loss']:.4f} |"
        )
    speed, cpu_speed = bare["sps"] / ours["sps"], bare["cps"] / ours["cps"]
    mem = ours["rss"] / bare["rss"]

    def each(values: list[float]) -> str:
        return "per repetition " + ", ".join(f"{v:.3f}" for v in values)

    def verdict(ok: bool) -> str:
        return "yes" if ok else "no"

    lines += [
        "",
        "| TuneDeck / bare TRL | measured (median / median) | in each repetition | target | met |",
        "|---|---|---|---|---|",
        f"| speed in the loop: steps/s, steps 2..N | {speed:.3f} × | {each(paired(s_per_step))} | ≥ 0.97 × | "
        f"{verdict(speed >= 0.97)} |",
        f"| speed by CPU time per step (robust to other work) | {cpu_speed:.3f} × | {each(paired(cpu_per_step))} | "
        f"≥ 0.97 × | {verdict(cpu_speed >= 0.97)} |",
        f"| speed over the whole train_runtime (first step included) | {bare['train'] / ours['train']:.3f} × | "
        f"{each(paired(lambda r: r['train_runtime']))} | (reference) | |",
        f"| peak RSS | {mem:.3f} × | {each([1 / v for v in paired(lambda r: r['peak_rss_mb'])])} | ≤ 1.0 × | "
        f"{verdict(mem <= 1.0)} ({ours['rss'] - bare['rss']:+.0f} MB) |",
        f"| whole process, command to exit (time) | {ours['wall'] / bare['wall']:.3f} × | "
        f"{each([1 / v for v in paired(lambda r: r['wall_s'])])} | (reference) | |",
    ]
    same_params = {r["trainable"] for rs in results.values() for r in rs}
    all_losses = [r["losses"] for rs in results.values() for r in rs]
    worst = max(
        (abs(a - b) for losses in all_losses for a, b in zip(losses, all_losses[0], strict=False)),
        default=float("nan"),
    )
    agree = "are identical" if worst == 0 else f"agree to within {worst:.2g}"
    lines += [
        "",
        f"Same work on both sides: trainable parameters {' / '.join(str(p) for p in sorted(same_params, key=str))} "
        f"({'the same' if len(same_params) == 1 else 'DIFFERENT'}); the per-step losses of all {len(all_losses)} "
        f"runs {agree} ({', '.join(f'{v:.4f}' for v in all_losses[0])}). Settings that differ between TuneDeck's "
        "DPOConfig / LoraConfig and the bare script's, field by field (TuneDeck vs bare): "
        + ("; ".join(f"`{d}`" for d in diffs) if diffs else "none")
        + " (none of them acts in a run without evaluation or checkpoints: data_seed 42 = the seed the sampler "
        "uses anyway, the first step is logged either way with a log every step, max_steps overrides epochs).",
    ]
    return "\n".join(lines)


DPO_NOTES = """### How to read it

- **Same work on both sides**: the same 301 rows (the stored dataset equals the CSV row for row), the same batches
  (same seed and sampler), the same trainable parameters and identical losses at every step; the DPOConfig fields
  that differ only act with evaluation or checkpoints. `lora_layers` is the preset's 15 on both sides (the bare
  script spells it as PEFT's `layers_to_transform` over the 7 linear layers of a block, which is what
  `hf.lora_config` builds); `--lora-layers 0` compares adapters on every block instead.
- **Speed**: TuneDeck runs TRL's own DPOTrainer on the same batches; what it adds per step (`StoreCallback`:
  progress, metrics queued to a writer thread that commits them to SQLite, the cancel check, a log line) is within
  the noise (each repetition 0.95-1.05 ×, by wall clock and by CPU time alike; medians 1.01 × on a quiet machine on
  2026-12-03 at night; 0.97 × the next morning, when both sides' steps were 30 % slower than the night before and
  the first repetition, 0.83 ×, ran on a machine still settling).
- **Peak memory**: not met. The night run: 1.006 × (median +13 MB of 2.4 GB; +17 MB under load with one thread
  each). The morning run: 1.029 × (+69 MB), with TuneDeck's peak where it was (2433 vs 2427 MB) and the bare
  script's lower (2364 vs 2413 MB). Each side's own peak moves by up to 50 MB between identical runs, so the gap is
  inside the noise of one run and outside it only as a median. Measured by phase (RSS after each set-up step, 12-step runs): equal after
  loading the model (797 vs 794 MB), then +11 MB after the data (811 vs 800 MB) and still +11 MB once the trainer is
  built; the DPO steps then add the same on both sides. The fixed +11 MB is reading the stored dataset: Arrow's
  Parquet reader costs ~10 MB of RSS the first time it runs in a process (measured alone: `pq.read_table` of the
  301 rows +10 MB single-threaded, not given back by `release_unused`), where the bare script's `pd.read_csv` costs
  ~1 MB; pydantic, sqlite3 and TuneDeck's own modules add ~3 MB. Tried and dropped: reading with pyarrow instead of
  pandas (the reader is the cost, not pandas; kept, it is simpler) and `malloc_trim` before training (+13 MB
  either way). What would close most of it: reading the preference rows from Arrow IPC instead of Parquet
  (measured alone in a process with datasets and TRL imported: `pq.read_table` +10-12 MB, the same with Arrow's
  system memory pool +7-8 MB, a feather copy of the same table +4 MB); not done, as it is a second stored format.
- **Threads on a shared CPU**: with the libraries' default threads (2 per process on 2 cores) and other work on
  the cores (load 4-6: another training job, test runs, a browser), one DPO step took 16-41 s instead of ~6.5 s on
  both sides: each parallel region waits for a descheduled thread. One thread per process (`--threads 1`) took
  8 s per step under the same load, so the comparison ran that way. Neither side sets a thread count, so this is
  not a difference between them; it is what a TuneDeck run on a busy CPU meets too.
"""


def write_section(body: str) -> None:
    """Put the section into bench/RESULTS.md in place: between its markers if it is there, else at the end (a fresh
    read right before the write, so that other sections edited meanwhile are kept as they are)."""
    path = ROOT / "bench" / "RESULTS.md"
    block = f"{START}\n{body}\n\n{DPO_NOTES}{END}"
    text = path.read_text()
    a, b = text.find(START), text.find(END)
    if a >= 0 and b > a:
        text = text[:a] + block + text[b + len(END) :]
    else:
        text = text.rstrip("\n") + f"\n\n{SECTION}\n\n{block}\n"
    path.write_text(text)


def same_rows(stored: str) -> None:
    """The dataset TuneDeck stored holds the CSV's rows, in order: what the bare script reads."""
    import pandas as pd

    frame, csv = pd.read_parquet(stored), pd.read_csv(DATA)
    prompts = [json.loads(p) for p in frame["prompt"]]
    if (
        prompts != [[{"role": "user", "content": p}] for p in csv["prompt"]]
        or list(frame["chosen"]) != list(csv["chosen"])
        or list(frame["rejected"]) != list(csv["rejected"])
    ):
        raise RuntimeError("the imported dataset differs from the CSV the bare script reads")


# -- main ------------------------------------------------------------------------------------------------------------


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", choices=("smollm2-135m", "tiny-offline"), default="smollm2-135m")
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--steps", type=int, default=12)
    p.add_argument(
        "--lora-layers", type=int, default=None, help="override the preset's lora_layers (0: every block)"
    )
    p.add_argument("--precision", choices=("auto", "bf16", "fp32"), default="auto")
    p.add_argument(
        "--threads",
        type=int,
        default=0,
        help="OMP_NUM_THREADS for both sides' processes (0: the libraries' default, one per core). On a machine "
        "that other work shares, 1 keeps each step from waiting for a descheduled thread",
    )
    p.add_argument("--write", action="store_true", help="write the results into bench/RESULTS.md")
    p.add_argument("--child", metavar="SPEC", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        print(json.dumps(bare_child(json.loads(args.child))))
        return 0
    if args.steps < 3:
        p.error("--steps must be at least 3 (the first step is left out of s/step)")

    from backend.models import registry as models
    from backend.models.devices import cpu_has_bf16

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    # A fresh worker per job, like the bare script's fresh process.
    os.environ["TUNEDECK_STANDBY_WORKER"] = "0"
    if args.threads:  # both sides' processes inherit it (the worker gets this environment from the manager)
        os.environ["OMP_NUM_THREADS"] = str(args.threads)
    if args.precision == "auto":
        args.precision = "bf16" if cpu_has_bf16() else "fp32"
    work = Path(tempfile.mkdtemp(prefix="tunedeck-bench-dpo-"))
    td = TuneDeck(work / "home")
    model_dir = models.materialize(models.check_available(args.model, td.paths))
    title = (
        "SmolLM2-135M-Instruct (the starter model's copy, 30 blocks)"
        if args.model == "smollm2-135m"
        else "tiny-offline (a small random Llama built on this machine)"
    )
    cfg = run_config(args.model, args)
    spec = bare_spec(cfg, model_dir, str(work / "out"))
    print(f"model: {title} ({model_dir}), {args.precision} on CPU; work dir {work}", flush=True)
    diffs, n_blocks = compare_settings(cfg, spec, model_dir)
    print("settings that differ (TuneDeck vs bare):" + "".join(f"\n  {d}" for d in diffs), flush=True)
    same_rows(td.add_dataset("prefs").path)
    results: dict[str, list[dict]] = {}
    for rep in range(args.reps):
        order = ["tunedeck", "trl"]
        random.Random(rep).shuffle(order)
        for variant in order:
            load = load1()
            r = td.run_job("prefs", cfg) if variant == "tunedeck" else run_bare(spec)
            r["load1"] = load
            results.setdefault(variant, []).append(r)
            print(
                f"rep {rep + 1} {variant:<8} {s_per_step(r):6.2f} s/step (steps 2..N), {cpu_per_step(r):6.2f} CPU s/step  "
                f"train_runtime "
                f"{r['train_runtime']:.1f} s  wall {r['wall_s']:.1f} s  peak RSS {r['peak_rss_mb']:.0f} MB  "
                f"trainable {r['trainable']}  losses {[round(v, 4) for v in r['losses']]}  load before {load:.1f}",
                flush=True,
            )
    table = report(results, args, cfg, title, diffs, n_blocks)
    print(table)
    if args.write:
        write_section(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
