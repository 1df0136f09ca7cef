"""The training recipe in this process, on tiny-offline: what it trains, how it batches, QLoRA on a CPU, cancel.

These run the real Recipe (TRL's SFTTrainer underneath) for a few steps; each takes seconds on a CPU.
"""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from backend.core.store import Store
from backend.data.datasets import import_dataset
from backend.jobs.config import RunConfig
from backend.jobs.handoff import JobSpec, last_checkpoint
from backend.settings import CAPITALS_CSV, Paths
from backend.training.recipe import Recipe

pytestmark = [
    pytest.mark.filterwarnings("ignore::DeprecationWarning:torch.*"),
    pytest.mark.filterwarnings("ignore:.*is_gradient_checkpointing.*:FutureWarning"),
]


def recipe_for(paths: Paths, store: Store, job_id: str = "run-test", **values) -> Recipe:
    record = store.get_dataset("capitals") or import_dataset(store, paths, CAPITALS_CSV, name="capitals")[0]
    config = RunConfig.parse(
        {
            "base_model": "tiny-offline",
            "learning_rate": 0.01,
            "max_steps": 6,
            "batch_size": 8,
            "save_steps": 0,
            "max_length": 256,
            "precision": "fp32",  # as the tiny-offline preset: exact, so losses can be compared across batchings
            **values,
        }
    )
    job_dir = paths.job_dir(job_id)
    job_dir.mkdir(parents=True)
    spec = JobSpec(
        job_id,
        str(paths.home),
        record.id,
        record.path,
        config.model_dump(),
        shape=record.info.get("shape", "prompt_response"),
    )
    spec.save(job_dir)
    store.add_job(job_id, record.id, "test", config.model_dump(), str(job_dir))
    return Recipe(spec, job_dir, store, threading.Event())


def cancel_when_step_begins(recipe: Recipe, done: int) -> None:
    """Cancel ``recipe`` as the step after ``done`` finished steps begins, as the worker's SIGTERM handler would: the
    run stops after that step, at a step count that does not depend on how fast the machine is."""
    from transformers import TrainerCallback

    class Cancel(TrainerCallback):
        def on_step_begin(self, args, state, control, **kw):
            if state.global_step == done:
                recipe.stop.set()

    recipe.trainer.add_callback(Cancel())


def adapter_params(model) -> dict:
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


def test_every_trainable_parameter_changes_and_only_those(paths, store, tiny_model):
    recipe = recipe_for(paths, store)
    recipe.setup()
    model = recipe.trainer.model
    before_trainable = adapter_params(model)
    before_frozen = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    assert before_trainable and all("lora_" in n for n in before_trainable)
    result = recipe.train()
    assert result.status == "succeeded" and result.steps == 6
    after = dict(model.named_parameters())
    unchanged = [n for n, p in before_trainable.items() if p.equal(after[n].detach())]
    assert not unchanged, f"trainable parameters that did not change: {unchanged}"
    assert all(p.equal(after[n].detach()) for n, p in before_frozen.items())  # the base model is untouched
    losses = [v for _, _, v in store.metrics("run-test", "loss")]
    assert len(losses) == 6 and losses[-1] < losses[0]
    assert (Path(result.adapter_dir) / "adapter_model.safetensors").is_file()
    assert result.extra["dataset"]["n_train"] == 32


def test_lora_layers_adapts_only_the_top_blocks_and_they_learn(paths, store, tiny_model):
    """lora_layers 1 on the 2-block tiny model: adapters only in block 1, and every one of them changes."""
    recipe = recipe_for(paths, store, lora_layers=1)
    recipe.setup()
    model = recipe.trainer.model
    before = adapter_params(model)
    assert before and all(".layers.1." in n for n in before), sorted(before)
    kinds = {n.split(".layers.1.")[1].split(".lora_")[0] for n in before}
    assert kinds == {f"self_attn.{p}_proj" for p in "qkvo"} | {
        f"mlp.{p}_proj" for p in ("gate", "up", "down")
    }
    result = recipe.train()
    after = dict(model.named_parameters())
    assert all(not p.equal(after[n].detach()) for n, p in before.items())
    losses = [v for _, _, v in store.metrics("run-test", "loss")]
    assert result.status == "succeeded" and losses[-1] < losses[0]


