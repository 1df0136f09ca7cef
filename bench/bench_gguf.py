"""GGUF export of the starter model: time, peak memory, file size and answer agreement, against doing it by hand.

    python bench/bench_gguf.py [--steps 24] [--write]

Trains a short starter run (smollm2-135m on the sample support dataset), then for each type (f16, bf16, q8_0,
q4_k_m) runs ``tunedeck export RUN --gguf --quant TYPE`` in a fresh process and records its wall time, its peak RSS
(the largest of the export process and llama.cpp's converter), the file's size, and how many of the check's greedy
answers llama.cpp gives token for token as transformers does (and for how many first tokens they agree).

The baseline is what a person does without TuneDeck, measured in the same run: ``tunedeck export RUN --merged``
then llama.cpp's ``convert_hf_to_gguf.py`` on that folder (no template fix, no checks, no Modelfile). ``--write``
puts the table in bench/RESULTS.md. "Same next token": along each of transformers' greedy answers, how often
llama.cpp with the file ranks the same token first given the same text before it (a quantized file's fidelity).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

# Runs a command and prints its wall time and the peak RSS of its largest (waited-for) process, in MB.
MEASURE = (
    "import resource, subprocess, sys, time\n"
    "t = time.monotonic()\n"
    "rc = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE).returncode\n"
    "print(rc, time.monotonic() - t, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024)\n"
)


def measured(env: dict, *cmd: str) -> tuple[float, float]:
    res = subprocess.run(
        [sys.executable, "-c", MEASURE, *cmd], cwd=ROOT, env=env, capture_output=True, text=True, check=True
    )
    rc, seconds, rss = res.stdout.split()
    if rc != "0":
        raise SystemExit(f"{' '.join(cmd)} failed ({rc})")
    return float(seconds), float(rss)


def cli(env: dict, *args: str) -> dict:
    res = subprocess.run(
        [sys.executable, "-m", "backend", *args, "--json"], cwd=ROOT, env=env, capture_output=True, text=True
    )
    if res.returncode != 0:
        raise SystemExit(res.stderr)
    return json.loads(res.stdout)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=24)
    ap.add_argument("--write", action="store_true")
    args = ap.parse_args()

    from backend.serving.gguf_export import QUANTS, command, converter_dir
    from backend.settings import PROJECT_ROOT

    home = Path(tempfile.mkdtemp(prefix="tunedeck-bench-gguf-"))
    env = {**os.environ, "TUNEDECK_HOME": str(home / "home"), "HF_HUB_OFFLINE": "1"}
    try:
        sample = PROJECT_ROOT / "presets" / "samples" / "skylark-support.csv"
        cli(env, "data", "add", str(sample), "--name", "support")
        job = cli(
            env, "train", "support", "--preset", "smollm2-135m", "--set", f"max_steps={args.steps}", "--wait"
        )
        run = job["id"]
        rows = []
        out = home / "out"
        for quant in QUANTS:
            seconds, rss = measured(env, *command(run, quant, out))
            check = json.loads(next(out.glob(f"{run}-{quant}-gguf")).joinpath("check.json").read_text())
            answers = check["answers"]
            rows.append(
                {
                    "type": quant,
                    "seconds": seconds,
                    "peak_rss_mb": rss,
                    "size_mb": check["size_bytes"] / 2**20,
                    "identical": sum(a["identical"] for a in answers),
                    "answers": len(answers),
                    "first_same": min(a["same_tokens"] for a in answers),
                    "next_token": sum(a["next_token_agreement"] for a in answers) / len(answers),
                    "template_same": not check["template_differences"],
                }
            )
            print(rows[-1], flush=True)
        # by hand: merged safetensors, then llama.cpp's converter, for q8_0
        merged_s, merged_rss = measured(
            env, sys.executable, "-m", "backend", "export", run, "--merged", "--to", str(home / "hand")
        )
        conv_s, conv_rss = measured(
            {k: v for k, v in env.items() if k != "PYTHONPATH"},
            sys.executable,
            str(converter_dir() / "convert_hf_to_gguf.py"),
            str(home / "hand" / f"{run}-merged"),
            "--outtype",
            "q8_0",
            "--outfile",
            str(home / "hand" / "by-hand-q8_0.gguf"),
        )
        baseline = {"seconds": merged_s + conv_s, "peak_rss_mb": max(merged_rss, conv_rss)}
        print({"baseline_q8_0": baseline}, flush=True)
    finally:
        shutil.rmtree(home, ignore_errors=True)

    q8 = next(r for r in rows if r["type"] == "q8_0")
    table = [
        f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; starter run of {args.steps} "
        f"steps; {time.strftime('%Y-%m-%d')}.",
        "",
        "| type | export time | peak RSS | file | greedy answers identical (24 tokens) | same next token | template |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        table.append(
            f"| {r['type']} | {r['seconds']:.1f} s | {r['peak_rss_mb']:.0f} MB | {r['size_mb']:.0f} MB | "
            f"{r['identical']} of {r['answers']} (all agree on their first {r['first_same']}) | "
            f"{100 * r['next_token']:.0f} % | {'identical' if r['template_same'] else 'differs'} |"
        )
    table += [
        "",
        f"By hand (`tunedeck export --merged` + llama.cpp's `convert_hf_to_gguf.py --outtype q8_0`, no checks): "
        f"{baseline['seconds']:.1f} s, peak RSS {baseline['peak_rss_mb']:.0f} MB. TuneDeck's q8_0 export with its "
        f"checks: **{q8['seconds'] / baseline['seconds']:.2f}×** the time, "
        f"**{q8['peak_rss_mb'] / baseline['peak_rss_mb']:.2f}×** the peak memory.",
    ]
    text = "\n".join(table)
    print(text)
    if args.write:
        results = ROOT / "bench" / "RESULTS.md"
        body = results.read_text()
        start = "<!-- gguf:start -->"
        end = "<!-- gguf:end -->"
        block = f"{start}\n{text}\n{end}"
        if start in body:
            body = body[: body.index(start)] + block + body[body.index(end) + len(end) :]
        else:
            body += (
                "\n## GGUF export (issue 11)\n\n`python bench/bench_gguf.py --write`: the starter model exported to each "
                "type, each export a fresh process.\n\n" + block + "\n"
            )
        results.write_text(body)


if __name__ == "__main__":
    main()
