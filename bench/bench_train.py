"""Training throughput, memory and time to the first step: TuneDeck's whole path against what a user would
otherwise run, side by side in one run (interleaved repetitions, medians).

    python bench/bench_train.py [--reps 3] [--steps 30] [--ttfs-rows 10000] [--write]
    python bench/bench_train.py --model smollm2-135m [--reps 3] [--steps 12] [--write]

``--model smollm2-135m`` runs the same comparison on the starter model (a real 135M-parameter model, where per-token
work outweighs per-step overhead), in bf16 where the CPU has bf16 instructions (as its preset trains), without the
time-to-first-step part; it writes its own section of bench/RESULTS.md.

Variants, all on the same model, data, LoRA settings (r 16, alpha 32, dropout 0, all linear layers), batch 8,
steps and learning-rate schedule, fp32 on the CPU, each in a fresh interpreter:

- ``tunedeck``: a job through ``Manager.submit`` → a worker process (``python -m backend.training.worker``) → our recipe;
  the numbers come from what the worker recorded (the trainer's ``train_runtime``, TRL's token count, max RSS);
- ``trl``: a bare TRL ``SFTTrainer`` script (TRL's own tokenization and default padded collator);
- ``hf-padded``: a plain ``transformers.Trainer`` with PEFT, padding each batch to its longest example.

Tokens per second count *real* tokens (prompt and response, no padding) per second of the trainer's own clock.
Datasets: *flat* (every example about the same length) and *skewed* (instruction-style: most short, a few long).
Time to the first step: from the moment Train is pressed (``Manager.submit``) to the first optimizer step the
worker records, on a 10,000-row dataset: a fresh worker process vs the app's warm standby worker, with the
tokenized dataset built on the spot (cold) or already cached.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

# initializer_range 0.02 (the usual): tiny-offline's 0.3 makes a random model's gradients so small that fp32 CPU
# arithmetic falls into denormal numbers, which are 10x slower and would measure the CPU, not the code.
MODEL_SHAPE = {
    "hidden_size": 256,
    "intermediate_size": 688,
    "num_hidden_layers": 4,
    "num_attention_heads": 4,
    "num_key_value_heads": 4,
    "initializer_range": 0.02,
}
WORDS = (
    "the quick brown fox jumps over lazy dog capital of france is paris question answer prompt response "
    "please write a short reply how are you today fine thank help me with this task here is do it translate "
    "sentence into english summarize text in one line classify review as positive or negative weather sunny "
    "warm meeting starts at nine morning send report by friday order package arrive soon sorry delay"
).split()


# -- data ----------------------------------------------------------------------------------------------------------


def words(rng: random.Random, n: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n)).capitalize() + "."


def write_csv(path: Path, rows: int, kind: str, seed: int = 0) -> Path:
    import csv

    rng = random.Random(seed)
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["question", "answer"])
        for _ in range(rows):
            if kind == "flat":
                q, a = 16, 40
            else:  # instruction-style: lengths spread over two orders of magnitude, most of them short
                q = rng.randint(4, 16)
                a = int(min(300, max(3, rng.lognormvariate(math.log(18), 1.1))))
            w.writerow([words(rng, q) + "?", words(rng, a)])
    return path


# -- children: the baselines -----------------------------------------------------------------------------------------


def child(kind: str, spec: dict) -> dict:
    """Run one baseline in this (fresh) process; return its measurements."""
    import resource

    import pandas as pd
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if kind.endswith(
        "+ftz"
    ):  # the same script, with denormal floats flushed to zero as TuneDeck's worker does
        torch.set_flush_denormal(True)
        kind = kind.removesuffix("+ftz")
    torch.manual_seed(0)
    bf16 = spec.get("precision") == "bf16"
    tok = AutoTokenizer.from_pretrained(spec["model"])
    model = AutoModelForCausalLM.from_pretrained(
        spec["model"], dtype=torch.bfloat16 if bf16 else torch.float32
    )
    frame = pd.read_parquet(spec["data"])
    lora = LoraConfig(
        r=16, lora_alpha=32, lora_dropout=0.0, target_modules="all-linear", bias="none", task_type="CAUSAL_LM"
    )
    common = dict(
        output_dir=spec["out"],
        max_steps=spec["steps"],
        per_device_train_batch_size=8,
        gradient_accumulation_steps=1,
        learning_rate=2e-4,
        lr_scheduler_type="constant",
        warmup_steps=0,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        disable_tqdm=True,
        use_cpu=True,
        bf16=bf16,
        seed=42,
        data_seed=42,
        dataloader_num_workers=0,
    )
    first_step: list[float] = []
    step_ends: list[tuple[float, int]] = []  # (time, real tokens so far) at each optimizer step's end
    counts = {"real": 0, "padded": 0}
    from transformers import TrainerCallback

    class FirstStep(TrainerCallback):
        def on_step_end(self, args, state, control, **kw):
            if not first_step:
                first_step.append(time.time())
            seen = trainer._total_train_tokens if kind == "trl" else counts["real"]
            step_ends.append((time.time(), seen))

    if kind == "trl":
        from trl import SFTConfig, SFTTrainer

        from backend.data.shapes import to_conversations

        ds = Dataset.from_dict(to_conversations(frame))
        trainer = SFTTrainer(
            model=model,
            args=SFTConfig(
                **common, max_length=512, activation_checkpointing=False, completion_only_loss=True
            ),
            train_dataset=ds,
            processing_class=tok,
            peft_config=lora,
            callbacks=[FirstStep()],
        )
        out = trainer.train()
        tokens, padded = trainer._total_train_tokens, None
    else:
        from peft import get_peft_model
        from transformers import Trainer, TrainingArguments

        from backend.training import prepare

        ids, labels, _ = prepare.tokenize(prepare.to_columns(frame, "prompt_response"), tok)
        ids, labels, _, _ = prepare.truncate(ids, labels, 512)
        ds = Dataset.from_dict({"input_ids": ids, "labels": labels})

        def collate(batch):
            longest = max(len(b["input_ids"]) for b in batch)
            pad = tok.pad_token_id
            input_ids = torch.tensor(
                [b["input_ids"] + [pad] * (longest - len(b["input_ids"])) for b in batch]
            )
            lab = torch.tensor([b["labels"] + [-100] * (longest - len(b["labels"])) for b in batch])
            mask = torch.tensor(
                [[1] * len(b["input_ids"]) + [0] * (longest - len(b["input_ids"])) for b in batch]
            )
            counts["real"] += int(mask.sum())
            counts["padded"] += mask.numel()
            return {"input_ids": input_ids, "labels": lab, "attention_mask": mask}

        model = get_peft_model(model, lora)
        trainer = Trainer(
            model=model,
            args=TrainingArguments(**common, remove_unused_columns=False),
            train_dataset=ds,
            data_collator=collate,
            callbacks=[FirstStep()],
        )
        out = trainer.train()
        tokens, padded = counts["real"], counts["padded"]
    return {
        "train_runtime": out.metrics["train_runtime"],
        "step_rates": step_rates(step_ends),
        "tokens": tokens,
        "padded_tokens": padded,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "first_step_at": first_step[0] if first_step else None,
        "final_loss": trainer.state.log_history[-2].get("loss")
        if len(trainer.state.log_history) > 1
        else None,
    }


def step_rates(ends: list[tuple[float, float]]) -> list[float]:
    """[real tokens per second from the end of the first step to the end of the last]: the training loop itself,
    without the first step's one-time set-up (kept a list for the report's medians)."""
    if len(ends) < 2 or ends[-1][0] <= ends[0][0]:
        return [float("nan")]
    return [(ends[-1][1] - ends[0][1]) / (ends[-1][0] - ends[0][0])]


def run_child(kind: str, spec: dict) -> dict:
    t0 = time.time()
    res = subprocess.run(
        [sys.executable, __file__, "--child", kind, json.dumps(spec)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        timeout=1800,
    )
    if res.returncode != 0:
        raise RuntimeError(f"{kind} failed:\n{res.stderr[-3000:]}")
    out = json.loads(res.stdout.strip().splitlines()[-1])
    out["wall_s"] = time.time() - t0
    # From the process start, as a person who runs the script sees it (imports and tokenization included).
    out["first_step_s"] = out.pop("first_step_at") - t0 if out.get("first_step_at") else None
    return out


# -- TuneDeck's path -------------------------------------------------------------------------------------------------


class Bench:
    def __init__(self, home: Path):
        os.environ["TUNEDECK_HOME"] = str(home)
        from backend.core.store import Store
        from backend.jobs.manager import Manager
        from backend.settings import Paths

        self.paths = Paths.from_env(home)
        self.store = Store(self.paths.db)
        self.manager = Manager(self.store, self.paths)  # the app's scheduler settings (polls every 0.5 s)

    def add_dataset(self, csv: Path, name: str):
        from backend.data.datasets import import_dataset

        record, _ = import_dataset(self.store, self.paths, csv, name=name, validation="none")
        return record

    def config(self, model: str, steps: int, **extra):
        from backend.jobs.config import RunConfig

        return RunConfig.parse(
            {
                "base_model": model,
                "method": "lora",
                "max_steps": steps,
                "learning_rate": 2e-4,
                "lr_scheduler": "constant",
                "warmup_ratio": 0.0,
                "lora_r": 16,
                "lora_alpha": 32,
                "lora_dropout": 0.0,
                "batch_size": 8,
                "grad_accum": 1,
                "max_length": 512,
                "logging_steps": 1,
                "save_steps": 0,
                "score_examples": 0,  # training only: the baselines do not score the run afterwards
                "device": "cpu",
                **extra,
            }
        )

    def run_job(self, dataset: str, config, *, scheduler_thread: bool = False) -> dict:
        t_press = time.time()
        job = self.manager.submit(dataset, config, preset="bench")
        submit_s = time.time() - t_press
        while True:
            if not scheduler_thread:
                assert self.manager.try_acquire()
                self.manager.tick()
            job = self.store.get_job(job.id)
            if job.status.is_terminal:
                break
            time.sleep(
                self.manager.poll_s
            )  # as the app's scheduler: polling faster would take CPU from the job
        if job.status.value != "succeeded":
            raise RuntimeError(f"{job.id} {job.status.value}: {job.reason}")
        extra = job.result["extra"]
        import sqlite3

        with sqlite3.connect(
            self.paths.db
        ) as db:  # when each step's point was recorded, and the tokens so far
            ends = db.execute(
                "SELECT time, value FROM metrics WHERE job_id=? AND name='num_tokens' ORDER BY step",
                (job.id,),
            ).fetchall()
        return {
            "step_rates": step_rates(ends),
            "train_runtime": extra["train_runtime"],
            "tokens": extra["train_tokens"],
            "peak_rss_mb": extra["peak_rss_mb"],
            "wall_s": time.time() - t_press,
            "first_step_s": extra["first_step_at"] - t_press,
            "submit_s": submit_s,
            "batching": extra["batching"],
            "cache_hit": extra["dataset"]["cache_hit"],
            "tokenize_s": extra["dataset"]["seconds"],
            "final_loss": job.result["final_loss"],
            "pid": job.pid,
        }


def tps(r: dict) -> float:
    return r["tokens"] / r["train_runtime"]


def step_tps(r: dict) -> float:
    return med(r["step_rates"])


def med(values) -> float:
    return statistics.median(values)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--rows", type=int, default=512, help="rows of the throughput datasets")
    p.add_argument("--ttfs-rows", type=int, default=10000)
    p.add_argument("--write", action="store_true", help="write the results into bench/RESULTS.md")
    p.add_argument("--model", choices=("bench-llama", "smollm2-135m"), default="bench-llama")
    p.add_argument("--child", nargs=2, metavar=("KIND", "SPEC"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        print(json.dumps(child(args.child[0], json.loads(args.child[1]))))
        return 0
    if args.model == "smollm2-135m":
        return starter_main(args)

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    os.environ["TUNEDECK_STANDBY_WORKER"] = "0"  # throughput runs: a fresh worker each, like the baselines
    work = Path(tempfile.mkdtemp(prefix="tunedeck-bench-"))
    bench = Bench(work / "home")
    from backend.models.tiny import build

    model = str(build(work / "bench-model", shape=MODEL_SHAPE))
    n_params = _params(model)
    print(
        f"model: random Llama, hidden 256, 4 layers, {n_params / 1e6:.1f} M parameters, fp32 on CPU; work dir {work}"
    )

    datasets = {}
    for kind in ("flat", "skewed"):
        rec = bench.add_dataset(write_csv(work / f"{kind}.csv", args.rows, kind, seed=1), kind)
        datasets[kind] = rec
    results: dict[tuple[str, str], list[dict]] = {}
    for rep in range(args.reps):
        for kind, rec in datasets.items():
            order = ["tunedeck", "trl", "trl+ftz", "hf-padded", "hf-padded+ftz"]
            if kind == "skewed":
                order.append("tunedeck-padding-free")
            random.Random(rep).shuffle(order)  # interleaved, in a different order each repetition
            for variant in order:
                spec = {"model": model, "data": rec.path, "steps": args.steps, "out": str(work / "out")}
                if variant.startswith("tunedeck"):
                    extra = {"batching": "padding_free"} if variant.endswith("padding-free") else {}
                    r = bench.run_job(kind, bench.config(model, args.steps, **extra))
                else:
                    r = run_child(variant, spec)
                results.setdefault((kind, variant), []).append(r)
                print(
                    f"rep {rep + 1} {kind:<6} {variant:<21} {step_tps(r):8.0f} real tokens/s (steps 2..N), "
                    f"{tps(r):8.0f} over the run  train {r['train_runtime']:.1f} s"
                    f"  wall {r['wall_s']:.1f} s  peak RSS {r['peak_rss_mb']:.0f} MB"
                    + (f"  ({r['batching']})" if "batching" in r else "")
                    + (
                        f"  padding {1 - r['tokens'] / r['padded_tokens']:.0%}"
                        if r.get("padded_tokens")
                        else ""
                    ),
                    flush=True,
                )

    ttfs = time_to_first_step(bench, work, model, args)
    table = report(results, ttfs, args, n_params)
    print(table)
    if args.write:
        write_results(table)
    return 0


def starter_main(args) -> int:
    """The starter model: TuneDeck against the bare TRL script (flat and skewed data) and a padded Trainer (skewed),
    same model, data, LoRA, batch, steps and precision; fresh processes, interleaved repetitions."""
    from backend.models import registry as models
    from backend.models.devices import cpu_has_bf16

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    os.environ["TUNEDECK_STANDBY_WORKER"] = "0"
    work = Path(tempfile.mkdtemp(prefix="tunedeck-bench-starter-"))
    bench = Bench(work / "home")
    model = models.materialize(models.resolve(models.STARTER.name, bench.paths))
    precision = "bf16" if cpu_has_bf16() else "fp32"
    print(f"model: SmolLM2-135M-Instruct ({model}), {precision} on CPU; work dir {work}", flush=True)
    datasets = {
        kind: bench.add_dataset(write_csv(work / f"{kind}.csv", args.rows, kind, seed=1), kind)
        for kind in ("flat", "skewed")
    }
    results: dict[tuple[str, str], list[dict]] = {}
    for rep in range(args.reps):
        for kind, rec in datasets.items():
            order = ["tunedeck", "trl"] + (["hf-padded"] if kind == "skewed" else [])
            random.Random(rep).shuffle(order)
            for variant in order:
                if variant == "tunedeck":
                    r = bench.run_job(kind, bench.config(model, args.steps, precision=precision))
                else:
                    spec = {
                        "model": model,
                        "data": rec.path,
                        "steps": args.steps,
                        "out": str(work / "out"),
                        "precision": precision,
                    }
                    r = run_child(variant, spec)
                results.setdefault((kind, variant), []).append(r)
                print(
                    f"rep {rep + 1} {kind:<6} {variant:<9} {step_tps(r):7.0f} real tokens/s (steps 2..N) "
                    f"train {r['train_runtime']:.1f} s wall {r['wall_s']:.1f} s peak RSS {r['peak_rss_mb']:.0f} MB",
                    flush=True,
                )
    table = starter_report(results, args, precision)
    print(table)
    if args.write:
        write_section("## Training: the starter model (SmolLM2-135M)", table)
    return 0


def starter_report(results: dict, args, precision: str) -> str:
    def row(kind: str, variant: str) -> dict:
        rs = results[(kind, variant)]
        return {
            "tps": med(step_tps(r) for r in rs),
            "wall": med(r["wall_s"] for r in rs),
            "train": med(r["train_runtime"] for r in rs),
            "rss": med(r["peak_rss_mb"] for r in rs),
            "all": [round(step_tps(r)) for r in rs],
            "batching": rs[0].get("batching", ""),
        }

    lines = [
        f"`python bench/bench_train.py --model smollm2-135m --reps {args.reps} --steps {args.steps} --rows "
        f"{args.rows}` on {time.strftime('%Y-%m-%d')}: {os.cpu_count()} CPU cores, {_ram_gb():.0f} GB RAM, no GPU. "
        f"SmolLM2-135M-Instruct (the starter model's copy), {precision}, LoRA r 16, alpha 32, dropout 0, all linear "
        f"layers of all blocks, batch 8, {args.steps} steps, max_length 512; {args.rows}-row *flat* and *skewed* "
        f"datasets as above. Medians of {args.reps} interleaved repetitions, each a fresh process. Wall = from the "
        "command (TuneDeck: `Manager.submit`) to the process's end, start-up and tokenization included.",
        "",
        "| data | path | real tokens/s, steps 2..N | each run | train (s) | wall (s) | peak RSS (MB) | notes |",
        "|---|---|---|---|---|---|---|---|",
    ]
    labels = {
        "tunedeck": "TuneDeck",
        "trl": "bare TRL SFTTrainer",
        "hf-padded": "padded transformers.Trainer",
    }
    for kind in ("flat", "skewed"):
        for variant, label in labels.items():
            if (kind, variant) in results:
                r = row(kind, variant)
                lines.append(
                    f"| {kind} | {label} | {r['tps']:,.0f} | {r['all']} | {r['train']:.1f} | {r['wall']:.1f} | "
                    f"{r['rss']:.0f} | {('batching: ' + r['batching']) if r['batching'] else ''} |"
                )
    ours, trl = row("flat", "tunedeck"), row("flat", "trl")
    skew, padded = row("skewed", "tunedeck"), row("skewed", "hf-padded")

    def check(label: str, ratio: float, need: float, le: bool = False) -> str:
        met = ratio <= need if le else ratio >= need
        return f"| {label} | {ratio:.2f} × | {'yes' if met else 'no'} |"

    lines += [
        "",
        "| target | measured | met |",
        "|---|---|---|",
        check("flat: in-loop real tokens/s ≥ 0.97 × bare TRL", ours["tps"] / trl["tps"], 0.97),
        check(
            "flat: whole process, command to exit ≤ 1.10 × bare TRL",
            ours["wall"] / trl["wall"],
            1.10,
            le=True,
        ),
        check("flat: peak RSS ≤ 1.0 × bare TRL", ours["rss"] / trl["rss"], 1.0, le=True),
        check(
            "skewed: real tokens/s vs padded transformers.Trainer ≥ 1.5 ×", skew["tps"] / padded["tps"], 1.5
        ),
        check(
            "skewed: real tokens/s vs bare TRL (for reference)",
            skew["tps"] / row("skewed", "trl")["tps"],
            0.0,
        ),
    ]
    return "\n".join(lines)


def write_section(head: str, table: str) -> None:
    path = ROOT / "bench" / "RESULTS.md"
    text = path.read_text() if path.exists() else "# Benchmark results\n"
    start = text.find(head + "\n")
    if start >= 0:
        end = text.find("\n## ", start + 1)
        text = text[:start] + text[end + 1 :] if end >= 0 else text[:start]
    path.write_text(text.rstrip() + f"\n\n{head}\n\n{table}\n")


def _params(model: str) -> int:
    cfg = json.loads((Path(model) / "config.json").read_text())
    h, i, n, v = cfg["hidden_size"], cfg["intermediate_size"], cfg["num_hidden_layers"], cfg["vocab_size"]
    return n * (4 * h * h + 3 * h * i + 2 * h) + v * h + h


def time_to_first_step(bench: Bench, work: Path, model: str, args) -> dict:
    """Train pressed → first optimizer step, on a 10k-row dataset: fresh worker vs warm standby, cold vs cached."""
    out: dict[str, list[float]] = {}
    csv = write_csv(work / "ttfs.csv", args.ttfs_rows, "skewed", seed=7)
    config = bench.config(model, 3, max_length=512)
    for rep in range(args.reps):
        # Fresh worker process (what the CLI's background scheduler does).
        os.environ["TUNEDECK_STANDBY_WORKER"] = "0"
        name = f"ttfs-fresh-{rep}"
        bench.add_dataset(csv, name)
        cold = bench.run_job(name, config)
        cached = bench.run_job(name, config)
        assert not cold["cache_hit"] and cached["cache_hit"]
        out.setdefault("fresh worker, dataset tokenized now", []).append(cold["first_step_s"])
        out.setdefault("fresh worker, tokenized dataset cached", []).append(cached["first_step_s"])
        # The web app's scheduler: a standby worker has already imported torch, transformers, TRL and PEFT.
        os.environ["TUNEDECK_STANDBY_WORKER"] = "1"
        stop = threading.Event()
        from backend.jobs.launch import default_worker_command

        bench.manager.worker_command = default_worker_command
        thread = threading.Thread(target=bench.manager.run, args=(stop,), daemon=True)
        thread.start()
        try:
            name = f"ttfs-warm-{rep}"
            bench.add_dataset(csv, name)
            for label in (
                "standby worker, dataset tokenized now",
                "standby worker, tokenized dataset cached",
            ):
                _wait_standby(bench)
                r = bench.run_job(name, config, scheduler_thread=True)
                out.setdefault(label, []).append(r["first_step_s"])
                out.setdefault("submit checks (UI process)", []).append(r["submit_s"])
        finally:
            stop.set()
            thread.join(timeout=60)
        # The bare TRL script on the same 10k rows: process start to its first step (it tokenizes first).
        trl = run_child(
            "trl",
            {
                "model": model,
                "data": bench.store.get_dataset(name).path,
                "steps": 3,
                "out": str(work / "out"),
            },
        )
        out.setdefault("bare TRL script (process start → first step)", []).append(trl["first_step_s"])
        print(
            f"rep {rep + 1} time to first step: " + ", ".join(f"{k}: {v[-1]:.2f} s" for k, v in out.items()),
            flush=True,
        )
    return out


def _wait_standby(bench: Bench, timeout: float = 120) -> None:
    """Until the scheduler's standby worker has done its imports (it prints "ready <pid>"), as in an app that has
    been open a few seconds."""
    log = bench.paths.logs / "standby-worker.log"
    deadline = time.monotonic() + timeout
    while True:
        proc = bench.manager._standby
        if proc is not None and log.is_file() and f"ready {proc.pid}" in log.read_text().splitlines():
            return
        if time.monotonic() > deadline:
            raise RuntimeError("the standby worker did not get ready")
        time.sleep(0.1)


def report(results: dict, ttfs: dict, args, n_params: int) -> str:
    def row(kind: str, variant: str) -> dict:
        rs = results[(kind, variant)]
        return {
            "tps": med(step_tps(r) for r in rs),
            "run_tps": med(tps(r) for r in rs),
            "train": med(r["train_runtime"] for r in rs),
            "wall": med(r["wall_s"] for r in rs),
            "rss": med(r["peak_rss_mb"] for r in rs),
            "loss": med(r["final_loss"] for r in rs if r["final_loss"] is not None),
            "all": [round(step_tps(r)) for r in rs],
            "padding": med(1 - r["tokens"] / r["padded_tokens"] for r in rs)
            if rs[0].get("padded_tokens")
            else None,
            "batching": rs[0].get("batching", ""),
        }

    lines = [
        f"`python bench/bench_train.py --reps {args.reps} --steps {args.steps} --rows {args.rows} --ttfs-rows "
        f"{args.ttfs_rows}` on {time.strftime('%Y-%m-%d')}: {os.cpu_count()} CPU cores (shared with other work), "
        f"{_ram_gb():.0f} GB RAM, no GPU, Python {platform.python_version()}.",
        "",
        f"Model: a random-init Llama built by `backend.models.tiny` with hidden 256, MLP 688, 4 layers, 4 heads, the "
        f"tiny-offline tokenizer (vocabulary 2,048): {n_params / 1e6:.1f} M parameters, fp32. LoRA r 16, alpha 32, "
        f"dropout 0, all linear layers; batch 8, {args.steps} steps, constant learning rate, max_length 512. "
        f"{args.rows}-row datasets: *flat* (every example ~80 tokens) and *skewed* (answers of 3 to 300 words, "
        "log-normal, median ~18). Each run is a fresh process; medians of "
        f"{args.reps} interleaved repetitions (order shuffled per repetition). Tokens/s = real tokens (prompt + "
        "response, no padding) per second: from the end of the first optimizer step to the end of the last (the "
        "training loop without its one-time set-up), and over the whole run (`train_runtime`, the first step "
        "included).",
        "",
        "| data | path | real tokens/s, steps 2..N (median of runs) | each run | over the whole run | train time (s) | wall incl. start-up (s) | peak RSS (MB) | final loss | notes |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for kind in ("flat", "skewed"):
        for variant, label in (
            ("tunedeck", "TuneDeck job → worker → trainer"),
            ("tunedeck-padding-free", "TuneDeck, batching: padding_free"),
            ("trl", "bare TRL SFTTrainer"),
            ("trl+ftz", "bare TRL SFTTrainer + flush-to-zero"),
            ("hf-padded", "padded transformers.Trainer"),
            ("hf-padded+ftz", "padded transformers.Trainer + flush-to-zero"),
        ):
            if (kind, variant) not in results:
                continue
            r = row(kind, variant)
            note = (
                f"batching: {r['batching']}"
                if r["batching"]
                else (
                    f"{r['padding']:.0%} of each batch is padding"
                    if r["padding"] is not None
                    else "TRL's padded collator"
                )
            )
            lines.append(
                f"| {kind} | {label} | {r['tps']:,.0f} | {r['all']} | {r['run_tps']:,.0f} | {r['train']:.1f} | {r['wall']:.1f} | "
                f"{r['rss']:.0f} | {r['loss']:.3f} | {note} |"
            )
    flat_t, skew_t = row("flat", "tunedeck"), row("skewed", "tunedeck")

    def target(
        label: str, ours: dict, kind: str, base: str, need: float, key: str = "tps", le: bool = False
    ) -> list:
        out = []
        for suffix, how in (
            ("+ftz", "same script + flush-to-zero (like for like)"),
            ("", "the script as a user writes it"),
        ):
            other = row(kind, base + suffix)
            ratio = ours[key] / other[key]
            met = ratio <= need if le else ratio >= need
            verdict = "(no target)" if need == 0 else ("yes" if met else "no")
            out.append(f"| {label}, vs {how} | {ratio:.2f} × | {verdict} |")
        return out

    lines += ["", "| target | measured | met |", "|---|---|---|"]
    lines += target("flat: TuneDeck ≥ 0.97 × bare TRL real tokens/s", flat_t, "flat", "trl", 0.97)
    lines += target(
        "flat: TuneDeck peak RSS ≤ 1.0 × bare TRL", flat_t, "flat", "trl", 1.0, key="rss", le=True
    )
    lines += target(
        "skewed: TuneDeck ≥ 1.5 × padded transformers.Trainer real tokens/s",
        skew_t,
        "skewed",
        "hf-padded",
        1.5,
    )
    lines += target("skewed, for reference: TuneDeck vs bare TRL", skew_t, "skewed", "trl", 0.0)
    lines += [
        "",
        f"Time from pressing Train (`Manager.submit`) to the first optimizer step, {args.ttfs_rows:,}-row "
        "skewed dataset, 3-step jobs (medians; target ≤ 5 s):",
        "",
        "| case | median (s) | runs (s) |",
        "|---|---|---|",
    ]
    for label, values in ttfs.items():
        if label.startswith(
            "submit"
        ):  # two per repetition: a new dataset (tokenized now), then the same again
            values = values[0::2]
            label = "of which: checks in the web process before queueing (new dataset)"
        lines.append(f"| {label} | {med(values):.2f} | {', '.join(f'{v:.2f}' for v in values)} |")
    return "\n".join(lines)


def _ram_gb() -> float:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    except (ValueError, OSError):
        return 0.0


def write_results(table: str) -> None:
    path = ROOT / "bench" / "RESULTS.md"
    text = path.read_text() if path.exists() else "# Benchmark results\n"
    start = text.find("## Training\n")
    if start >= 0:
        end = text.find("\n## ", start + 1)
        text = text[:start] + text[end + 1 :] if end >= 0 else text[:start]
    text = text.rstrip() + "\n\n## Training\n\n" + table + "\n\n" + TRAINING_NOTES
    path.write_text(text)


TRAINING_NOTES = """### How to read it