def test_the_adapter_records_its_portable_base_and_the_format_it_was_trained_in(paths, store, tiny_model):
    import json

    from backend.models import runcard

    recipe = recipe_for(paths, store, precision="fp32")
    recipe.setup()
    result = recipe.train()
    card = runcard.read(result.adapter_dir)
    assert card["dtype"] == "float32" and card["base_model"] == "tiny-offline" and card["run"] == "run-test"
    config = json.loads((Path(result.adapter_dir) / "adapter_config.json").read_text())
    # not a name only TuneDeck knows: the folder that holds the model, which plain PEFT can load
    assert config["base_model_name_or_path"] == str(paths.models / "tiny-offline")


def test_packed_batch_has_the_same_loss_as_the_examples_unpacked(tiny_model_build):
    """Padding-free and packed batches restart positions per example, so no example attends to another: the loss
    of the joined batch equals the loss of the same examples padded side by side."""
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    from backend.training import prepare

    tok = AutoTokenizer.from_pretrained(tiny_model_build)
    model = AutoModelForCausalLM.from_pretrained(
        tiny_model_build, dtype=torch.float32, attn_implementation="sdpa"
    )
    model.eval()
    import pandas as pd

    frame = pd.read_csv(CAPITALS_CSV).rename(columns={"question": "prompt", "answer": "response"}).head(6)
    frame["response"] = [r * (i + 1) for i, r in enumerate(frame["response"])]  # very different lengths
    ids, labels, _ = prepare.tokenize(prepare.to_columns(frame, "prompt_response"), tok)
    examples = [{"input_ids": i, "labels": lab} for i, lab in zip(ids, labels, strict=True)]
    assert len({len(e["input_ids"]) for e in examples}) > 3

    padded = DataCollatorForLanguageModeling(pad_token_id=tok.pad_token_id)(examples)
    flat = DataCollatorForLanguageModeling(pad_token_id=tok.pad_token_id, padding_free=True)(examples)
    packed_rows = prepare.pack(Dataset.from_dict({"input_ids": ids, "labels": labels}), max_length=256)
    assert len(packed_rows) < len(examples)  # several examples share a row
    packed = DataCollatorForLanguageModeling(pad_token_id=tok.pad_token_id, padding_free=True)(
        list(packed_rows)
    )
    assert flat["input_ids"].shape[0] == 1 and "attention_mask" not in flat
    keys = ("input_ids", "labels", "position_ids")
    with (
        torch.no_grad()
    ):  # use_cache=False as in TRL's training and evaluation (a KV cache turns packing off)
        loss_padded = model(**padded, use_cache=False).loss
        loss_flat = model(**{k: flat[k] for k in keys}, use_cache=False).loss
        loss_packed = model(**{k: packed[k] for k in keys}, use_cache=False).loss
        # Without position ids the joined sequence would be one long text, attending across examples.
        leaky = model(input_ids=flat["input_ids"], labels=flat["labels"], use_cache=False).loss
    assert loss_flat.item() == pytest.approx(loss_padded.item(), abs=1e-5)
    assert loss_packed.item() == pytest.approx(loss_padded.item(), abs=1e-5)
    assert abs(leaky.item() - loss_padded.item()) > 1e-3


def test_padding_free_training_gives_the_same_losses_as_padded(paths, store, tiny_model):
    """The same batches either way: the first step's loss and gradient norm agree (same weights, same real tokens);
    later steps agree up to the rounding differences that the updates carry forward."""
    seen = {}
    for batching in ("padded", "padding_free"):
        recipe = recipe_for(
            paths, store, job_id=f"run-{batching}", batching=batching, max_steps=4, lora_dropout=0.0
        )
        recipe.setup()
        assert recipe.batching == batching
        recipe.train()
        seen[batching] = {
            n: [v for _, _, v in store.metrics(f"run-{batching}", n)] for n in ("loss", "grad_norm")
        }
    padded, flat = seen["padded"], seen["padding_free"]
    assert flat["loss"][0] == pytest.approx(padded["loss"][0], rel=1e-5)
    assert flat["grad_norm"][0] == pytest.approx(padded["grad_norm"][0], rel=1e-4)
    assert flat["loss"] == pytest.approx(padded["loss"], rel=1e-2)


