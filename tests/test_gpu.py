"""On an NVIDIA GPU only (skipped elsewhere): precision, QLoRA with the paged 8-bit optimizer, the memory estimate
against the measured peak, and the out-of-memory report.

Run on a GPU machine with: pytest -m gpu tests/test_gpu.py
"""

from __future__ import annotations

import threading

import pytest
import torch  # a dependency of TuneDeck: without it the install is broken, which must not pass for "no GPU"

pytestmark = [
    pytest.mark.gpu,
    # CI has no GPU by design: these stay skips there (not skip_or_fail); run them on a GPU machine
    pytest.mark.skipif(
        not torch.cuda.is_available(),
        reason="needs an NVIDIA GPU with CUDA (torch.cuda.is_available() is False here): "
        "run `pytest -m gpu tests/test_gpu.py` on a GPU machine",
    ),
    pytest.mark.filterwarnings("ignore:.*is_gradient_checkpointing.*:FutureWarning"),
]

# A random-init model of Llama-3.2-1B's block shape (the vocabulary is the tiny tokenizer's), so the test needs no
# download; the estimate is computed for exactly this shape.
SHAPE = {
    "hidden_size": 2048,
    "intermediate_size": 8192,
    "num_hidden_layers": 16,
    "num_attention_heads": 32,
    "num_key_value_heads": 8,
}


@pytest.fixture(scope="module")
def one_b_model(tmp_path_factory):
    from backend.models.tiny import build

    return build(tmp_path_factory.mktemp("gpu-model") / "llama-1b-shape", shape=SHAPE)


def test_bf16_is_used_only_where_the_gpu_supports_it():
    from backend.models.devices import detect

    caps = detect("auto")
    assert caps.kind == "cuda" and caps.memory_gb > 1
    assert caps.bf16 == torch.cuda.is_bf16_supported()


def run_recipe(paths, store, model_dir, **values):
    from backend.data.datasets import import_dataset
    from backend.jobs.config import RunConfig
    from backend.jobs.handoff import JobSpec
    from backend.settings import CAPITALS_CSV
    from backend.training.recipe import Recipe

    record = store.get_dataset("capitals") or import_dataset(store, paths, CAPITALS_CSV, name="capitals")[0]
    config = RunConfig.parse(
        {"base_model": str(model_dir), "max_steps": 4, "save_steps": 0, "learning_rate": 2e-4, **values}
    )
    job_id = f"run-gpu-{len(store.list_jobs())}"
    job_dir = paths.job_dir(job_id)
    job_dir.mkdir(parents=True)
    spec = JobSpec(job_id, str(paths.home), record.id, record.path, config.model_dump())
    store.add_job(job_id, record.id, "gpu", config.model_dump(), str(job_dir))
    recipe = Recipe(spec, job_dir, store, threading.Event())
    recipe.setup()
    return recipe, recipe.train(), config


def test_qlora_with_the_paged_8bit_optimizer_learns_and_its_peak_is_near_the_estimate(
    paths, store, one_b_model
):
    from backend.jobs import estimate

    torch.cuda.reset_peak_memory_stats()
    recipe, result, config = run_recipe(
        paths,
        store,
        one_b_model,
        method="qlora",
        batch_size=4,
        max_length=256,
        gradient_checkpointing=True,
        lr_scheduler="constant",
        learning_rate=1e-3,
    )
    assert result.status == "succeeded", result.reason
    assert recipe.trainer.args.optim == "paged_adamw_8bit"
    losses = [v for _, _, v in store.metrics(recipe.spec.job_id, "loss")]
    assert losses[-1] < losses[0]
    measured = result.extra["peak_gpu_gb"]
    shape = estimate.shape_from_config(recipe.model.config.to_dict())
    predicted = estimate.memory(shape, config, seq_len=recipe.stats.longest).peak
    assert 0.65 * predicted <= measured <= 1.35 * predicted, (measured, predicted)
    assert store.metrics(recipe.spec.job_id, "peak_gpu_gb")  # charted on a GPU


def test_out_of_gpu_memory_is_reported_with_the_step_and_what_to_change(paths, store, one_b_model):
    from backend.training.recipe import failure

    recipe, result, _ = run_recipe(paths, store, one_b_model, method="lora", max_steps=1)
    try:
        torch.empty(
            int(torch.cuda.get_device_properties(0).total_memory * 2), dtype=torch.uint8, device="cuda"
        )
    except torch.OutOfMemoryError as exc:
        failed = failure(exc, recipe)
    assert failed.reason.startswith("out of GPU memory at step 1")
    assert "Fix:" in failed.reason and failed.extra["out_of_memory"]