- **Flat data**: TuneDeck's `batching: auto` picks *padded* (padding would waste under 10 %), i.e. the same TRL
  collator and trainer as the bare script; what TuneDeck adds per step (progress, metrics and the cancel check,
  written to SQLite from a separate thread) costs ~1 %. Pre-tokenized data, fused AdamW and flushing denormal
  floats are the other differences. The plain `transformers.Trainer` is ~10 % faster per token than both TRL paths
  here: TRL's fused LM head also computes entropy and token accuracy for every step (the charts' extra lines).
- **Skewed data**: `batching: auto` picks *grouped* on a CPU (no FlashAttention): batches of similar lengths, so
  little padding instead of 54 %, with ordinary per-example attention. *padding_free* (one joined sequence,
  position ids restarting per example; the packed-equals-unpacked test covers it) is the row below it: slower
  than grouped on a CPU, since without FlashAttention the joined batch needs a dense block-diagonal mask over all
  its tokens; with FlashAttention on a GPU, auto picks it.
  Grouping changes which examples share a step (hence the slightly different final loss); padding-free does not.
- **Denormal floats**: fp32 LoRA training on a CPU can drift into denormal numbers (tiny squared gradients in
  AdamW's state), each operation on them ~10x slower. With tiny-offline's wide initialisation (0.3) identical
  runs of the bare TRL script measured 522 and 6,818 tokens/s in one session for that reason; a profile showed
  `mul`/`sqrt` on the optimizer state dominating, and `torch.set_flush_denormal(True)` took the same run from
  10.8 s to 0.8 s. TuneDeck's worker flushes denormals to zero on CPUs; the "+ flush-to-zero" rows give the
  baselines the same, for a like-for-like comparison. With the benchmark model's usual initialisation (0.02)
  neither baseline hit the slow mode in the runs above.
- **Time to the first step**: a fresh worker process spends ~5-7 s importing torch, transformers, TRL and PEFT
  on this machine before it can do anything, so the command line's background scheduler (a fresh worker per job)
  cannot reach 5 s here. The web app's scheduler keeps one *standby* worker with those imports done; with it, a
  10,000-row dataset tokenized on the spot (batched, ~2 s) and a cached one (memory-mapped at once) start within
  the target. The first step of a *grouped* run is its longest batch (the sampler puts it first so that an
  out-of-memory shows at once). Both include the scheduler's polling (every 0.5 s, as in the app).
- The machine was shared with other work during the runs. Single runs of the same path differ by up to ~15 %
  (see "each run"); the ratios compare medians of interleaved runs in fresh processes, and the flat-data ratio
  (~1.0) is within that noise: TuneDeck and the bare script run the same trainer on the same batches there.

### GPU measurements

No GPU was available in this task, so QLoRA on random-init models of real shapes (Llama-3.2-1B, Llama-3.1-8B:
tokens/s, peak VRAM, MFU) is **not measured here**; `tests/test_gpu.py` (marker `gpu`) checks the estimate against
the measured peak on the first CUDA machine it runs on. Until then the memory figures below are the estimate's
(`backend/jobs/estimate.py`), not measurements:

| model (shape) | setting | estimated peak allocated | estimated with CUDA overhead |
|---|---|---|---|
{estimates}

The issue's target for 8B (r 16, length 2048, batch 4: peak VRAM ≤ 16 GB) is met by the estimate; MFU ≥ 30 % can
only be checked on a GPU.
"""


def _estimates() -> str:
    from backend.jobs import estimate
    from backend.jobs.config import RunConfig

    rows = []
    for key, label in (
        ("meta-llama/llama-3.2-1b-instruct", "Llama-3.2-1B"),
        ("meta-llama/llama-3.1-8b-instruct", "Llama-3.1-8B"),
    ):
        for bs in (4, 1):
            cfg = RunConfig.parse(
                {
                    "method": "qlora",
                    "lora_r": 16,
                    "max_length": 2048,
                    "batch_size": bs,
                    "gradient_checkpointing": True,
                }
            )
            m = estimate.memory(estimate.KNOWN[key], cfg)
            rows.append(
                f"| {label} | QLoRA r 16, length 2048, batch {bs}, checkpointing | {m.peak:.1f} GB | "
                f"{m.total:.1f} GB |"
            )
    return "\n".join(rows)


if __name__ == "__main__":
    if "--child" not in sys.argv:
        TRAINING_NOTES = TRAINING_NOTES.replace("{estimates}", _estimates())
    sys.exit(main())