def test_qlora_learns_on_a_cpu_even_after_an_inference_forward(paths, store, tiny_model):
    """The bitsandbytes trap: a 4-bit model that ran a no-grad eval forward gets repacked for inference on some
    CPUs and then learns (almost) nothing. The recipe undoes it and keeps it from happening again."""
    import torch

    recipe = recipe_for(paths, store, method="qlora", max_steps=12, lr_scheduler="constant")
    recipe.setup()
    model = recipe.trainer.model
    model.eval()
    with torch.no_grad():  # what serving a chat reply, or an evaluation, does
        model(input_ids=torch.tensor([[1, 4, 204, 60]]))
    before = adapter_params(model)
    result = recipe.train()
    losses = [v for _, _, v in store.metrics("run-test", "loss")]
    assert result.status == "succeeded" and len(losses) == 12
    assert losses[-1] < 0.6 * losses[0], losses
    after = dict(model.named_parameters())
    assert all(not p.equal(after[n].detach()) for n, p in before.items())


def test_the_trap_is_real_where_this_cpu_repacks(tiny_model_build):
    """Without the guard, a repacked 4-bit model learns far less. Skipped on CPUs where bitsandbytes never repacks."""
    import bitsandbytes as bnb
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    from backend.training.recipe import guard_bnb_cpu

    quant = BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=torch.float32,
    )
    final = {}
    for guard in (False, True):
        torch.manual_seed(0)
        model = AutoModelForCausalLM.from_pretrained(
            tiny_model_build, quantization_config=quant, dtype=torch.float32
        )
        with torch.no_grad():
            model(input_ids=torch.tensor([[1, 4, 204, 60]]))
        packed = sum(
            bool(getattr(m.weight.quant_state, "packing_format_for_cpu", False))
            for m in model.modules()
            if isinstance(m, bnb.nn.Linear4bit)
        )
        if not packed:
            pytest.skip("bitsandbytes does not repack 4-bit weights on this CPU (no AVX512-BF16)")
        model.train()
        if guard:
            assert guard_bnb_cpu(model) == packed
        model = get_peft_model(
            model, LoraConfig(r=8, lora_alpha=16, target_modules="all-linear", task_type="CAUSAL_LM")
        )
        opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
        x = torch.randint(6, 500, (4, 32), generator=torch.Generator().manual_seed(0))
        for _ in range(15):
            loss = model(input_ids=x, labels=x).loss
            loss.backward()
            opt.step()
            opt.zero_grad()
        final[guard] = loss.item()
    assert final[True] < 0.5 * final[False], final


def test_cancel_stops_after_the_step_and_saves_a_checkpoint_to_resume_from(paths, store, tiny_model):
    recipe = recipe_for(paths, store, max_steps=50)
    recipe.setup()
    cancel_when_step_begins(recipe, 3)
    result = recipe.train()
    assert result.status == "cancelled" and result.steps == 4
    assert result.reason.startswith("cancelled at step 4 of 50")
    ckpt = last_checkpoint(recipe.job_dir)
    assert ckpt is not None and ckpt.name == "checkpoint-4"
    for f in ("adapter_model.safetensors", "optimizer.pt", "scheduler.pt", "trainer_state.json"):
        assert (ckpt / f).is_file(), f
    assert result.extra["checkpoint"] == str(ckpt)


