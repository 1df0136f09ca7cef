"""Export a finished run as one GGUF file for llama.cpp, Ollama and LM Studio, with a Modelfile and a check.

``plan`` checks everything that can be checked without torch, before any work: the run has an adapter, the type is
one we make, llama.cpp's converter is installed and knows the base's architecture, the disk has room. ``export_gguf``
(a worker process: ``tunedeck export RUN --gguf``) then

1. merges the adapter into the unquantized base (as ``export_merged`` does) into a folder inside a hidden
   ``.partial`` folder beside the target,
2. writes the chat template the run was trained with into it: TRL's ``{% generation %}`` markers removed (they
   render nothing) and the run's system prompt made the template's default, so a chat without a system message is
   prompted as training prompted it,
3. converts it with llama.cpp's own ``convert_hf_to_gguf.py`` (f16, bf16, q8_0) and, for q4_k_m, quantizes the f16
   file with llama.cpp's own quantizer (through llama-cpp-python's binding of ``llama_model_quantize``),
4. checks the result: the prompt text that training, TuneDeck's chat, the template inside the GGUF (rendered as
   llama-cpp-python renders it) and the Modelfile's TEMPLATE give for a set of conversations, the tokens llama.cpp
   makes of it, and (for models up to ``ANSWER_CHECK_MAX_PARAMS``) the greedy answers of llama.cpp against
   transformers with the merged model,
5. writes ``Modelfile`` and a README saying how to run it and what the check found, and renames the folder into place.

A failure or a cancel (SIGTERM) removes the ``.partial`` folder; nothing half-written is left under the target name.
Progress goes to stderr as ``export NN% what`` lines (``PROGRESS_PREFIX``) for the Share tab.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from backend.core.store import JobRecord, Store
from backend.data.chatformat import common_prefix
from backend.models import runcard
from backend.serving import ollama
from backend.serving.export import ExportError, finished_run
from backend.settings import Paths

PROGRESS_PREFIX = "export "
# Above this size the export skips comparing answers with transformers (minutes of CPU per answer for a 7B model);
# the template and token checks still run. `--check-answers` asks for it anyway.
ANSWER_CHECK_MAX_PARAMS = 2_000_000_000
ANSWER_TOKENS = 24
CLOSE_AGREEMENT = 0.95  # q8_0 on the starter model: 97 %; q4_k_m: 87 % (bench/RESULTS.md)
CHECK_PROMPTS = [
    [{"role": "user", "content": "What is the capital of France?"}],
    [{"role": "user", "content": "Write one sentence about the sea."}],
    [
        {"role": "user", "content": "Hi!"},
        {"role": "assistant", "content": "Hello! How can I help?"},
        {"role": "user", "content": "Tell me a short fact."},
    ],
]


@dataclass(frozen=True)
class Quant:
    name: str
    outtype: str  # what the converter writes
    bits: float  # bits per weight, for the size estimate
    llama_ftype: int | None  # then quantized from the f16 file by llama.cpp (LLAMA_FTYPE_*)
    about: str


QUANTS = {
    q.name: q
    for q in (
        Quant(
            "f16", "f16", 16, None, "16-bit floats: the closest to TuneDeck's own answers; the largest file"
        ),
        Quant(
            "bf16",
            "bf16",
            16,
            None,
            "16-bit brain floats: as large as f16; for runtimes and CPUs that use bf16",
        ),
        Quant("q8_0", "q8_0", 8.5, None, "8-bit: about half of f16, answers nearly always the same"),
        Quant(
            "q4_k_m", "f16", 4.9, 15, "4-bit (llama.cpp's Q4_K_M): about a third of f16; answers can drift"
        ),
    )
}


@dataclass
class Plan:
    job: JobRecord
    quant: Quant
    folder: Path  # where the export ends up
    partial: Path  # where it is written first
    gguf_name: str
    base_dir: Path
    architecture: str
    params: int
    need_bytes: int
    pre_tokenizer: str | None = None


@dataclass
class GgufExport:
    folder: Path
    gguf: Path
    modelfile: Path
    readme: Path
    quant: str
    size_bytes: int
    seconds: float
    template_differences: list[dict] = field(default_factory=list)
    tokens_match: bool | None = None
    token_differences: list[dict] = field(default_factory=list)
    answers: list[dict] = field(default_factory=list)
    # every answer identical, or llama.cpp ranks transformers' next token first at least CLOSE_AGREEMENT of the time
    answers_close: bool | None = None
    notes: list[str] = field(default_factory=list)

    def view(self) -> dict[str, Any]:
        out = asdict(self)
        return {k: str(v) if isinstance(v, Path) else v for k, v in out.items()}


def converter_dir() -> Path:
    """llama.cpp's converter, unpacked by scripts/gguf-converter.sh from the llama-cpp-python source package."""
    return Path(
        os.environ.get("TUNEDECK_GGUF_CONVERTER") or Path(sys.prefix) / "share" / "tunedeck" / "llama.cpp"
    )


