"""Train a preset as a person would, then read its answers: does the tuned model say the right fact?

    python bench/bench_answers.py --data skylark|aurora [--preset P] [--set K=V ...] [--home DIR] [--log FILE]

Imports the dataset (the sample, or the Aurora thermostat set of ``bench/answers.py``; ``--pairs`` for the
preference version), trains through the real path (``tunedeck train --wait``: scheduler, worker, scoring), then
asks the eight probe questions (worded unlike any training or validation row) of the base model and of the tuned
one, greedily, with the chat's defaults, and counts the answers that carry the right fact. Prints one JSON line: the
time from Train to finished, the worker's peak memory, the scores TuneDeck computed (ROUGE-L, preference accuracy
of base and tuned for preference data, the judge's tally), and every answer. ``--home`` keeps the data directory
(the starter model converted once, datasets imported once) between calls; ``--log`` appends the line to a file.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from answers import AURORA_PROBES, SKYLARK_PROBES, right, write_aurora  # noqa: E402
from bench_cpu import cli, home_with_starter  # noqa: E402


def dataset(env: dict, data: str, pairs: bool, work: Path) -> str:
    """Import the dataset once per home; its name."""
    from backend.settings import SAMPLE_CSV, SAMPLE_VALIDATION_CSV

    name = f"{data}-{'pairs' if pairs else 'support'}"
    if any(d["name"] == name for d in cli(env, "data", "list")):
        return name
    if data == "skylark":
        if pairs:
            files = [str(ROOT / "presets/samples/skylark-support-preferences.csv")]
        else:
            files = [str(SAMPLE_CSV), "--validation-file", str(SAMPLE_VALIDATION_CSV)]
    else:
        made = write_aurora(work / "aurora")
        key = "preferences" if pairs else "support"
        files = [str(made[key]), "--validation-file", str(made[f"{key}_validation"])]
    cli(env, "data", "add", *files, "--name", name)
    return name


def answers(env: dict, base: str, adapter: str | None, questions: list[str]) -> list[str]:
    from backend.serving.generate import generate_batch, inference_dtype, load
    from backend.settings import Paths

    paths = Paths.from_env(env["TUNEDECK_HOME"])
    loaded = load(base, adapter, paths, dtype_name=inference_dtype(adapter) if adapter else None)
    return generate_batch(
        loaded, [[{"role": "user", "content": q}] for q in questions], [96] * len(questions)
    )


def table(log: str) -> str:
    """The runs of a ``--log`` file as a Markdown table (bench/RESULTS.md), then every answer of each run."""
    runs = [json.loads(line) for line in open(log, encoding="utf-8") if line.strip()]

    def score(run: dict, key: str) -> str:
        sides = [s for s in ("base", "start", "tuned") if key in run["scores"].get(s, {})]
        return " → ".join(f"{run['scores'][s][key]:.2f}" for s in sides) or "–"

    out = [
        "| run | data | settings | steps | Train → finished | peak RAM est. / measured | right facts (8 probes) "
        "| ROUGE-L | preference accuracy | judge vs base (W/T/L) |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in runs:
        judge = r.get("judge") or {}
        est = r.get("estimate") or {}
        out.append(
            f"| {r['label']} | {r['data']} | {r['preset']} {' '.join(r['set'])} ({est.get('precision', '?')}) | "
            f"{r['steps']} | {r['elapsed_s']:.0f} s (est. {est.get('total_s') or 0:.0f} s) | "
            f"{est.get('ram_gb') or 0:.2f} / {r['peak_rss_gb']:.2f} GB | {r['right_base']} → {r['right_tuned']} | "
            f"{score(r, 'rougeL')} | {score(r, 'pref_accuracy')} | "
            + (f"{judge['wins']}/{judge['ties']}/{judge['losses']} |" if judge else "– |")
        )
    for r in runs:
        out += ["", f"{r['label']} ({r['run']}): the tuned model's answers", ""]
        out += [
            f"- {'right' if a['right'] else 'wrong'}: *{a['q']}* → {a['tuned'][:200]}" for a in r["answers"]
        ]
    return "\n".join(out)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", choices=("skylark", "aurora"), default="skylark")
    p.add_argument("--pairs", action="store_true", help="the preference version of the data")
    p.add_argument("--preset", default="smollm2-135m")
    p.add_argument("--set", action="append", default=[], metavar="K=V")
    p.add_argument("--home", help="a data directory to keep between calls")
    p.add_argument("--log", help="append the JSON line to this file")
    p.add_argument("--label", default="", help="a name for this row in the log")
    p.add_argument(
        "--table", metavar="LOG", help="print the runs of a --log file as a Markdown table and stop"
    )
    args = p.parse_args()
    if args.table:
        print(table(args.table))
        return 0

    tmp = tempfile.TemporaryDirectory(prefix="tunedeck-bench-answers-")
    home = Path(args.home) if args.home else Path(tmp.name) / "home"
    env = home_with_starter(home)
    import os

    os.environ.update({k: env[k] for k in ("TUNEDECK_HOME", "HF_HUB_OFFLINE")})
    name = dataset(env, args.data, args.pairs, home.parent / f"{home.name}-files")
    train = ["train", name, "--preset", args.preset, "--wait"]
    for kv in args.set:
        train += ["--set", kv]
    try:
        est = cli(
            env, "estimate", name, "--preset", args.preset, *sum((["--set", kv] for kv in args.set), [])
        )
    except SystemExit as exc:  # a refusal is worth recording; the run still shows what it costs
        est = {"refused": str(exc)}
    t0 = time.time()
    job = cli(env, *train)
    wall = time.time() - t0
    probes = SKYLARK_PROBES if args.data == "skylark" else AURORA_PROBES
    questions = [pr.question for pr in probes]
    tuned = answers(env, job["base_model"], job["adapter_dir"], questions)
    base = answers(env, job["base_model"], None, questions)
    scores = job.get("scores") or {}
    extra = (job.get("result") or {}).get("extra") or {}
    out = {
        "label": args.label,
        "data": name,
        "preset": args.preset,
        "set": args.set,
        "run": job["id"],
        "status": job["status"],
        "wall_s": round(wall),
        "elapsed_s": job.get("elapsed_s"),
        "steps": (job.get("result") or {}).get("steps"),
        "peak_rss_gb": round(extra.get("peak_rss_mb", 0) / 1024, 2),
        "estimate": {k: est.get(k) for k in ("total_s", "ram_gb", "precision", "steps", "epochs")},
        "right_tuned": sum(right(a, pr) for a, pr in zip(tuned, probes, strict=True)),
        "right_base": sum(right(a, pr) for a, pr in zip(base, probes, strict=True)),
        "scores": {
            side: {
                k: v
                for k, v in (scores.get(side) or {}).items()
                if k in ("rougeL", "eval_loss", "pref_accuracy")
            }
            for side in ("base", "start", "tuned")
            if scores.get(side)
        },
        "judge": scores.get("judge"),
        "answers": [
            {"q": q, "tuned": t.strip(), "base": b.strip(), "right": right(t, pr)}
            for q, t, b, pr in zip(questions, tuned, base, probes, strict=True)
        ],
    }
    line = json.dumps(out)
    print(line, flush=True)
    if args.log:
        with open(args.log, "a") as f:
            f.write(line + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
