"""How much does generating through TuneDeck cost, compared with calling ``model.generate`` yourself?

    .venv/bin/python bench/bench_generate.py [--reps 7] [--tokens 64] [--hidden 512] [--layers 8]

Builds a random-weight Llama of the given size (tiny-offline's tokenizer), then, interleaved rep by rep:
  raw:      AutoModelForCausalLM + TextIteratorStreamer in this process (what a script would do), greedy;
  tunedeck: the same prompt through ModelClient -> the model server process (what the Chat tab uses).
Both generate exactly ``--tokens`` tokens (EOS suppressed by a random model's luck is not relied on: we check the
counts). Reports medians of total time and time to first token, and the ratio tunedeck / raw. Model loading is
excluded (warm-up rep first). Writes a section to bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from backend.logs import quiet_hf  # noqa: E402
from backend.settings import Paths  # noqa: E402

PROMPT = [{"role": "user", "content": "Write a short note about the weather in spring."}]


def build_model(folder: Path, tiny: Path, hidden: int, layers: int) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig

    tok = AutoTokenizer.from_pretrained(tiny)
    cfg = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=hidden,
        intermediate_size=hidden * 8 // 3 // 8 * 8,
        num_hidden_layers=layers,
        num_attention_heads=max(1, hidden // 64),
        num_key_value_heads=max(1, hidden // 64),
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
        tie_word_embeddings=True,
    )
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(cfg, dtype=torch.float32)
    # Never end early: make EOS impossible so both sides generate exactly the same number of tokens.
    model.generation_config.suppress_tokens = [tok.eos_token_id]
    model.save_pretrained(folder)
    tok.save_pretrained(folder)


def raw_once(model, tok, n: int) -> tuple[float, float, int]:
    import torch
    from transformers import TextIteratorStreamer

    enc = tok.apply_chat_template(PROMPT, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    streamer = TextIteratorStreamer(tok, skip_prompt=True, skip_special_tokens=True)
    out: list = []

    def run():
        with torch.inference_mode():
            out.append(
                model.generate(
                    **enc,
                    max_new_tokens=n,
                    min_new_tokens=n,
                    do_sample=False,
                    streamer=streamer,
                    pad_token_id=tok.pad_token_id,
                )
            )

    t0 = time.perf_counter()
    th = threading.Thread(target=run)
    th.start()
    first, text = None, ""
    for piece in streamer:
        if first is None and piece:
            first = time.perf_counter() - t0
        text += piece
    th.join()
    total = time.perf_counter() - t0
    return total, first or total, int(out[0].shape[1] - enc["input_ids"].shape[1]), text


def tunedeck_once(client, folder: Path, n: int) -> tuple[float, float, str]:
    t0 = time.perf_counter()
    first, text = None, ""
    for text in client.stream(str(folder), None, PROMPT, max_new_tokens=n):  # noqa: B007 - keeps the last
        if first is None:
            first = time.perf_counter() - t0
    total = time.perf_counter() - t0
    return total, first or total, text


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reps", type=int, default=7)
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--hidden", type=int, default=512)
    ap.add_argument("--layers", type=int, default=8)
    ap.add_argument("--no-write", action="store_true", help="print only; do not update bench/RESULTS.md")
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    quiet_hf()
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from backend.models import registry as models
    from backend.models import tiny as tinymodel
    from backend.serving.modelclient import ModelClient

    work = Path(tempfile.mkdtemp(prefix="tunedeck-bench-gen-"))
    try:
        os.environ["TUNEDECK_HOME"] = str(work / "home")
        paths = Paths.from_env()
        tiny = tinymodel.build(models.tiny_model_dir(paths))
        folder = work / "model"
        build_model(folder, tiny, args.hidden, args.layers)
        n_params = sum(p.numel() for p in AutoModelForCausalLM.from_pretrained(folder).parameters())
        model = AutoModelForCausalLM.from_pretrained(folder).eval()
        tok = AutoTokenizer.from_pretrained(folder)
        client = ModelClient(paths)
        # The model server loads the model with the same generation_config (EOS suppressed); ask for min tokens
        # by asking for exactly n: with EOS suppressed it cannot stop early.
        raw_once(model, tok, args.tokens)
        tunedeck_once(client, folder, args.tokens)  # warm-up: loads the model in the server
        raw_t, raw_f, td_t, td_f, counts, same = [], [], [], [], set(), True
        for _ in range(args.reps):
            t, f, c, raw_text = raw_once(model, tok, args.tokens)
            raw_t.append(t)
            raw_f.append(f)
            counts.add(c)
            t, f, td_text = tunedeck_once(client, folder, args.tokens)
            td_t.append(t)
            td_f.append(f)
            same = same and td_text == raw_text
        client.close()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    med = statistics.median
    ratio = med(td_t) / med(raw_t)
    lines = [
        f"model: random Llama, hidden {args.hidden}, {args.layers} layers, {n_params / 1e6:.1f} M parameters, fp32, CPU",
        f"prompt: one user message; greedy; {args.tokens} new tokens (raw generated {sorted(counts)}; TuneDeck's "
        f"text identical to raw's in every rep: {'yes' if same else 'NO'}); "
        f"{args.reps} interleaved reps after a warm-up (model load excluded)",
        "",
        "| path | median total (s) | median time to first token (s) | tokens/s |",
        "| --- | --- | --- | --- |",
        f"| raw `model.generate` + streamer | {med(raw_t):.3f} | {med(raw_f):.3f} | {args.tokens / med(raw_t):.1f} |",
        f"| TuneDeck (model server via ModelClient) | {med(td_t):.3f} | {med(td_f):.3f} | {args.tokens / med(td_t):.1f} |",
        "",
        f"TuneDeck / raw total time: **{ratio:.3f}** (target ≤ 1.10); time to first token "
        f"{med(td_f) * 1000:.0f} ms vs {med(raw_f) * 1000:.0f} ms.",
    ]
    report = "\n".join(lines)
    print(report)
    if not args.no_write:
        write_section(
            "Generation overhead", report, " ".join(["python bench/bench_generate.py", *sys.argv[1:]])
        )
    return 0


def write_section(title: str, body: str, command: str) -> None:
    """Replace (or add) one '## title' section of bench/RESULTS.md, keeping the others."""
    path = Path(__file__).resolve().parent / "RESULTS.md"
    text = path.read_text() if path.exists() else "# Benchmark results\n"
    machine = (
        f"Machine: {platform.machine()}, {os.cpu_count()} CPU cores, Python {platform.python_version()}, "
        f"no GPU. Measured {time.strftime('%Y-%m-%d')}. Command: `{command}`."
    )
    section = f"## {title}\n\n{machine}\n\n{body}\n"
    start = text.find(f"## {title}\n")
    if start >= 0:
        end = text.find("\n## ", start + 1)
        text = text[:start] + section + (text[end + 1 :] if end >= 0 else "")
    else:
        text = text.rstrip("\n") + "\n\n" + section
    path.write_text(text)


if __name__ == "__main__":
    sys.exit(main())