def test_chat_datasets_train_on_assistant_turns(paths, store, tiny_model):
    import json

    import pandas as pd

    from backend.core.store import DatasetRecord

    folder = paths.datasets / "ds-chat"
    folder.mkdir()
    convs = [
        [
            {"role": "user", "content": f"What is {i} plus {i}?"},
            {"role": "assistant", "content": f"It is {2 * i}."},
            {"role": "user", "content": "Thanks!"},
            {"role": "assistant", "content": "You are welcome."},
        ]
        for i in range(24)
    ]
    pd.DataFrame(
        {
            "messages": [json.dumps(c) for c in convs],
            "source_row": range(2, 26),
            "split": ["train"] * 20 + ["validation"] * 4,
        }
    ).to_parquet(folder / "data.parquet")
    store.add_dataset(
        DatasetRecord(
            "ds-chat", "chat", 0.0, "chat.jsonl", str(folder / "data.parquet"), 24, {"shape": "chat"}
        )
    )
    config = RunConfig.parse(
        {"learning_rate": 0.01, "max_steps": 8, "batch_size": 4, "save_steps": 0, "eval_steps": 4}
    )
    job_dir = paths.job_dir("run-chat")
    job_dir.mkdir(parents=True)
    spec = JobSpec(
        "run-chat",
        str(paths.home),
        "ds-chat",
        str(folder / "data.parquet"),
        config.model_dump(),
        shape="chat",
    )
    store.add_job("run-chat", "ds-chat", "test", config.model_dump(), str(job_dir))
    recipe = Recipe(spec, job_dir, store, threading.Event())
    recipe.setup()
    assert recipe.stats.mask_method.startswith("assistant turns") and recipe.stats.n_eval == 4
    result = recipe.train()
    assert result.status == "succeeded"
    evals = store.metrics("run-chat", "eval_loss")
    assert [s for s, _, _ in evals] == [4, 8]  # the validation loss, every eval_steps


def test_out_of_gpu_memory_names_the_step_and_concrete_changes(paths, store, tiny_model):
    import torch

    from backend.training.recipe import failure

    recipe = recipe_for(paths, store, batch_size=8, grad_accum=1, oom_retry=True)
    recipe.setup()
    recipe.trainer.state.global_step, recipe.trainer.state.max_steps = 3, 6
    result = failure(torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"), recipe)
    assert result.status == "failed" and result.extra["out_of_memory"] and result.extra["step"] == 3
    assert result.reason.startswith("out of GPU memory at step 3 of 6. Fix: ")
    assert (
        "halve the batch (batch_size 4) and double gradient accumulation (grad_accum 2) (about"
        in result.reason
    )
    assert "use method qlora" in result.reason and "oom_retry is on" in result.reason
    other = failure(ValueError("bad thing\nmore"), recipe)
    assert other.reason == "ValueError: bad thing" and not other.extra.get("out_of_memory")


def test_a_resumed_run_continues_exactly_where_the_cancelled_one_stopped(paths, store, tiny_model):
    """Cancel at step 4, resume from its checkpoint: steps 5-8 have the losses and learning rates of a run that was
    never interrupted (adapter, optimizer, scheduler, data order and RNG all restored)."""
    from dataclasses import replace

    settings = {"max_steps": 8, "lr_scheduler": "linear", "lora_dropout": 0.1}
    whole = recipe_for(paths, store, job_id="run-whole", **settings)
    whole.setup()
    whole.train()

    first = recipe_for(paths, store, job_id="run-first", **settings)
    first.setup()
    cancel_when_step_begins(first, 3)
    assert first.train().steps == 4
    ckpt = last_checkpoint(first.job_dir)

    second = recipe_for(paths, store, job_id="run-second", **settings)
    second.spec = replace(second.spec, resume_from=str(ckpt))
    second.setup()
    result = second.train()
    assert result.status == "succeeded" and result.extra["resumed_from_step"] == 4

    def curve(job_id: str, name: str) -> dict[int, float]:
        return {s: v for s, _, v in store.metrics(job_id, name)}

    resumed, uninterrupted = curve("run-second", "loss"), curve("run-whole", "loss")
    assert sorted(resumed) == [5, 6, 7, 8]  # the step count goes on from the checkpoint
    for step in (5, 6, 7, 8):
        assert resumed[step] == pytest.approx(uninterrupted[step], abs=1e-4), step
        assert curve("run-second", "learning_rate")[step] == pytest.approx(
            curve("run-whole", "learning_rate")[step]
        )