def supported_architectures(conv: Path) -> set[str]:
    """The ``architectures`` names (config.json) the converter registers a class for, read from its source."""
    names: set[str] = set()
    for f in sorted((conv / "conversion").glob("*.py")):
        for args in re.findall(r"@ModelBase\.register\(([^)]*)\)", f.read_text(encoding="utf-8")):
            names.update(re.findall(r"[\"']([\w.-]+)[\"']", args))
    return names


def _base_folder(job: JobRecord, paths: Paths) -> Path:
    from backend.models import registry as models

    try:
        ref = models.check_available(job.config["base_model"], paths)
        models.materialize(ref)
    except models.ModelError as exc:
        raise ExportError(str(exc)) from None
    if ref.kind == "hub":
        found = models.hub_cached_file(ref.location, "config.json")
        if not found:
            raise ExportError(
                f"The base model {ref.location} is not on this machine. Fix: download it once "
                f"(`huggingface-cli download {ref.location}`) and export again."
            )
        return Path(found).parent
    return Path(ref.location)


def _weights_bytes(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.glob("*.safetensors")) or sum(
        f.stat().st_size for f in folder.glob("*.bin")
    )


def _param_count(folder: Path, weights_bytes: int) -> int:
    """Parameters from the checkpoint's size and dtype (config's torch_dtype/dtype; fp32 when unsaid)."""
    cfg = json.loads((folder / "config.json").read_text())
    dtype = str(cfg.get("dtype") or cfg.get("torch_dtype") or "float32")
    return weights_bytes // (2 if "16" in dtype else 4)


def plan(
    store: Store,
    paths: Paths,
    run_id: str,
    dest: str | Path,
    quant: str = "q8_0",
    pre_tokenizer: str | None = None,
) -> Plan:
    """Every check that needs no torch, in the order a person would fix them (see the module docstring)."""
    if quant not in QUANTS:
        raise ExportError(
            f"{quant!r} is not a GGUF type TuneDeck makes. Fix: use one of {', '.join(QUANTS)} "
            "(q8_0 is a good default; f16 answers closest to TuneDeck's chat)."
        )
    q = QUANTS[quant]
    job = finished_run(store, run_id)
    conv = converter_dir()
    if not (conv / "convert_hf_to_gguf.py").is_file():
        raise ExportError(
            f"llama.cpp's GGUF converter is not installed (looked in {conv}). Fix: run `bash scripts/install.sh` "
            "(it unpacks the converter from the llama-cpp-python source package)."
        )
    base_dir = _base_folder(job, paths)
    cfg = json.loads((base_dir / "config.json").read_text())
    archs = cfg.get("architectures") or []
    known = supported_architectures(conv)
    arch = next((a for a in archs if a in known), None)
    if arch is None:
        raise ExportError(
            f"llama.cpp's converter does not know the architecture of {job.config['base_model']} "
            f"({', '.join(archs) or 'none named in config.json'}), so it cannot be written as GGUF. Fix: export the "
            "merged model (`tunedeck export RUN --merged`) for transformers or vLLM, or train on a Llama-, Qwen2- "
            "or SmolLM2-family model."
        )
    if job.config.get("base_model") == "tiny-offline":
        pre_tokenizer = pre_tokenizer or "gpt-2"
    if pre_tokenizer and pre_tokenizer not in (names := known_pretokenizers(conv)):
        raise ExportError(
            f"{pre_tokenizer!r} is not a pre-tokenizer llama.cpp knows. Fix: use one of "
            f"{', '.join(sorted(names)[:12])}, … (or leave it out)."
        )
    weights = _weights_bytes(base_dir)
    params = _param_count(base_dir, weights)
    gguf_bytes = int(params * q.bits / 8)
    # the merged safetensors (the base's own dtype), the f16 file a 4-bit type is made from, and the result
    need = weights + (params * 2 if q.llama_ftype else 0) + gguf_bytes + 64 * 2**20
    dest = Path(dest).expanduser()
    dest.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(dest).free
    if free < need:
        raise ExportError(
            f"Not enough disk space in {dest}: exporting {job.id} as {quant} needs about {_size(need)} while it is "
            f"written ({_size(gguf_bytes)} is kept), and {_size(free)} is free. Fix: free some space, pick a smaller "
            "type (q8_0 or q4_k_m), or export to another folder (`--to DIR`)."
        )
    name = f"{job.id}-{quant}"
    return Plan(
        job,
        q,
        dest / f"{name}-gguf",
        dest / f".{name}-gguf.partial",
        f"{name}.gguf",
        base_dir,
        arch,
        params,
        need,
        pre_tokenizer,
    )


