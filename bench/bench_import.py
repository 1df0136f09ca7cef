"""Benchmark: importing a 1,000,000-row, ~500 MB CSV, as the web app does it.

    .venv/bin/python bench/bench_import.py [--rows 1000000] [--runs 3] [--no-write]

1. Generates the CSV in a temporary folder (not kept): Alpaca-like instruction / input / output columns, some
   cells quoted with commas, quotes and line breaks, a few empty responses and exact duplicates.
2. Time to preview: ``inspect_file`` (what the Data tab runs when an upload finishes), median of 5 calls in a
   process that has already imported TuneDeck, like the app.
3. The import: ``python -m backend.data.importer``, the child process the app starts, run ``--runs`` times on a fresh
   data directory each: wall time, peak memory of that process (its max RSS from ``wait4``), how many progress
   updates it streamed and the longest gap between two.
4. The token report for tiny-offline on the imported dataset (a 10,000-row sample), then again from its cache.

Prints the numbers and writes them to bench/RESULTS.md under "## Dataset import" (other sections are left alone).
"""

from __future__ import annotations

import argparse
import csv
import os
import platform
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

WORDS = (
    "the quick brown fox jumps over lazy dog what is capital of france paris please write short reply how are you "
    "today fine thank help me with this task here translate sentence into english summarize text in one line "
    "classify review as positive or negative weather sunny warm meeting starts nine morning send report friday "
    "order package arrive soon sorry delay contact support question answer prompt response instruction input"
).split()


def generate(path: Path, rows: int, seed: int = 0) -> None:
    rng = random.Random(seed)
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["instruction", "input", "output"])
        previous = ["", "", ""]
        for i in range(rows):
            prompt = " ".join(rng.choices(WORDS, k=30)) + f" (case {i})?"
            context = " ".join(rng.choices(WORDS, k=12)) if i % 3 == 0 else ""
            answer = " ".join(rng.choices(WORDS, k=58))
            if i % 50 == 0:
                answer += ', "quoted", with a comma\nand a second line'
            if i % 1000 == 1:
                answer = ""  # left out: empty response
            row = previous if i % 1000 == 3 else [prompt, context, answer]  # left out: exact duplicate
            w.writerow(row)
            previous = row


def time_preview(path: Path, repeats: int = 5) -> tuple[float, float, str]:
    code = (
        "import sys, time, statistics; from backend.data.datasets import inspect_file\n"
        "t = time.perf_counter(); p = inspect_file(sys.argv[1]); first = time.perf_counter() - t\n"
        "times = []\n"
        f"for _ in range({repeats}):\n"
        "    t = time.perf_counter(); inspect_file(sys.argv[1]); times.append(time.perf_counter() - t)\n"
        "print(first, statistics.median(times), p.rows_text(), p.shape, sep='|')"
    )
    out = (
        subprocess.run(
            [sys.executable, "-c", code, str(path)], cwd=ROOT, capture_output=True, text=True, check=True
        )
        .stdout.strip()
        .splitlines()[-1]
    )
    first, median, rows, shape = out.split("|")
    return float(first), float(median), f"{rows}, shape {shape}"


def run_import(path: Path, home: Path) -> dict:
    from backend.data.importer import import_in_subprocess
    from backend.settings import Paths

    paths = Paths.from_env(home)
    stamps: list[float] = []
    t0 = time.perf_counter()
    dataset_id, report, resources = import_in_subprocess(
        paths, str(path), progress=lambda f, m: stamps.append(time.perf_counter())
    )
    wall = time.perf_counter() - t0
    gaps = [b - a for a, b in zip([t0, *stamps], stamps, strict=False)]
    return {
        "dataset": dataset_id,
        "wall_s": wall,
        "max_rss_mb": resources["max_rss_kb"] / 1024,
        "updates": len(stamps),
        "max_gap_s": max(gaps) if gaps else wall,
        "first_update_s": gaps[0] if gaps else wall,
        "report": report,
    }


def token_report_times(home: Path, dataset_id: str) -> tuple[float, float, str]:
    code = (
        "import sys, time; from backend.settings import Paths; from backend.core.store import Store\n"
        "from backend.data.chatformat import ChatFormat; from backend.data.report import token_report\n"
        "paths = Paths.from_env(sys.argv[1]); rec = Store(paths.db).get_dataset(sys.argv[2])\n"
        "fmt = ChatFormat.load('tiny-offline', paths)\n"
        "t = time.perf_counter(); r = token_report(rec, fmt, max_length=1024); a = time.perf_counter() - t\n"
        "t = time.perf_counter(); token_report(rec, fmt, max_length=1024); b = time.perf_counter() - t\n"
        "print(a, b, r.summary(), sep='|')"
    )
    out = (
        subprocess.run(
            [sys.executable, "-c", code, str(home), dataset_id],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        )
        .stdout.strip()
        .splitlines()[-1]
    )
    a, b, summary = out.split("|")
    return float(a), float(b), summary


