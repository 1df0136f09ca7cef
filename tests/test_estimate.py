"""The memory and time estimate made before a job starts, checked against published figures.

Published figures are rough and their settings are not all stated, so each check names its assumption and its
tolerance. LLaMA-Factory's table ("hardware requirement", estimated): QLoRA 4-bit 7B 6 GB, 14B 12 GB, 30B 24 GB,
70B 48 GB; LoRA 16-bit 16 / 32 / 64 / 160 GB. We take batch 1, max_length 512, rank 8, gradient checkpointing on
(the cheapest common setting, which such tables describe) and accept 30 % either way.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from backend.jobs import estimate
from backend.jobs.config import RunConfig
from backend.jobs.estimate import GB, ModelShape

# LLaMA-style shapes of the sizes LLaMA-Factory lists (LLaMA-2 7B, Qwen1.5-14B, LLaMA-30B, LLaMA-2 70B).
SIZES = {
    "7B": ModelShape(4096, 32, 32, 32, 11008, 32000),
    "14B": ModelShape(5120, 40, 40, 40, 13696, 152064),
    "30B": ModelShape(6656, 60, 52, 52, 17920, 32000),
    "70B": ModelShape(8192, 80, 64, 8, 28672, 32000),
}
LLAMA_FACTORY = {
    "qlora": {"7B": 6, "14B": 12, "30B": 24, "70B": 48},
    "lora": {"7B": 16, "14B": 32, "30B": 64, "70B": 160},
}
TABLE_SETTING = {
    "batch_size": 1,
    "max_length": 512,
    "lora_r": 8,
    "gradient_checkpointing": True,
    "lora_dropout": 0.0,
}
LLAMA31_8B = estimate.KNOWN["meta-llama/llama-3.1-8b-instruct"]


def run(**values) -> RunConfig:
    return RunConfig.parse(values)


@pytest.mark.parametrize("method", ["qlora", "lora"])
@pytest.mark.parametrize("size", list(SIZES))
def test_estimate_is_within_30_percent_of_llama_factorys_table(method, size):
    got = estimate.memory(SIZES[size], run(method=method, **TABLE_SETTING)).total
    published = LLAMA_FACTORY[method][size]
    assert 0.7 * published <= got <= 1.3 * published, f"{size} {method}: {got:.1f} GB vs {published} GB"


def test_parameter_counts_match_the_published_models():
    assert LLAMA31_8B.params == pytest.approx(8.03e9, rel=0.01)
    assert estimate.KNOWN["qwen/qwen2.5-0.5b-instruct"].params == pytest.approx(0.494e9, rel=0.01)
    assert estimate.KNOWN["qwen/qwen2.5-7b-instruct"].params == pytest.approx(7.62e9, rel=0.01)


def test_llama3_8b_weights_in_4bit_are_about_5_7_gb():
    """bitsandbytes keeps embeddings and the output layer in 16-bit: Llama-3-8B weights ~5.7 GB (10^9 bytes)."""
    weights = estimate.memory(LLAMA31_8B, run(method="qlora")).weights * GB / 1e9
    assert weights == pytest.approx(5.7, rel=0.05)


def test_qlora_fits_65b_in_48_gb_as_in_the_paper():
    llama65 = ModelShape(8192, 80, 64, 64, 22016, 32000)
    m = estimate.memory(
        llama65, run(method="qlora", lora_r=64, batch_size=1, max_length=512, gradient_checkpointing=True)
    )
    assert m.total < 48


def test_the_issue_target_8b_r16_2048_batch_4_is_estimated_under_16_gb():
    m = estimate.memory(
        LLAMA31_8B, run(method="qlora", lora_r=16, max_length=2048, batch_size=4, gradient_checkpointing=True)
    )
    assert m.peak < 16


def test_lora_parameters_are_r_times_in_plus_out_of_each_adapted_layer():
    # Llama-3.1-8B, r 16, all linear layers: 16 x (4096+4096 + 4096+1024 + 4096+1024 + 4096+4096 + 3 x (4096+14336))
    # x 32 layers = 41,943,040 (what PEFT prints for this model).
    assert estimate.lora_params(LLAMA31_8B, run(lora_r=16)) == 41_943_040
    attention_only = estimate.lora_params(LLAMA31_8B, run(lora_r=16, target_modules="q_proj,v_proj"))
    assert attention_only == 16 * (8192 + 5120) * 32


def test_each_memory_saving_setting_lowers_the_estimate():
    base = run(method="lora", batch_size=8, max_length=2048, gradient_checkpointing=False)
    full = estimate.memory(LLAMA31_8B, base).total
    for change in (
        {"method": "qlora"},
        {"gradient_checkpointing": True},
        {"batch_size": 4},
        {"max_length": 1024},
    ):
        assert estimate.memory(LLAMA31_8B, base.updated(**change)).total < full, change
    # A shorter dataset needs less than max_length allows.
    assert estimate.memory(LLAMA31_8B, base, seq_len=300).total < full


def test_a_job_that_does_not_fit_is_refused_with_changes_that_would_fit():
    big = run(method="lora", batch_size=8, max_length=4096, gradient_checkpointing=False)
    fit = estimate.check_fit(LLAMA31_8B, big, 24.0)
    assert not fit.fits and fit.need.total > 24
    assert fit.suggestions, "there should be something that fits on 24 GB"
    for tip in fit.suggestions:
        assert "GB)" in tip  # each suggestion says what it would need
    text = fit.message("NVIDIA GeForce RTX 4090")
    assert text.startswith("this job needs about") and "RTX 4090 has 24.0 GB free" in text and "Fix:" in text
    assert "qlora" in text or "gradient_checkpointing" in text
    assert estimate.check_fit(
        LLAMA31_8B, run(method="qlora", gradient_checkpointing=True, batch_size=1), 24.0
    ).fits


def test_halved_batch_keeps_the_effective_batch():
    smaller = estimate.halved_batch(run(batch_size=8, grad_accum=2))
    assert (smaller.batch_size, smaller.grad_accum) == (4, 4)
    assert estimate.halved_batch(run(batch_size=1)) is None


def test_shape_is_read_from_config_json_and_known_for_presets(tmp_path, paths):
    folder = tmp_path / "my-model"
    folder.mkdir()
    (folder / "config.json").write_text(
        json.dumps(
            {
                "hidden_size": 2048,
                "num_hidden_layers": 16,
                "num_attention_heads": 32,
                "num_key_value_heads": 8,
                "intermediate_size": 8192,
                "vocab_size": 128256,
                "tie_word_embeddings": True,
            }
        )
    )
    shape = estimate.model_shape(str(folder), paths)
    assert (shape.hidden, shape.layers, shape.kv_heads, shape.tie_embeddings) == (2048, 16, 8, True)
    assert estimate.model_shape("Qwen/Qwen2.5-7B-Instruct", paths).name == "Qwen2.5-7B"
    assert estimate.model_shape("tiny-offline", paths).hidden == 64  # known before it is built
    assert estimate.model_shape("someone/unknown-model", paths) is None


def test_time_estimate_scales_with_tokens_and_the_card():
    cfg = run(method="qlora", gradient_checkpointing=True)
    h100 = estimate.seconds_per_epoch(
        LLAMA31_8B,
        cfg,
        tokens_per_epoch=1_000_000,
        mean_len=500,
        device_kind="cuda",
        device_name="NVIDIA H100 80GB HBM3",
    )
    t4 = estimate.seconds_per_epoch(
        LLAMA31_8B, cfg, tokens_per_epoch=1_000_000, mean_len=500, device_kind="cuda", device_name="Tesla T4"
    )
    assert 0 < h100 < t4
    # 1M tokens of an 8B model at 6N FLOPs per token, 25 % of 989 TFLOP/s: about 3.3 minutes.
    assert h100 == pytest.approx(6 * 7.5e9 * 1e6 / (0.25 * 989e12), rel=0.25)
    assert (
        estimate.seconds_per_epoch(
            LLAMA31_8B,
            cfg,
            tokens_per_epoch=1,
            mean_len=1,
            device_kind="cuda",
            device_name="Some Unknown Card",
        )
        is None
    )


def test_nvidia_smi_output_is_parsed_without_torch():
    from backend.models.devices import parse_nvidia_smi

    gpus = parse_nvidia_smi("NVIDIA H100 80GB HBM3, 81559, 1024, GPU-1234\nTesla T4, 15360, [N/A], GPU-5\n")
    assert len(gpus) == 1
    assert gpus[0].name == "NVIDIA H100 80GB HBM3" and gpus[0].uuid == "GPU-1234"
    assert gpus[0].total_gb == pytest.approx(79.65, abs=0.01) and gpus[0].free_gb == pytest.approx(
        78.65, abs=0.01
    )


def test_the_estimate_module_does_not_import_torch():
    import subprocess
    import sys

    code = (
        "import sys; from backend.jobs import estimate; from backend.models import devices as hardware; "
        "from backend.jobs.config import RunConfig; "
        "estimate.memory(estimate.KNOWN['qwen/qwen2.5-7b-instruct'], RunConfig.parse({})); "
        "hardware.gpu_inventory(); print('torch' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=Path(__file__).parents[1]
    )
    assert out.stdout.strip() == "False", out.stderr


# -- a run on a CPU ------------------------------------------------------------------------------------------------

SMOLLM2 = estimate.KNOWN["huggingfacetb/smollm2-135m-instruct"]


def test_smollm2_shape_is_the_published_135m():
    assert 134e6 < SMOLLM2.params < 135e6  # 134.5M (tied embeddings), as the model card says


def test_cpu_memory_grows_with_the_batch_and_length_and_shrinks_with_bf16_and_top_blocks_only():
    base = RunConfig.parse({"batch_size": 8, "max_length": 512, "lora_dropout": 0.0})
    m = lambda cfg, **kw: estimate.cpu_memory_gb(SMOLLM2, cfg, seq_len=512, **kw)  # noqa: E731
    assert m(base.updated(batch_size=16)) > m(base) > m(base.updated(batch_size=2))
    assert m(base, bf16=True) < m(base)
    assert m(base.updated(lora_layers=15)) < m(base)
    assert m(base.updated(gradient_checkpointing=True)) < m(base)


def test_cpu_run_time_counts_training_validation_and_scoring():
    cfg = RunConfig.parse({"batch_size": 8, "score_examples": 16, "eval_steps": 25})
    common = dict(train_tokens=22_000, train_examples=300, longest=100, steps=76, cores=2)
    bare = estimate.cpu_run(SMOLLM2, cfg.updated(score_examples=0), **common)
    assert bare.eval_s == 0 and bare.score_s == 0 and bare.total_s == bare.start_s + bare.train_s
    full = estimate.cpu_run(
        SMOLLM2, cfg, **common, eval_tokens=3_000, eval_examples=43, reference_tokens=30, prompt_tokens=45
    )
    assert full.eval_s > 0 and full.score_s > 0 and full.train_s == bare.train_s
    assert estimate.cpu_run(SMOLLM2, cfg, **common, bf16=True).train_s < bare.train_s
    top = estimate.cpu_run(SMOLLM2, cfg.updated(score_examples=0, lora_layers=15), **common)
    assert top.train_s < 0.85 * bare.train_s  # backward through half the blocks (the LM head's share stays)
    assert "training" in full.summary() and "scoring" in full.summary()