def _size(n: float) -> str:
    return f"{n / 2**30:.1f} GB" if n >= 2**30 else f"{n / 2**20:.0f} MB"


def command(run_id: str, quant: str, dest: str | Path) -> list[str]:
    """The export as a command line (``python -m backend export … --gguf``): how the Share tab and the bench run it."""
    return [sys.executable, "-m", "backend", "export", run_id, "--gguf", "--quant", quant, "--to", str(dest)]


def say(percent: int, what: str) -> None:
    print(f"{PROGRESS_PREFIX}{percent}% {what}", file=sys.stderr, flush=True)


# -- the template that goes into the file ------------------------------------------------------------------------

_GENERATION_TAG = re.compile(r"\{%-?\s*(end)?generation\s*-?%\}")


def export_template(template: str, system_prompt: str) -> str:
    """The chat template for the GGUF: TRL's generation markers removed, the run's system prompt as its default."""
    out = _GENERATION_TAG.sub("", template)
    if system_prompt:
        default = json.dumps(system_prompt, ensure_ascii=False)
        out = (
            "{%- if not messages or messages[0]['role'] != 'system' %}"
            f"{{%- set messages = [{{'role': 'system', 'content': {default}}}] + messages %}}"
            "{%- endif %}" + out
        )
    return out


def _write_tokenizer_files(folder: Path, template: str | None, chat: bool) -> None:
    """Put the export's template where the converter reads it; training never added a BOS by itself to chat text."""
    cfg_path = folder / "tokenizer_config.json"
    cfg = json.loads(cfg_path.read_text()) if cfg_path.is_file() else {}
    cfg.pop("chat_template", None)
    if chat:
        cfg["add_bos_token"] = False  # the template writes any BOS it wants, as it did in training
    cfg_path.write_text(json.dumps(cfg, indent=2, ensure_ascii=False))
    if template is not None:
        (folder / "chat_template.jinja").write_text(template, encoding="utf-8")


# -- converting --------------------------------------------------------------------------------------------------

# The converter recognizes a tokenizer's pre-tokenizer (how text is split before BPE) by a hash of its output on a
# test text, so it cannot know a tokenizer made on this machine (tiny-offline's: GPT-2's byte-level split, see
# backend.models.tiny) or one it has not seen. Told the name (`--pre-tokenizer`), it runs with that; whether the name
# was right is checked after: llama.cpp must then split the test prompts into exactly the tokens training used.
_NAMED_PRETOKENIZER = (
    "import runpy, sys\n"
    "conv, name = sys.argv.pop(1), sys.argv.pop(1)\n"
    "sys.path[:0] = [conv + '/gguf-py', conv]\n"
    "import conversion.base as base\n"
    "base.TextModel.get_vocab_base_pre = lambda self, tokenizer: name\n"
    "sys.argv[0] = conv + '/convert_hf_to_gguf.py'\n"
    "runpy.run_path(sys.argv[0], run_name='__main__')\n"
)