def machine() -> str:
    mem_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / (1 << 30)
    return (
        f"{os.cpu_count()} cores, {mem_gb:.0f} GB RAM, no GPU, {platform.system()} {platform.release()}, Python "
        f"{platform.python_version()}"
    )


def write_results(text: str) -> None:
    path = ROOT / "bench" / "RESULTS.md"
    old = path.read_text() if path.exists() else "# Benchmark results\n"
    start = old.find("## Dataset import")
    if start >= 0:
        end = old.find("\n## ", start + 1)
        old = old[:start].rstrip() + "\n\n" + (old[end + 1 :] if end >= 0 else "")
    path.write_text(old.rstrip() + "\n\n" + text.rstrip() + "\n")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=1_000_000)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--no-write", action="store_true", help="print only; leave bench/RESULTS.md alone")
    args = p.parse_args()

    load = os.getloadavg()[0]  # the machine may be shared: say how busy it was
    work = Path(tempfile.mkdtemp(prefix="tunedeck-bench-import-"))
    try:
        csv_path = work / "big.csv"
        t = time.perf_counter()
        generate(csv_path, args.rows)
        size_mb = csv_path.stat().st_size / (1 << 20)
        print(
            f"generated {args.rows:,} rows, {size_mb:,.0f} MB in {time.perf_counter() - t:.0f} s", flush=True
        )

        first, median, seen = time_preview(csv_path)
        print(f"preview: first call {first:.2f} s, median {median:.3f} s ({seen})", flush=True)

        runs = []
        for i in range(args.runs):
            home = work / f"home-{i}"
            runs.append(run_import(csv_path, home))
            r = runs[-1]
            print(
                f"import {i + 1}: {r['wall_s']:.1f} s, peak {r['max_rss_mb']:.0f} MB, {r['updates']} progress "
                f"updates, longest gap {r['max_gap_s']:.1f} s",
                flush=True,
            )
        report = runs[-1]["report"]
        kept = (
            f"{report['rows_kept']:,} of {report['rows_in_file']:,} rows kept "
            f"({report['train_rows']:,} train / {report['validation_rows']:,} validation)"
        )
        dropped = ", ".join(f"{k} {v['count']:,}" for k, v in report["dropped"].items())

        home = work / f"home-{args.runs - 1}"
        from backend.models.registry import build_tiny
        from backend.settings import Paths

        build_tiny(Paths.from_env(home))
        tok_first, tok_cached, tok_summary = token_report_times(home, runs[-1]["dataset"])
        print(
            f"token report: {tok_first:.1f} s, then {tok_cached:.3f} s from the cache ({tok_summary})",
            flush=True,
        )

        walls = [r["wall_s"] for r in runs]
        rss = [r["max_rss_mb"] for r in runs]
        text = f"""## Dataset import

`{Path(sys.executable).name} bench/bench_import.py --rows {args.rows} --runs {args.runs}` on {time.strftime("%Y-%m-%d")}
({machine()}). The CSV is generated by the script ({args.rows:,} rows, {size_mb:,.0f} MB; Alpaca-like
instruction / input / output, every 50th answer quoted with a comma, quotes and a line break), then imported
the way the Data tab does it: `python -m backend.data.importer` in a child process, streaming 50,000-row batches into
Parquet. Medians of {args.runs} runs, each on a fresh data directory. Load average when it started: {load:.1f}
(other work on the same cores makes the wall times upper bounds).

| what | result |
|---|---|
| time to preview (`inspect_file`, first rows + shape + mapping + row estimate) | median {median:.3f} s (first call {first:.2f} s) |
| import wall time | median {statistics.median(walls):.1f} s (runs: {", ".join(f"{w:.1f}" for w in walls)}) |
| peak memory of the import process (max RSS) | median {statistics.median(rss):.0f} MB (max {max(rss):.0f} MB) |
| progress updates streamed to the page | {runs[-1]["updates"]}, longest gap {max(r["max_gap_s"] for r in runs):.1f} s |
| rows | {kept}; left out: {dropped or "none"} |
| token report, tiny-offline (10,000-row sample) | {tok_first:.1f} s, then {tok_cached:.3f} s from the cache |

Targets from the issue: preview within 2 s, import under 1.5 GB.
"""
        print()
        print(text)
        if not args.no_write:
            write_results(text)
            print("written to bench/RESULTS.md")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
