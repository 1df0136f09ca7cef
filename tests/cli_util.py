"""Run the ``tunedeck`` CLI as a person would, in a subprocess, against a given data directory."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from backend.settings import CAPITALS_CSV, PROJECT_ROOT, Paths
from tests.conftest import link_tiny_model


def offline_env(home: Path, **extra: str) -> dict[str, str]:
    return {
        **os.environ,
        "TUNEDECK_HOME": str(home),
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "GRADIO_ANALYTICS_ENABLED": "False",
        **extra,
    }


def tunedeck(env: dict[str, str], *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "backend", *args],
        cwd=PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def tunedeck_json(env: dict[str, str], *args: str, timeout: float = 300) -> dict | list:
    res = tunedeck(env, *args, "--json", timeout=timeout)
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout)


def home_with_sample(root: Path, tiny_model_build: Path) -> dict[str, str]:
    """A data directory with tiny-offline and the sample dataset 'capitals'; returns its environment."""
    link_tiny_model(Paths.from_env(root), tiny_model_build)
    env = offline_env(root)
    tunedeck_json(env, "data", "add", str(CAPITALS_CSV), "--name", "capitals")
    return env


def train_sample(env: dict[str, str], steps: int = 30) -> dict:
    res = tunedeck(
        env,
        "train",
        "capitals",
        "--preset",
        "tiny-offline",
        "--set",
        f"max_steps={steps}",
        "--wait",
        "--json",
    )
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout)


def plain_peft_answer(base_dir: Path, adapter_dir: str, question: str, max_new_tokens: int, dtype=None):
    """What a person gets loading the base and a run's adapter with plain transformers + PEFT, greedy:
    (answer, model, tokenizer, encoded prompt), so a test can go on with the same model (e.g. merge it)."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(adapter_dir)
    base = AutoModelForCausalLM.from_pretrained(base_dir, **({"dtype": dtype} if dtype is not None else {}))
    model = PeftModel.from_pretrained(base, adapter_dir).eval()
    enc = tok.apply_chat_template(
        [{"role": "user", "content": question}],
        add_generation_prompt=True,
        return_tensors="pt",
        return_dict=True,
    )
    with torch.inference_mode():
        out = model.generate(
            **enc, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=tok.pad_token_id
        )
    return tok.decode(out[0, enc["input_ids"].shape[1] :], skip_special_tokens=True), model, tok, enc