def known_pretokenizers(conv: Path) -> set[str]:
    """The pre-tokenizer names the converter can write (and so llama.cpp of the same version can read)."""
    return set(
        re.findall(r'res = "([\w.-]+)"', (conv / "conversion" / "base.py").read_text(encoding="utf-8"))
    )


def _convert(plan_: Plan, hf: Path, out: Path, lo: int, hi: int) -> None:
    conv = converter_dir()
    args = [str(hf), "--outtype", plan_.quant.outtype, "--outfile", str(out)]
    if plan_.pre_tokenizer:
        cmd = [sys.executable, "-c", _NAMED_PRETOKENIZER, str(conv), plan_.pre_tokenizer, *args]
    else:
        cmd = [sys.executable, str(conv / "convert_hf_to_gguf.py"), *args]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("PYTHONPATH", None)  # the converter brings its own gguf-py; ours must not shadow it
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, cwd=str(hf.parent)
    )
    tail: list[str] = []
    last = -1
    buf = b""
    assert proc.stdout is not None
    while chunk := proc.stdout.read1(4096):  # type: ignore[attr-defined]
        buf += chunk
        *lines, buf = re.split(rb"[\r\n]", buf)
        for raw in lines:
            line = raw.decode(errors="replace").strip()
            if not line:
                continue
            tail = [*tail[-20:], line]
            m = re.match(r"Writing:\s+(\d+)%", line)
            if m and int(m.group(1)) != last:
                last = int(m.group(1))
                say(lo + (hi - lo) * last // 100, "writing the GGUF file")
    if proc.wait() != 0:
        if any("pre-tokenizer was not recognized" in x for x in tail):
            raise ExportError(
                f"llama.cpp's converter does not recognize the tokenizer of {plan_.job.config.get('base_model')} "
                "(it knows tokenizers by a fingerprint, and this one is new to it). Fix: if you know which family's "
                "text splitting it uses, name it with `--pre-tokenizer` (e.g. llama-bpe, qwen2, gpt-2; the export "
                "then checks the tokens match training), or export the merged model (`--merged`)."
            )
        error = next(
            (x for x in reversed(tail) if "Error" in x or "error" in x.lower()), tail[-1] if tail else ""
        )
        raise ExportError(
            f"llama.cpp's converter failed on {plan_.job.id}: {error[:400]}. Fix: export the merged model "
            "(`tunedeck export RUN --merged`) instead, and report this with the run's base model."
        )


def _quantize(src: Path, out: Path, ftype: int) -> None:
    import ctypes

    import llama_cpp

    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = ftype
    params.nthread = os.cpu_count() or 1
    rc = llama_cpp.llama_model_quantize(str(src).encode(), str(out).encode(), ctypes.byref(params))
    if rc != 0:
        raise ExportError(f"llama.cpp could not quantize {src.name} (code {rc}). Fix: export as q8_0 or f16.")


# -- checking ----------------------------------------------------------------------------------------------------


def _runtime_template(llm: Any) -> Callable[[list[dict]], str]:
    """The GGUF's own template, rendered as llama-cpp-python renders it for a chat (with the file's BOS/EOS)."""
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter

    template = llm.metadata.get("tokenizer.chat_template")
    if not template:
        raise ExportError("the GGUF file has no chat template")
    fmt = Jinja2ChatFormatter(
        template=template,
        eos_token=llm.detokenize([llm.token_eos()], special=True).decode(errors="replace"),
        bos_token=llm.detokenize([llm.token_bos()], special=True).decode(errors="replace"),
    )
    return lambda conv: fmt(messages=conv).prompt


def _greedy_llama(llm: Any, ids: list[int], n: int) -> list[int]:
    out: list[int] = []
    for tok in llm.generate(ids, temp=0.0, top_k=1, top_p=1.0, repeat_penalty=1.0, reset=True):
        if is_end_of_turn(llm, tok):
            break
        out.append(tok)
        if len(out) >= n:
            break
    return out


def _next_token_agreement(llm: Any, prompt: list[int], answer: list[int]) -> float | None:
    """The share of ``answer``'s tokens that llama.cpp also ranks first, each given the same text before it.

    Greedy answers part for good at the first near-tie, so "same first N tokens" says little about a quantized
    file; this measures every position of one answer, teacher-forced, as quantization studies do."""
    import numpy as np

    if not answer:
        return None
    llm.reset()
    llm.eval(prompt + answer)
    predicted = np.asarray(llm.scores[len(prompt) - 1 : len(prompt) + len(answer) - 1]).argmax(axis=-1)
    return round(float((predicted == np.asarray(answer)).mean()), 3)


def _close(answers: list[dict]) -> bool:
    agree = [a["next_token_agreement"] for a in answers if a.get("next_token_agreement") is not None]
    return all(a["identical"] for a in answers) or bool(agree and sum(agree) / len(agree) >= CLOSE_AGREEMENT)


def is_end_of_turn(llm: Any, token: int) -> bool:
    """llama.cpp's own test for a token that ends generation (EOS, EOT and the like), as its sampler uses it."""
    import llama_cpp

    return bool(llama_cpp.llama_vocab_is_eog(llm._model.vocab, token))


def _greedy_hf(model: Any, tokenizer: Any, ids: list[int], n: int) -> list[int]:
    import torch

    with torch.inference_mode():
        out = model.generate(
            torch.tensor([ids], device=model.device),
            attention_mask=torch.ones(1, len(ids), dtype=torch.long, device=model.device),
            max_new_tokens=n,
            do_sample=False,
            temperature=None,
            top_p=None,
            top_k=None,
            pad_token_id=tokenizer.pad_token_id
            if tokenizer.pad_token_id is not None
            else tokenizer.eos_token_id,
        )[0, len(ids) :].tolist()
    eos = set(_eos_ids(model, tokenizer))
    for i, t in enumerate(out):
        if t in eos:
            return out[:i]
    return out


def _eos_ids(model: Any, tokenizer: Any) -> list[int]:
    ids = model.generation_config.eos_token_id
    ids = ids if isinstance(ids, list) else [ids]
    return [i for i in [*ids, tokenizer.eos_token_id] if i is not None]


def _shown(text: str) -> str:
    """A token's or snippet's text for a person: in quotes, with line breaks and tabs made visible (no Python
    reprs or lists in a message)."""
    return "“" + text.replace("\n", "⏎").replace("\t", "⇥") + "”"


def _token_differences(llm: Any, tokenizer: Any, texts: list[str]) -> list[dict]:
    """Where llama.cpp's tokens for each text first differ from the training tokenizer's, shown as token texts."""
    out = []
    for n, text in enumerate(texts):
        got = llm.tokenize(text.encode(), add_bos=False, special=True)
        want = tokenizer(text, add_special_tokens=False)["input_ids"]
        if got == want:
            continue
        i = common_prefix(got, want)
        out.append(
            {
                "conversation": n,
                "text": tokenizer.decode(want[max(0, i - 2) : i + 3]),
                "training": [tokenizer.decode([t]) for t in want[i : i + 3]],
                "llama.cpp": [tokenizer.decode([t]) for t in got[i : i + 3]],
            }
        )
    return out


# -- the export --------------------------------------------------------------------------------------------------


def export_gguf(
    store: Store,
    paths: Paths,
    run_id: str,
    dest: str | Path,
    quant: str = "q8_0",
    *,
    check_answers: bool | None = None,
    pre_tokenizer: str | None = None,
) -> GgufExport:
    p = plan(store, paths, run_id, dest, quant, pre_tokenizer)
    started = time.monotonic()
    shutil.rmtree(p.partial, ignore_errors=True)  # a cancelled export's leftovers
    p.partial.mkdir(parents=True)
    previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        result = _moved(_export(p, store, paths, check_answers), p.partial, p.folder)
        result.seconds = round(time.monotonic() - started, 1)
        (p.partial / "check.json").write_text(json.dumps(result.view(), indent=2, ensure_ascii=False))
        if p.folder.exists():
            shutil.rmtree(p.folder)
        os.replace(p.partial, p.folder)
    finally:
        shutil.rmtree(p.partial, ignore_errors=True)
        signal.signal(signal.SIGTERM, previous)
    say(100, "done")
    return result


def _terminate(signum: int, frame: Any) -> None:  # noqa: ARG001 - the signal module's signature
    raise SystemExit(128 + signum)  # unwinds through the finally that removes the .partial folder


def _moved(r: GgufExport, old: Path, new: Path) -> GgufExport:
    def move(x: Path) -> Path:
        return new / x.relative_to(old)

    r.folder, r.gguf, r.modelfile, r.readme = new, move(r.gguf), move(r.modelfile), move(r.readme)
    return r


def _export(p: Plan, store: Store, paths: Paths, check_answers: bool | None) -> GgufExport:
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from backend.data.shapes import chat_messages
    from backend.serving.generate import Loaded, prompt_text

    job = p.job
    cfg = job.config
    system_prompt = cfg.get("system_prompt") or ""
    dataset = store.get_dataset(job.dataset_id)
    chat = (dataset.info.get("shape") if dataset else None) != "text"
    trust = bool(cfg.get("trust_remote_code", False))
    adapter = job.result["adapter_dir"]
    hf = p.partial / "merged"

    say(2, "loading the base model and the adapter")
    base = AutoModelForCausalLM.from_pretrained(p.base_dir, dtype="auto", trust_remote_code=trust)
    model = PeftModel.from_pretrained(base, adapter).merge_and_unload()
    model.eval()
    tokenizer = AutoTokenizer.from_pretrained(adapter, trust_remote_code=trust)
    say(10, "saving the merged model")
    model.save_pretrained(hf)
    tokenizer.save_pretrained(hf)
    template = tokenizer.chat_template if isinstance(tokenizer.chat_template, str) else None
    gguf_template = export_template(template, system_prompt) if template else None
    _write_tokenizer_files(hf, gguf_template, chat and template is not None)

    out = p.partial / p.gguf_name
    if p.quant.llama_ftype is None:
        say(20, "converting with llama.cpp's converter")
        _convert(p, hf, out, 20, 75)
    else:
        f16 = p.partial / "f16.gguf"
        say(20, "converting with llama.cpp's converter (f16 first)")
        _convert(p, hf, f16, 20, 55)
        say(58, "quantizing to 4-bit with llama.cpp")
        _quantize(f16, out, p.quant.llama_ftype)
        f16.unlink()
    shutil.rmtree(hf)  # not part of the export: `tunedeck export --merged` makes that one

    say(78, "checking the template and the tokens")
    from llama_cpp import Llama

    # logits_all: the answer check reads llama.cpp's prediction at every position of transformers' answer
    try:
        llm = Llama(
            str(out), n_ctx=1024, logits_all=True, verbose=False, seed=0, n_threads=os.cpu_count() or 1
        )
    except (
        ValueError
    ) as exc:  # the file was written but this llama.cpp cannot load it: not a file to hand out
        raise ExportError(
            f"llama.cpp could not load the GGUF it just wrote for {p.job.id} ({exc}). Fix: export the merged model "
            "(`tunedeck export RUN --merged`) instead, and report this with the run's base model."
        ) from None
    notes: list[str] = []
    eos_text = llm.detokenize([llm.token_eos()], special=True).decode(errors="replace")
    loaded = Loaded(model, tokenizer, cfg.get("base_model", ""), adapter, system_prompt)

    def training(
        conv: list[dict],
    ) -> str:  # as backend.training.prepare renders a chat row, with the prompt open
        msgs = chat_messages(json.dumps(conv), system_prompt)
        return tokenizer.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)

    differences: list[dict] = []
    token_differences: list[dict] = []
    tokens_match: bool | None = None
    mf: ollama.Modelfile | None = None
    if gguf_template is None:
        notes.append(
            "The model has no chat template: the GGUF has none, and the Modelfile passes prompts as they are."
        )
        modelfile_text = f'FROM ./{p.gguf_name}\nTEMPLATE """{{{{ .Prompt }}}}"""\nPARAMETER temperature 0\n'
    else:
        renderers: dict[str, Callable[[list[dict]], str]] = {
            "training": training,
            "TuneDeck's chat": lambda conv: prompt_text(loaded, conv),
            "the GGUF's template": _runtime_template(llm),
        }
        try:
            fmt = ollama.probe(lambda msgs, gen: render_as_trained(tokenizer, msgs, gen, system_prompt))
            mf = ollama.modelfile(p.gguf_name, fmt, eos_text)
            renderers["the Modelfile's TEMPLATE"] = lambda conv: ollama.render_go(
                mf.template, conv, mf.system
            )
            modelfile_text = mf.text
        except ollama.TemplateShapeError as exc:
            notes.append(
                f"The Modelfile's TEMPLATE cannot equal the chat template ({exc}); it uses the template inside the "
                "GGUF instead (Ollama reads it when a Modelfile has no TEMPLATE), which Ollama may not render exactly."
            )
            modelfile_text = f"FROM ./{p.gguf_name}\nPARAMETER temperature 0\n"
        differences = [asdict(d) for d in ollama.parity(renderers)]
        # the tokens llama.cpp makes of the prompt are the tokens training used
        token_differences = _token_differences(llm, tokenizer, [training(c) for c in ollama.CONVERSATIONS])
        tokens_match = not token_differences
        if token_differences:
            first = token_differences[0]
            notes.append(
                f"llama.cpp splits {len(token_differences)} of {len(ollama.CONVERSATIONS)} test prompts into other "
                f"tokens than training did, first at {_shown(first['text'])}: training made "
                f"{' + '.join(map(_shown, first['training']))}, llama.cpp "
                f"{' + '.join(map(_shown, first['llama.cpp']))}. Prompts with such text can get slightly different "
                "answers in llama.cpp and Ollama than in TuneDeck."
            )

    answers: list[dict] = []
    if check_answers is None:
        check_answers = p.params <= ANSWER_CHECK_MAX_PARAMS
    if check_answers and gguf_template is not None:
        say(85, "comparing answers: llama.cpp with the GGUF vs transformers with the merged model")
        if p.quant.name in ("f16", "bf16"):
            # the same weights on both sides: the file holds them rounded to 16 bits, so round transformers' copy too
            # (it still computes in its own dtype), and what is left to differ is the arithmetic of two libraries
            dtype = model.dtype
            model = model.to(torch.float16 if p.quant.name == "f16" else torch.bfloat16).to(dtype)
            notes.append(
                f"transformers' weights were rounded to {p.quant.name} as in the file for this comparison."
            )
        for conv in CHECK_PROMPTS:
            ids = tokenizer(training(conv), add_special_tokens=False)["input_ids"]
            with torch.inference_mode():
                want = _greedy_hf(model, tokenizer, ids, ANSWER_TOKENS)
            got = _greedy_llama(llm, ids, ANSWER_TOKENS)
            agree = _next_token_agreement(llm, ids, want)
            answers.append(
                {
                    "prompt": conv[-1]["content"],
                    "transformers": tokenizer.decode(want, skip_special_tokens=True),
                    "llama.cpp": tokenizer.decode(got, skip_special_tokens=True),
                    "same_tokens": common_prefix(want, got),
                    "of": max(len(want), len(got)),
                    "identical": want == got,
                    # along transformers' answer: how often llama.cpp's most likely next token is the one it chose
                    "next_token_agreement": agree,
                }
            )
    elif gguf_template is not None:
        notes.append(
            f"Answers were not compared (the model has {p.params / 1e9:.1f} B parameters; run with --check-answers)."
        )
    del llm

    (p.partial / "Modelfile").write_text(modelfile_text, encoding="utf-8")
    card = runcard.read(adapter)
    (p.partial / runcard.FILE).write_text(
        json.dumps({**card, "gguf": p.gguf_name, "quant": p.quant.name}, indent=2)
    )
    result = GgufExport(
        folder=p.partial,
        gguf=out,
        modelfile=p.partial / "Modelfile",
        readme=p.partial / "README.md",
        quant=p.quant.name,
        size_bytes=out.stat().st_size,
        seconds=0.0,
        template_differences=differences,
        tokens_match=tokens_match,
        token_differences=token_differences,
        answers_close=_close(answers) if answers else None,
        answers=answers,
        notes=notes,
    )
    result.readme.write_text(readme(p, result, mf), encoding="utf-8")
    say(98, "writing the Modelfile and the README")
    return result


