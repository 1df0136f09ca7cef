"""The pure translators from our RunConfig to PEFT, bitsandbytes, TRL and `accelerate launch`."""

from __future__ import annotations

import pytest

from backend.jobs import estimate, launch
from backend.jobs.config import RunConfig
from backend.models import devices
from backend.training import hf

CPU = devices.DeviceCaps("cpu", bf16=False, fp16=False)
AMPERE = devices.DeviceCaps("cuda", bf16=True, fp16=True, name="NVIDIA A100")
TURING = devices.DeviceCaps("cuda", bf16=False, fp16=True, name="Tesla T4")


def cfg(**values) -> RunConfig:
    return RunConfig.parse({"batching": "padded", **values})


def test_lora_config_all_linear_by_default_and_overridable():
    default = hf.lora_config(cfg())
    assert default.target_modules == "all-linear"
    assert (default.r, default.lora_alpha, default.lora_dropout, default.bias) == (16, 32, 0.05, "none")
    assert (default.use_dora, default.use_rslora) == (False, False)
    custom = hf.lora_config(cfg(target_modules="q_proj, v_proj", use_dora=True, use_rslora=True, lora_r=64))
    assert set(custom.target_modules) == {"q_proj", "v_proj"}
    assert (custom.use_dora, custom.use_rslora, custom.r) == (True, True, 64)


def test_lora_layers_puts_adapters_on_the_last_blocks_only():
    top = hf.lora_config(cfg(lora_layers=2), n_blocks=6, block_linears=["q_proj", "v_proj"])
    assert top.layers_to_transform == [4, 5] and set(top.target_modules) == {"q_proj", "v_proj"}
    assert hf.lora_config(cfg(lora_layers=0), n_blocks=6).layers_to_transform is None
    assert (
        hf.lora_config(cfg(lora_layers=9), n_blocks=6).layers_to_transform is None
    )  # more than there are: all
    with pytest.raises(ValueError, match="names of the linear layers"):
        hf.lora_config(cfg(lora_layers=2), n_blocks=6)


def test_bnb_config_is_nf4_double_quant_with_bf16_compute_where_supported():
    import torch

    assert hf.bnb_config(cfg(method="lora"), AMPERE) is None
    q = hf.bnb_config(cfg(method="qlora"), AMPERE)
    assert q.load_in_4bit and q.bnb_4bit_quant_type == "nf4" and q.bnb_4bit_use_double_quant
    assert q.bnb_4bit_compute_dtype == torch.bfloat16
    assert (
        hf.bnb_config(cfg(method="qlora"), TURING).bnb_4bit_compute_dtype == torch.float16
    )  # never bf16 there
    assert hf.bnb_config(cfg(method="qlora"), CPU).bnb_4bit_compute_dtype == torch.float32
    # FSDP shards the 4-bit weights only when they are stored in the compute dtype.
    fsdp = hf.bnb_config(cfg(method="qlora", num_devices=2, multi_device="fsdp"), AMPERE)
    assert fsdp.bnb_4bit_quant_storage == torch.bfloat16


def test_optimizer_auto_picks_by_method_and_device_and_refuses_cuda_only_ones_elsewhere():
    assert hf.optimizer_name(cfg(method="qlora"), AMPERE) == "paged_adamw_8bit"
    assert hf.optimizer_name(cfg(method="lora"), AMPERE) == "adamw_torch_fused"
    assert hf.optimizer_name(cfg(method="qlora"), CPU) == "adamw_torch_fused"
    assert hf.optimizer_name(cfg(), devices.DeviceCaps("mps", bf16=False, fp16=False)) == "adamw_torch"
    assert hf.optimizer_name(cfg(optimizer="adamw_8bit"), AMPERE) == "adamw_8bit"
    with pytest.raises(
        hf.UnsupportedOnDevice, match="optimizer = paged_adamw_8bit needs a CUDA GPU.*Fix: use optimizer auto"
    ):
        hf.optimizer_name(cfg(optimizer="paged_adamw_8bit"), CPU)


def test_sft_config_sets_what_we_rely_on(tmp_path):
    c = cfg(
        max_steps=30,
        learning_rate=1e-3,
        batch_size=4,
        grad_accum=2,
        gradient_checkpointing=True,
        save_steps=10,
    )
    args = hf.sft_kwargs(
        c, AMPERE, str(tmp_path), eval_every=5
    )  # SFTConfig itself refuses bf16 without a GPU
    assert (args["max_steps"], args["learning_rate"]) == (30, 1e-3)
    assert (args["per_device_train_batch_size"], args["gradient_accumulation_steps"]) == (4, 2)
    assert args["activation_checkpointing"] and args["activation_checkpointing_kwargs"] == {
        "use_reentrant": False
    }
    assert (args["bf16"], args["fp16"], args["use_cpu"]) == (True, False, False)
    assert args["optim"] == "adamw_torch_fused"
    assert (args["save_strategy"], args["save_steps"], args["save_only_model"]) == ("steps", 10, False)
    assert (args["eval_strategy"], args["eval_steps"]) == ("steps", 5)
    assert args["prediction_loss_only"]  # validation without a second forward pass for logits nobody reads
    assert (
        args["dataset_kwargs"] == {"skip_prepare_dataset": True} and args["max_length"] is None
    )  # we tokenize
    assert (args["packing"], args["padding_free"]) == (False, False)
    assert args["report_to"] == "none"


