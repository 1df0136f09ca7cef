"""The ``tunedeck`` command line (also ``python -m backend``). Every action of the web UI is here too.

    tunedeck serve [--host H] [--port P]
    tunedeck data add FILE [--name N] [--shape S] [--prompt-col C] [--response-col C] [--system-col C] ...
    tunedeck data list | show DATASET | rename DATASET NEW | rm DATASET | export DATASET FILE.csv
    tunedeck train DATASET [--preset P] [--set key=value ...] [--wait]
    tunedeck estimate DATASET [--preset P] [--set key=value ...]     (exit 3: it would not fit)
    tunedeck jobs | show JOB | cancel JOB | resume JOB [--set key=value ...] [--wait]
    tunedeck generate (JOB | --base MODEL) --prompt TEXT [--max-new-tokens N] [--temperature T]
    tunedeck votes list | export [--name N]

Every command takes ``--json``. Failures exit non-zero with the message on stderr. It works with or without the app
running: jobs are run by the app's scheduler, or by a background one this command starts (never two at once).
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from typing import Any

from backend.core.status import JobStatus
from backend.core.store import Store
from backend.data.datasets import ImportReport, import_dataset, mapping_text
from backend.errors import TuneDeckError, explain
from backend.jobs import views
from backend.jobs.config import ConfigError, RunConfig, coerce_setting
from backend.jobs.manager import Manager, ensure_scheduler
from backend.jobs.presets import Preset, default_preset, load_preset
from backend.settings import Paths, home_unwritable, load_settings


class CliError(TuneDeckError):
    pass


def _ctx() -> tuple[Paths, Store, Manager]:
    paths = Paths.from_env()
    problem = home_unwritable(paths)
    if problem:
        raise CliError(problem)
    store = Store(paths.db)
    return paths, store, Manager(store, paths)


def _out(args: argparse.Namespace, data: Any, text: str) -> None:
    print(json.dumps(data, indent=2, default=str) if args.json else text)


# -- commands ----------------------------------------------------------------------------------------------------


def cmd_serve(args: argparse.Namespace) -> int:
    from app import main as serve_main

    extra = (["--share"] if args.share else []) + (["--allow-no-password"] if args.allow_no_password else [])
    return serve_main(["--host", args.host, "--port", str(args.port), *extra])


def cmd_data_add(args: argparse.Namespace) -> int:
    paths, store, _ = _ctx()
    cols = {
        "prompt": args.prompt_col,
        "response": args.response_col,
        "system": args.system_col,
        "context": args.context_col,
        "messages": args.messages_col,
        "text": args.text_col,
        "chosen": args.chosen_col,
        "rejected": args.rejected_col,
        "completion": args.completion_col,
        "label": args.label_col,
    }
    mapping = {k: (None if v.lower() == "none" else v) for k, v in cols.items() if v is not None}
    show_progress = sys.stderr.isatty() and not args.json
    last = [-1]

    def progress(fraction: float, message: str) -> None:
        pct = int(fraction * 100)
        if show_progress and pct != last[0]:
            last[0] = pct
            print(f"\r{message}: {pct}%   ", end="" if pct < 100 else "\n", file=sys.stderr, flush=True)

    record, report = import_dataset(
        store,
        paths,
        args.file,
        name=args.name,
        shape=args.shape,
        mapping=mapping,
        sheet=args.sheet,
        validation="none" if args.no_validation else "auto",
        validation_file=args.validation_file,
        seed=args.seed,
        model=args.model if args.max_length else None,
        max_length=args.max_length,
        over_length=args.over_length,
        system_prompt=args.system_prompt,
        progress=progress,
    )
    view = views.dataset_view(record) | {"report": report.as_dict()}
    _out(
        args,
        view,
        f"Added dataset {record.name} ({record.id}), shape {record.info['shape']}: "
        f"{mapping_text(record)}. {report.summary()}" + "".join(f"\nnote: {n}" for n in report.notes),
    )
    return 0


def cmd_data_list(args: argparse.Namespace) -> int:
    _, store, _ = _ctx()
    rows = [views.dataset_view(d) for d in store.list_datasets()]
    lines = [
        f"{r['name']:<28} {r['id']:<12} {r['shape']:<16} {r['rows']:>8} rows  from {r['source_file']}"
        for r in rows
    ]
    _out(
        args, rows, "\n".join(lines) if lines else "No datasets yet. Add one with: tunedeck data add FILE.csv"
    )
    return 0


def cmd_data_show(args: argparse.Namespace) -> int:
    from backend.data.datasets import first_rows, get_dataset

    paths, store, _ = _ctx()
    record = get_dataset(store, args.dataset)
    view = views.dataset_view(record)
    view["report"] = record.info.get("report", {})
    frame = first_rows(record, args.rows)
    view["examples"] = frame.to_dict("records")
    text = [
        f"{record.name} ({record.id}): {record.n_rows} rows, shape {view['shape']}, from {record.source_file}",
        f"mapping: {mapping_text(record)}",
        f"sha256: {view['sha256']}",
        ImportReport.from_dict(view["report"]).summary() if view["report"] else "",
    ]
    if args.model:
        from backend.data.chatformat import ChatFormat
        from backend.data.report import token_report

        fmt = ChatFormat.load(args.model, paths)
        tokens = token_report(record, fmt, system_prompt=args.system_prompt, max_length=args.max_length)
        view["tokens"] = tokens.as_dict()
        text.append(tokens.summary())
        if len(frame):
            encoded = fmt.encode(record.info["shape"], frame.iloc[0].to_dict(), args.system_prompt)
            view["rendered_example"] = [{"text": t, "trained": tr} for t, tr in encoded.segments()]
            text.append("The first example as the model sees it ([[...]] is trained on):")
            text.append("".join(f"[[{t}]]" if tr else t for t, tr in encoded.segments()))
    else:
        for row in view["examples"]:
            text.append("  " + " | ".join(f"{k}={str(v)[:60]!r}" for k, v in row.items()))
    _out(args, view, "\n".join(t for t in text if t))
    return 0


def cmd_data_rename(args: argparse.Namespace) -> int:
    from backend.data.datasets import rename_dataset

    _, store, _ = _ctx()
    record = rename_dataset(store, args.dataset, args.new_name)
    _out(args, views.dataset_view(record), f"Renamed to {record.name} ({record.id}).")
    return 0


def cmd_data_rm(args: argparse.Namespace) -> int:
    from backend.data.datasets import delete_dataset

    paths, store, _ = _ctx()
    record = delete_dataset(store, paths, args.dataset)
    _out(args, {"deleted": record.id, "name": record.name}, f"Deleted dataset {record.name} ({record.id}).")
    return 0


def cmd_data_export(args: argparse.Namespace) -> int:
    from backend.data.datasets import export_csv, get_dataset

    _, store, _ = _ctx()
    record = get_dataset(store, args.dataset)
    target = export_csv(record, args.target)
    _out(args, {"dataset": record.id, "file": str(target)}, f"Wrote {record.n_rows} rows to {target}.")
    return 0


def _changes(items: list[str] | None, example: str) -> dict[str, Any]:
    """--set key=value ... as typed settings."""
    changes: dict[str, Any] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep:
            raise CliError(f"--set {item!r}: expected key=value, e.g. --set {example}")
        changes[key.strip()] = coerce_setting(key.strip(), value.strip())
    return changes


def _run_config(args: argparse.Namespace, paths: Paths) -> tuple[Preset, RunConfig]:
    """The preset (--preset, or the default for this machine) with the --set changes: (preset, RunConfig)."""
    preset = load_preset(args.preset or default_preset(paths))
    changes = _changes(args.set, "learning_rate=1e-4")
    return preset, RunConfig.parse({**preset.config.model_dump(), **changes})


def cmd_train(args: argparse.Namespace) -> int:
    paths, store, manager = _ctx()
    preset, config = _run_config(args, paths)
    # What admission sees as it takes the job, worked out before it is queued: a queued job must always reach the
    # scheduler below, whatever an estimate might raise.
    estimate = {"estimate": manager.estimate(args.dataset, config)}
    job = manager.submit(args.dataset, config, preset=preset.name)
    ensure_scheduler(paths)
    if not args.wait:
        _out(
            args,
            views.job_view(store, job) | estimate,
            f"Queued {job.id}. Follow it with: tunedeck show {job.id}",
        )
        return 0
    print(f"Queued {job.id}; waiting for it to finish (Ctrl-C stops waiting, not the job).", file=sys.stderr)
    last = ""
    while True:
        job = store.get_job(job.id)
        assert job is not None
        view = views.job_view(store, job)
        line = views.status_line(view)
        if line != last:
            print(f"{job.id}: {line}", file=sys.stderr)
            last = line
        if job.status.is_terminal:
            break
        ensure_scheduler(paths)  # if the scheduler that ran it went away, start another
        time.sleep(1.0)
    _out(
        args,
        views.job_detail(store, job) | estimate,
        f"{job.id}: {views.status_line(view)}"
        + (f"\nadapter: {view['adapter_dir']}" if view["adapter_dir"] else ""),
    )
    return 0 if job.status is JobStatus.SUCCEEDED else 1


EXIT_WOULD_NOT_FIT = 3  # `tunedeck estimate`: the job would be refused for memory (the message names the fix)


def cmd_estimate(args: argparse.Namespace) -> int:
    """The Train tab's estimate for `tunedeck train` with the same arguments, and its verdict: exit 0 when it
    would be queued, EXIT_WOULD_NOT_FIT (the refusal on stderr, as train prints it) when it does not fit; any other
    problem (dataset, model, settings) fails as train does."""
    paths, _, manager = _ctx()
    _, config = _run_config(args, paths)
    problems = manager.problems(args.dataset, config)
    others = [p for p in problems if p.field != "memory"]
    if others:
        raise ConfigError(others)
    report = manager.estimate(args.dataset, config)
    _out(args, report, report["message"])
    if (
        problems
    ):  # memory only (the rest raised above): the verdict is submit's own, not a reading of the text
        print(f"error: it would be refused: {ConfigError(problems)}", file=sys.stderr)
        return EXIT_WOULD_NOT_FIT
    return 0


def cmd_jobs(args: argparse.Namespace) -> int:
    _, store, _ = _ctx()
    rows = [views.job_view(store, j) for j in store.list_jobs()]
    lines = [
        f"{r['id']:<28} {r['status']:<10} {r['base_model'] or '':<28} {views.status_line(r)}" for r in rows
    ]
    _out(
        args,
        rows,
        "\n".join(lines)
        if lines
        else "No jobs yet. Start one with: tunedeck train DATASET (the starter model, smollm2-135m)",
    )
    return 0


def _job(store: Store, job_id: str):
    job = store.get_job(job_id)
    if job is None:
        raise CliError(f"There is no job {job_id!r}. Fix: see `tunedeck jobs` for the list.")
    return job


def cmd_show(args: argparse.Namespace) -> int:
    _, store, _ = _ctx()
    job = _job(store, args.job)
    detail = views.job_detail(store, job)
    text = [
        f"{job.id}: {views.status_line(detail)}",
        f"base model: {detail['base_model']} ({detail['method']}), dataset {detail['dataset']}, preset {detail['preset']}",
    ]
    if detail["pid"]:
        text.append(f"worker pid: {detail['pid']}")
    if detail["adapter_dir"]:
        text.append(f"adapter: {detail['adapter_dir']}")
    for key, label in (("resumed_from", "resumes"), ("retry_of", "retries (out of GPU memory)")):
        if detail.get(key):
            text.append(f"{label}: {detail[key]}")
    if detail.get("tokens_per_s"):
        text.append(
            f"speed: {detail['tokens_per_s']:,.0f} tokens/s"
            + (f", peak GPU memory {detail['peak_gpu_gb']:.2f} GB" if detail.get("peak_gpu_gb") else "")
        )
    if detail.get("resumable"):
        text.append(f"resume from its last checkpoint with: tunedeck resume {job.id}")
    text.append(f"log: {job.job_dir}/worker.log")
    _out(args, detail, "\n".join(text))
    return 0


def cmd_cancel(args: argparse.Namespace) -> int:
    paths, store, manager = _ctx()
    job = _job(store, args.job)
    if job.status.is_terminal:
        raise CliError(f"{job.id} has already ended ({job.status.value}); there is nothing to cancel.")
    manager.cancel(job.id)
    ensure_scheduler(paths)
    deadline = time.monotonic() + args.timeout
    while time.monotonic() < deadline:
        job = _job(store, job.id)
        if job.status.is_terminal:
            break
        time.sleep(0.5)
    view = views.job_view(store, job)
    _out(
        args,
        view,
        f"{job.id}: {views.status_line(view)}"
        if job.status.is_terminal
        else f"{job.id}: cancel requested; it stops after the current step.",
    )
    return 0


def cmd_resume(args: argparse.Namespace) -> int:
    from backend.jobs.manager import ResumeError

    paths, store, manager = _ctx()
    changes = _changes(args.set, "max_steps=200")
    try:
        job = manager.resume(args.job, changes)
    except ResumeError as exc:
        raise CliError(str(exc)) from None
    ensure_scheduler(paths)
    points = store.metrics(job.id, "loss")
    print(
        f"Queued {job.id}, continuing {args.job} from its checkpoint at step {points[-1][0] if points else 0}.",
        file=sys.stderr,
    )
    while args.wait and not job.status.is_terminal:
        time.sleep(1.0)
        ensure_scheduler(paths)
        job = _job(store, job.id)
    view = views.job_detail(store, job) if args.wait else views.job_view(store, job)
    _out(args, view, f"{job.id}: {views.status_line(view)}")
    return 0 if not args.wait or job.status is JobStatus.SUCCEEDED else 1


def cmd_generate(args: argparse.Namespace) -> int:
    from backend.logs import quiet_hf
    from backend.serving.generate import generate, load

    quiet_hf()

    paths, store, _ = _ctx()
    adapter = None
    if args.job:
        job = _job(store, args.job)
        adapter = (job.result or {}).get("adapter_dir")
        if not adapter:
            raise CliError(
                f"{job.id} has no adapter ({views.status_line(views.job_view(store, job))}). "
                "Fix: wait for it to finish, or use --base MODEL to talk to a base model."
            )
        base = job.config["base_model"]
    else:
        base = args.base
    loaded = load(base, adapter, paths)
    messages = ([{"role": "system", "content": args.system}] if args.system else []) + [
        {"role": "user", "content": args.prompt}
    ]
    reply = generate(
        loaded, messages, max_new_tokens=args.max_new_tokens, temperature=args.temperature, seed=args.seed
    )
    _out(args, {"base_model": base, "adapter_dir": adapter, "prompt": args.prompt, "reply": reply}, reply)
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from backend.serving import export

    paths, store, _ = _ctx()
    if args.quant and not args.gguf:
        raise export.ExportError(
            "--quant goes with --gguf. Fix: `tunedeck export RUN --gguf --quant q8_0 --to DIR`."
        )
    if args.gguf:
        return _export_gguf(args, store, paths)
    if args.merged:
        from backend.logs import quiet_hf

        quiet_hf()
        out = export.export_merged(store, paths, args.run, args.to)
    elif args.space:
        out = export.export_space(store, args.run, args.to)
    else:
        out = export.export_adapter(store, args.run, args.to)
    view = export.describe(out)
    label = {"adapter": "adapter", "merged": "merged model", "space": "Space bundle"}[out.kind]
    _out(
        args,
        view,
        f"Exported the {label} of {args.run} to {out.folder}"
        + (f" (and {out.zip_path})" if out.zip_path else ""),
    )
    return 0


def _export_gguf(args: argparse.Namespace, store, paths) -> int:
    from backend.serving import gguf_export

    gguf_export.plan(
        store, paths, args.run, args.to, args.quant or "q8_0", args.pre_tokenizer
    )  # before torch
    from backend.logs import quiet_hf

    quiet_hf()
    out = gguf_export.export_gguf(
        store,
        paths,
        args.run,
        args.to,
        args.quant or "q8_0",
        check_answers=True if args.check_answers else None,
        pre_tokenizer=args.pre_tokenizer,
    )
    same = sum(a["identical"] for a in out.answers)
    text = [
        f"Exported {args.run} as {out.gguf.name} ({out.size_bytes / 2**20:.0f} MB, {out.seconds:.0f} s) in {out.folder}",
        "Template: "
        + (
            "identical in training, chat, the GGUF and the Modelfile"
            if not out.template_differences
            else f"{len(out.template_differences)} differences (see {out.folder / 'check.json'})"
        ),
    ]
    if out.answers:
        text.append(f"Answers: {same} of {len(out.answers)} identical between llama.cpp and transformers")
    text += out.notes
    text.append(f"Ollama: cd {out.folder} && ollama create {args.run.lower()} -f Modelfile")
    _out(args, out.view(), "\n".join(text))
    return 0


def cmd_push(args: argparse.Namespace) -> int:
    from backend.serving import export

    paths, store, _ = _ctx()
    url = export.push(store, paths, args.run, args.repo, merged=args.merged, private=not args.public)
    _out(args, {"run": args.run, "repo": args.repo, "url": url}, f"Pushed {args.run} to {url}")
    return 0


def cmd_demo_start(args: argparse.Namespace) -> int:
    from backend.serving import demo

    paths, store, _ = _ctx()
    info = demo.start_demo(
        store,
        paths,
        args.run,
        password=args.password,
        share=args.share,
        port=args.port,
        host=args.host,
        share_server_address=args.share_server_address,
    )
    _out(args, info.__dict__, info.summary())
    return 0


def cmd_demo_stop(args: argparse.Namespace) -> int:
    from backend.serving import demo

    paths, _, _ = _ctx()
    stopped = demo.stop_demo(paths, args.run)
    if not stopped:
        raise CliError(f"No demo of {args.run} is running.")
    _out(args, {"run": args.run, "stopped": True}, f"Stopped the demo of {args.run}.")
    return 0


def cmd_demo_list(args: argparse.Namespace) -> int:
    from backend.serving import demo

    paths, _, _ = _ctx()
    rows = demo.list_demos(paths)
    lines = [f"{d['run_id']:<28} {d['local_url']}  {d['share_url'] or ''}" for d in rows]
    _out(
        args, rows, "\n".join(lines) if lines else "No demos running. Start one with: tunedeck demo start RUN"
    )
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from backend.logs import quiet_hf
    from backend.serving.evaluate import PROGRESS_PREFIX, evaluate_run

    quiet_hf()
    paths, store, _ = _ctx()
    _job(store, args.run)

    def progress(done: int, total: int) -> None:
        # On stderr, one line a batch: the Compare tab reads these to show "12 of 32 answers" while it waits.
        print(f"{PROGRESS_PREFIX}{done} of {total} answers", file=sys.stderr, flush=True)

    result = evaluate_run(
        store, paths, args.run, limit=args.limit, max_new_tokens=args.max_new_tokens, on_progress=progress
    )
    data = {k: v for k, v in result.__dict__.items() if k != "examples"}
    _out(
        args,
        data,
        result.summary() + f"\nPer-example table: {_job(store, args.run).job_dir}/eval_examples.csv",
    )
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from backend.logs import quiet_hf
    from backend.serving.generate import Decoding, ModelPool, generate

    quiet_hf()
    paths, store, _ = _ctx()
    jobs = [_job(store, r) for r in args.runs]
    bases = {j.config["base_model"] for j in jobs}
    if len(bases) > 1:
        raise CliError(
            f"These runs have different base models ({', '.join(sorted(bases))}); compare runs of one base."
        )
    for j in jobs:
        if not (j.result or {}).get("adapter_dir"):
            raise CliError(f"{j.id} has no adapter yet ({j.status.value}).")
    base = bases.pop()
    pool = ModelPool(paths)
    decoding = Decoding(max_new_tokens=args.max_new_tokens, temperature=args.temperature, seed=args.seed)
    messages = [{"role": "user", "content": args.prompt}]
    columns = ([("base: " + base, None)] if args.base else []) + [
        (j.id, j.result["adapter_dir"]) for j in jobs
    ]
    answers = []
    like = jobs[0].result["adapter_dir"] if jobs else None  # the base answers in the runs' number format
    for label, adapter in columns:
        loaded, mode = pool.use(base, adapter, like=like)
        with mode:
            answers.append({"who": label, "answer": generate(loaded, messages, decoding=decoding)})
    _out(
        args,
        {"prompt": args.prompt, "base_model": base, "answers": answers},
        "\n\n".join(f"== {a['who']}\n{a['answer']}" for a in answers),
    )
    return 0


def _short(text: str, n: int) -> str:
    """One line of at most ``n`` characters, for a table cell."""
    line = " ".join(str(text).split())
    return line if len(line) <= n else line[: n - 1] + "…"


def cmd_votes_list(args: argparse.Namespace) -> int:
    from backend.core.store import VoteStore
    from backend.serving.votes import counts_text, preference_rows, vote_view

    _, store, _ = _ctx()
    votes = VoteStore(store).votes()
    rows = [vote_view(v) for v in votes]
    if not rows:
        _out(args, rows, "No blind-test votes yet. Vote in the web app: Compare > Blind test.")
        return 0
    table = [("time", "prompt", "A", "B", "winner", "better answer")] + [
        (
            r["time"].replace("T", " ")[:16],
            _short(r["prompt"], 40),
            r["a"],
            r["b"],
            r["winner"],
            "yes" if r["better_answer"] else "no",
        )
        for r in rows
    ]
    widths = [max(len(line[i]) for line in table) for i in range(len(table[0]))]
    lines = [
        "  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip() for line in table
    ]
    _, counts = preference_rows(votes)
    lines.append(f"\n{counts_text(counts)} Make a dataset of them: tunedeck votes export")
    _out(args, rows, "\n".join(lines))
    return 0


def cmd_votes_export(args: argparse.Namespace) -> int:
    from backend.serving.votes import counts_text, export_votes

    paths, store, _ = _ctx()
    record, report, counts = export_votes(store, paths, name=args.name)
    _out(
        args,
        views.dataset_view(record) | {"report": report.as_dict(), "votes": counts},
        f"Added dataset {record.name} ({record.id}), shape {record.info['shape']}: {counts_text(counts)} "
        f"Import: {report.summary()}" + "".join(f"\nnote: {n}" for n in report.notes),
    )
    return 0


def cmd_manager(args: argparse.Namespace) -> int:
    import logging

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    _, _, manager = _ctx()
    manager.run(threading.Event(), until_idle=args.until_idle)
    return 0


# -- parsing -------------------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--json", action="store_true", help="print machine-readable JSON")
    p = argparse.ArgumentParser(
        prog="tunedeck", description="Fine-tune an open LLM on your own examples.", parents=[common]
    )
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    s = sub.add_parser("serve", parents=[common], help="run the web app")
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=int, default=7860)
    s.add_argument("--share", action="store_true", help="also ask Gradio for a public share link")
    s.add_argument(
        "--allow-no-password",
        action="store_true",
        help="allow a non-local address or share link without TUNEDECK_PASSWORD (not recommended)",
    )
    s.set_defaults(func=cmd_serve)

    d = sub.add_parser("data", parents=[common], help="datasets").add_subparsers(
        dest="data_cmd", required=True
    )
    da = d.add_parser(
        "add", parents=[common], help="import a CSV/TSV, Excel, JSON, JSONL or Parquet file as a dataset"
    )
    da.add_argument("file")
    da.add_argument("--name")
    da.add_argument(
        "--shape",
        choices=["prompt_response", "chat", "text", "preference", "feedback"],
        help="default: detected from the file. preference: a better and a worse answer per prompt (DPO, ORPO); "
        "feedback: answers marked good or bad (KTO)",
    )
    for col, what in (
        ("prompt", "the prompt"),
        ("response", "the response"),
        ("system", "a system prompt"),
        ("context", "a context/input added to the prompt"),
        ("messages", "the conversations (chat)"),
        ("text", "the text (plain-text shape)"),
        ("chosen", "the better answers (preference)"),
        ("rejected", "the worse answers (preference)"),
        ("completion", "the answers (feedback)"),
        ("label", "good/bad marks (feedback)"),
    ):
        da.add_argument(f"--{col}-col", metavar="COLUMN", help=f"column with {what}; 'none' for no column")
    da.add_argument("--sheet", help="Excel: the sheet to read (default: the first)")
    da.add_argument(
        "--validation-file", metavar="FILE", help="a separate validation file with the same columns"
    )
    da.add_argument("--no-validation", action="store_true", help="no automatic validation split")
    da.add_argument("--seed", type=int, default=42, help="seed of the automatic validation split")
    da.add_argument(
        "--model", default="tiny-offline", help="the tokenizer that measures lengths (with --max-length)"
    )
    da.add_argument(
        "--max-length", type=int, help="measure every example and handle longer ones (see --over-length)"
    )
    da.add_argument("--over-length", choices=["truncate", "drop"], default="truncate")
    da.add_argument(
        "--system-prompt", default="", help="used where a row has no system prompt (for measuring)"
    )
    da.set_defaults(func=cmd_data_add)
    dl = d.add_parser("list", parents=[common], help="list datasets")
    dl.set_defaults(func=cmd_data_list)
    dsh = d.add_parser("show", parents=[common], help="a dataset's mapping, report and first rows")
    dsh.add_argument("dataset", help="dataset name or id")
    dsh.add_argument("--rows", type=int, default=5)
    dsh.add_argument("--model", help="also count tokens and show the first example rendered for this model")
    dsh.add_argument("--max-length", type=int)
    dsh.add_argument("--system-prompt", default="")
    dsh.set_defaults(func=cmd_data_show)
    dr = d.add_parser("rename", parents=[common], help="rename a dataset")
    dr.add_argument("dataset")
    dr.add_argument("new_name")
    dr.set_defaults(func=cmd_data_rename)
    drm = d.add_parser(
        "rm", parents=[common], help="delete a dataset (refused while a queued or running job uses it)"
    )
    drm.add_argument("dataset")
    drm.set_defaults(func=cmd_data_rm)
    de = d.add_parser("export", parents=[common], help="write a dataset as CSV (formula-like cells escaped)")
    de.add_argument("dataset")
    de.add_argument("target", metavar="FILE.csv")
    de.set_defaults(func=cmd_data_export)

    t = sub.add_parser("train", parents=[common], help="queue a training job")
    t.add_argument("dataset", help="dataset name or id")
    t.add_argument(
        "--preset",
        help="a preset from presets/ (default: smollm2-135m, a real model that trains on a CPU offline; on a GPU "
        "with the Hub, qwen2.5-0.5b-qlora); tiny-offline trains in seconds but learns only by heart",
    )
    t.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a setting (repeatable)")
    t.add_argument("--wait", action="store_true", help="wait for the job; exit 0 only if it succeeded")
    t.set_defaults(func=cmd_train)
    es = sub.add_parser(
        "estimate",
        parents=[common],
        help="the time and memory `train` with these arguments would take, and whether it fits (exit 3 if not)",
    )
    es.add_argument("dataset", help="dataset name or id")
    es.add_argument("--preset", help="as for train")
    es.add_argument("--set", action="append", metavar="KEY=VALUE", help="as for train (repeatable)")
    es.set_defaults(func=cmd_estimate)

    j = sub.add_parser("jobs", parents=[common], help="list jobs")
    j.set_defaults(func=cmd_jobs)
    sh = sub.add_parser("show", parents=[common], help="one job in detail")
    sh.add_argument("job")
    sh.set_defaults(func=cmd_show)
    c = sub.add_parser("cancel", parents=[common], help="cancel a queued or running job")
    c.add_argument("job")
    c.add_argument("--timeout", type=float, default=60, help="seconds to wait for it to stop")
    c.set_defaults(func=cmd_cancel)
    r = sub.add_parser(
        "resume",
        parents=[common],
        help="continue a cancelled, failed or crashed job from its last checkpoint (as a new job)",
    )
    r.add_argument("job")
    r.add_argument(
        "--set", action="append", metavar="KEY=VALUE", help="change a setting, e.g. max_steps (repeatable)"
    )
    r.add_argument("--wait", action="store_true", help="wait for it; exit 0 only if it succeeded")
    r.set_defaults(func=cmd_resume)

    g = sub.add_parser("generate", parents=[common], help="ask a fine-tuned run or a base model")
    who = g.add_mutually_exclusive_group(required=True)
    who.add_argument("job", nargs="?", help="a finished job's id")
    who.add_argument("--base", metavar="MODEL", help="a base model instead of a job")
    g.add_argument("--prompt", required=True)
    g.add_argument("--system", default="")
    g.add_argument("--max-new-tokens", type=int, default=128)
    g.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (reproducible)")
    g.add_argument("--seed", type=int, default=0)
    g.set_defaults(func=cmd_generate)

    e = sub.add_parser(
        "export", parents=[common], help="export a run's adapter (zip + model card), merged model, or GGUF"
    )
    e.add_argument("run")
    e.add_argument("--to", required=True, metavar="DIR")
    kind = e.add_mutually_exclusive_group()
    kind.add_argument(
        "--merged", action="store_true", help="merge the adapter into the base model (safetensors)"
    )
    kind.add_argument(
        "--space", action="store_true", help="a Hugging Face Space bundle (app.py, requirements.txt)"
    )
    kind.add_argument(
        "--gguf",
        action="store_true",
        help="one GGUF file for llama.cpp / Ollama / LM Studio, with a Modelfile",
    )
    e.add_argument(
        "--quant", metavar="TYPE", help="the GGUF's number format: f16, bf16, q8_0 (default) or q4_k_m"
    )
    e.add_argument(
        "--pre-tokenizer",
        metavar="NAME",
        help="for a tokenizer llama.cpp's converter does not recognize: how it splits text (e.g. qwen2, llama-bpe)",
    )
    e.add_argument(
        "--check-answers",
        action="store_true",
        help="compare llama.cpp's answers with transformers' even for a model over 2 B parameters (slow on a CPU)",
    )
    e.set_defaults(func=cmd_export)
    pu = sub.add_parser(
        "push", parents=[common], help="upload a run to the Hugging Face Hub (token from HF_TOKEN)"
    )
    pu.add_argument("run")
    pu.add_argument("--repo", required=True, metavar="OWNER/NAME")
    pu.add_argument("--merged", action="store_true")
    pu.add_argument("--public", action="store_true", help="make the repository public (default: private)")
    pu.set_defaults(func=cmd_push)
    dm = sub.add_parser("demo", parents=[common], help="publish a password-protected chat demo of a run")
    dms = dm.add_subparsers(dest="demo_cmd", required=True)
    ds = dms.add_parser(
        "start", parents=[common], help="start a demo (prints its URL and, if generated, password)"
    )
    ds.add_argument("run")
    ds.add_argument("--password", help="at least 8 characters; default: a generated one, shown once")
    ds.add_argument("--share", action="store_true", help="also ask Gradio for a public share link (72 h)")
    ds.add_argument("--share-server-address", metavar="HOST:PORT", help="your own share (frp) server")
    ds.add_argument("--port", type=int)
    ds.add_argument("--host", default="127.0.0.1")
    ds.set_defaults(func=cmd_demo_start)
    dst = dms.add_parser("stop", parents=[common], help="stop a run's demo")
    dst.add_argument("run")
    dst.set_defaults(func=cmd_demo_stop)
    dml = dms.add_parser("list", parents=[common], help="running demos")
    dml.set_defaults(func=cmd_demo_list)

    ev = sub.add_parser("eval", parents=[common], help="score a run and its base model on held-out examples")
    ev.add_argument("run")
    ev.add_argument("--limit", type=int, default=64, help="examples to score (a seeded sample)")
    ev.add_argument("--max-new-tokens", type=int, default=128)
    ev.set_defaults(func=cmd_eval)
    cp = sub.add_parser(
        "compare", parents=[common], help="answer one prompt with several runs (and the base)"
    )
    cp.add_argument("runs", nargs="+", metavar="RUN")
    cp.add_argument("--prompt", required=True)
    cp.add_argument("--base", action="store_true", help="also answer with the base model alone")
    cp.add_argument("--max-new-tokens", type=int, default=128)
    cp.add_argument("--temperature", type=float, default=0.0)
    cp.add_argument("--seed", type=int, default=0)
    cp.set_defaults(func=cmd_compare)

    vo = sub.add_parser(
        "votes", parents=[common], help="the Compare tab's blind-test votes, and a dataset of them"
    )
    vos = vo.add_subparsers(dest="votes_cmd", required=True)
    vol = vos.add_parser("list", parents=[common], help="every vote: the prompt, A, B, who won")
    vol.set_defaults(func=cmd_votes_list)
    voe = vos.add_parser(
        "export",
        parents=[common],
        help="save the votes as a preference dataset (better and worse answer per prompt) for dpo or orpo",
    )
    voe.add_argument("--name", help="the dataset's name (default: votes-<today's date>)")
    voe.set_defaults(func=cmd_votes_export)

    m = sub.add_parser("manager", parents=[common], help="run the job scheduler (the app runs one itself)")
    m.add_argument("--until-idle", action="store_true", help="exit when nothing is queued or running")
    m.set_defaults(func=cmd_manager)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        load_settings()  # every TUNEDECK_* setting checked once, all problems reported together
        return int(args.func(args) or 0)
    except TuneDeckError as exc:  # a problem with its fix, whichever part of TuneDeck found it
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # noqa: BLE001 - the CLI shows a message, not a traceback
        print(f"error: {explain(exc)}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