def render_as_trained(tokenizer: Any, messages: list[dict], gen: bool, system_prompt: str) -> str:
    """The training template with the run's system prompt as default, for ``ollama.probe``."""
    from backend.data.shapes import with_system

    return tokenizer.apply_chat_template(
        with_system(messages, system_prompt), tokenize=False, add_generation_prompt=gen
    )


def readme(p: Plan, r: GgufExport, mf: ollama.Modelfile | None) -> str:
    name = p.job.id
    size = _size(r.size_bytes)
    lines = [
        f"# {name} as GGUF ({p.quant.name})",
        "",
        f"`{p.gguf_name}` ({size}): the run **{name}** (a LoRA fine-tune of `{p.job.config.get('base_model')}`), its "
        f"adapter merged into the base and written by llama.cpp's own converter. {p.quant.about}.",
        "",
        "## Run it",
        "",
        "- **Ollama**: in this folder, `ollama create " + name.lower() + " -f Modelfile`, then "
        f"`ollama run {name.lower()}`. The Modelfile sets the chat template, the system prompt and the stop words.",
        f"- **llama.cpp**: `llama-cli -m {p.gguf_name} -cnv` (the chat template is inside the file).",
        f"- **LM Studio**: import `{p.gguf_name}`; it reads the chat template from the file.",
        "",
        "## What was checked when it was made",
        "",
    ]
    if r.template_differences:
        lines.append(
            f"- **The prompt text differs** for {len(r.template_differences)} of the test conversations "
            "(see check.json): "
            + "; ".join(sorted({d["what"] for d in r.template_differences}))
            + " does not "
            "render exactly what training did. Answers from that route can differ from TuneDeck's."
        )
    elif mf is not None:
        lines.append(
            f"- The prompt text is identical, for {len(ollama.CONVERSATIONS)} conversations (one turn, several turns, "
            "with and without a system prompt), as rendered by training, TuneDeck's chat, the template inside the "
            "GGUF and the Modelfile's TEMPLATE."
        )
    if r.tokens_match is not None:
        lines.append(
            "- llama.cpp turns those prompts into exactly the tokens training used."
            if r.tokens_match
            else "- **llama.cpp turns some prompts into other tokens than training used** (below)."
        )
    if r.answers:
        same = sum(a["identical"] for a in r.answers)
        lines.append(
            f"- Greedy answers (up to {ANSWER_TOKENS} tokens), llama.cpp with this file vs transformers with the merged "
            f"model: {same} of {len(r.answers)} identical token for token."
        )
        agreement = [
            a["next_token_agreement"] for a in r.answers if a.get("next_token_agreement") is not None
        ]
        if agreement:
            lines.append(
                "- Along transformers' answers, llama.cpp ranks the same next token first "
                f"{100 * sum(agreement) / len(agreement):.0f} % of the time (each position given the same text before it)."
            )
        lines += [
            "",
            "| prompt | transformers | llama.cpp | same first tokens | same next token |",
            "| --- | --- | --- | --- | --- |",
        ]
        for a in r.answers:
            cells = [a["prompt"], a["transformers"], a["llama.cpp"]]
            cells = [c.replace("|", "\\|").replace("\n", " ") for c in cells]
            nta = a.get("next_token_agreement")
            lines.append(
                f"| {' | '.join(cells)} | {a['same_tokens']} of {a['of']} | {'-' if nta is None else f'{nta:.0%}'} |"
            )
    lines += [f"- {n}" for n in r.notes]
    if mf is not None and mf.system:
        lines += [
            "",
            "## System prompt",
            "",
            "Used when a chat brings none (as in training):",
            "",
            f"> {mf.system}",
        ]
    return "\n".join(lines) + "\n"