def test_sft_config_precision_follows_the_device(tmp_path):
    turing = hf.sft_kwargs(cfg(), TURING, str(tmp_path))
    assert (turing["fp16"], turing["bf16"]) == (True, False)  # never bf16 where it is not supported
    cpu = hf.sft_config(cfg(), CPU, str(tmp_path))  # a real SFTConfig on this machine
    assert (cpu.bf16, cpu.fp16, cpu.use_cpu, cpu.optim) == (False, False, True, "adamw_torch_fused")
    assert cpu.dataset_kwargs == {"skip_prepare_dataset": True}


@pytest.mark.parametrize(
    ("batching", "packing", "padding_free", "sampler"),
    [
        ("padded", False, False, "random"),
        ("padding_free", False, True, "random"),
        ("packed", True, True, "random"),
        ("grouped", False, False, "group_by_length"),
    ],
)
def test_sft_config_batching(tmp_path, batching, packing, padding_free, sampler):
    args = hf.sft_config(cfg(batching=batching), CPU, str(tmp_path))
    assert (args.packing, args.padding_free, args.train_sampling_strategy) == (packing, padding_free, sampler)
    assert args.length_column_name == "length"  # prepared datasets carry it: no pass over the data to measure
    with pytest.raises(ValueError, match="decided from the data"):
        hf.sft_config(RunConfig.parse({"batching": "auto"}), CPU, str(tmp_path))


def test_no_eval_and_no_periodic_checkpoints(tmp_path):
    args = hf.sft_config(cfg(save_steps=0), CPU, str(tmp_path), eval_every=None)
    assert args.eval_strategy.value == "no"
    assert args.save_steps >= 10**9  # only the checkpoint a cancel asks for


def test_planned_steps_and_eval_interval():
    assert estimate.planned_steps(cfg(max_steps=40), 1000) == 40
    assert (
        estimate.planned_steps(cfg(num_epochs=2, batch_size=4, grad_accum=2), 100) == 26
    )  # 2 x ceil(100 / 8)
    assert estimate.planned_steps(cfg(num_epochs=1, batch_size=4), 100, world_size=2) == 13
    assert hf.eval_interval(cfg(eval_steps=0), 200) == 20
    assert hf.eval_interval(cfg(eval_steps=7), 200) == 7
    assert hf.eval_interval(cfg(eval_steps=0), 3) == 1


def test_accelerate_command_ddp_on_cpu_and_fsdp_on_gpus():
    ddp = launch.accelerate_command(
        cfg(num_devices=2, device="cpu"), "/jobs/run-1", port=29555, on_cpu=True, python="py"
    )
    assert ddp[:3] == ["py", "-m", "accelerate.commands.launch"]
    assert (
        ddp[ddp.index("--num_processes") + 1] == "2" and ddp[ddp.index("--main_process_port") + 1] == "29555"
    )
    assert "--multi_gpu" in ddp and "--use_fsdp" not in ddp
    assert ddp[-3:] == [
        "-m",
        "backend.training.worker",
        "/jobs/run-1",
    ]  # the job dir on the command line: the manager
    # recognises its workers by it
    fsdp = launch.accelerate_command(
        cfg(num_devices=4, multi_device="fsdp"), "/jobs/run-2", port=1, on_cpu=False
    )
    assert "--use_fsdp" in fsdp and fsdp[fsdp.index("--fsdp_use_orig_params") + 1] == "true"
    assert "--multi_gpu" not in fsdp


def test_auto_batching_follows_the_padding_it_would_save_and_the_attention_kernel():
    from backend.training.recipe import auto_batching

    assert auto_batching("auto", 0.05, "cpu") == "padded"  # nothing to save
    assert auto_batching("auto", 0.5, "cpu") == "grouped"  # no FlashAttention on a CPU
    assert auto_batching("packed", 0.5, "cpu") == "packed"  # an explicit choice stays
    from transformers.utils import is_flash_attn_2_available

    assert auto_batching("auto", 0.5, "cuda") == (
        "padding_free" if is_flash_attn_2_available() else "grouped"
    )


def test_precision_auto_is_bf16_only_on_a_cpu_with_bf16_instructions(monkeypatch):
    hardware = devices

    monkeypatch.setattr(hardware, "cpu_has_bf16", lambda: True)
    assert (
        hardware.detect("cpu", "auto").bf16
        and devices.compute_dtype_name(hardware.detect("cpu")) == "bfloat16"
    )
    assert not hardware.detect("cpu", "fp32").bf16
    monkeypatch.setattr(hardware, "cpu_has_bf16", lambda: False)
    assert not hardware.detect("cpu", "auto").bf16  # emulated bf16 is slower than fp32 there
    assert hardware.detect("cpu", "bf16").bf16  # unless asked for
    from backend.errors import RunFailed

    with pytest.raises(RunFailed, match="fp16 needs a CUDA GPU"):
        hardware.detect("cpu", "fp16")
