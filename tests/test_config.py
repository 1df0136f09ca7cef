"""RunConfig: the one typed boundary for settings from presets, the UI and ``--set key=value``."""

from __future__ import annotations

import pytest

from backend.jobs.config import ConfigError, RunConfig, coerce_setting
from backend.models.registry import TINY_MODEL


def test_parse_of_nothing_gives_the_documented_defaults():
    cfg = RunConfig.parse({})
    assert cfg.base_model == TINY_MODEL
    assert cfg.method == "lora"
    assert cfg.max_steps == -1  # train by epochs
    assert cfg.num_epochs == 1.0
    assert cfg.learning_rate == 2e-4
    assert (cfg.lora_r, cfg.lora_alpha) == (16, 32)
    assert cfg.target_modules == "all-linear"
    assert cfg.device == "auto"
    assert cfg.system_prompt == ""


def test_parse_keeps_given_values():
    cfg = RunConfig.parse({"base_model": "Qwen/Qwen2.5-0.5B-Instruct", "method": "qlora", "max_steps": 60})
    assert (cfg.base_model, cfg.method, cfg.max_steps) == ("Qwen/Qwen2.5-0.5B-Instruct", "qlora", 60)


def test_config_is_frozen():
    cfg = RunConfig.parse({})
    with pytest.raises(Exception, match="frozen"):
        cfg.lora_r = 8  # type: ignore[misc]


def test_every_problem_is_reported_at_once_with_its_fix():
    bad = {"learning_rate": 0, "lora_r": 0, "max_steps": 0, "batch_sise": 8}
    with pytest.raises(ConfigError) as info:
        RunConfig.parse(bad)
    err = info.value
    assert {p.field for p in err.problems} == set(bad)
    text = str(err)
    lines = text.splitlines()
    assert len(lines) == 4
    for name in bad:
        line = next(line for line in lines if line.startswith(f"{name} = "))
        assert "Fix:" in line, line
    # The messages say what is wrong and what to do, in words a person can act on.
    assert "zero or negative steps would train nothing" in text
    assert "batch_sise = 8: is not a setting TuneDeck knows" in text
    assert "use one of:" in text and "batch_size" in text  # the unknown key's fix lists the real ones
    assert "use a positive value such as 2e-4" in text


@pytest.mark.parametrize("steps", [-1, 1, 60])
def test_max_steps_accepts_minus_one_and_positive(steps):
    assert RunConfig.parse({"max_steps": steps}).max_steps == steps


@pytest.mark.parametrize("steps", [0, -2])
def test_max_steps_refuses_zero_and_below_minus_one(steps):
    with pytest.raises(ConfigError, match=r"max_steps = .*Fix: use a positive number of steps"):
        RunConfig.parse({"max_steps": steps})


def test_wrong_literal_names_the_choices():
    with pytest.raises(ConfigError, match=r"method = 'full'.*Fix: use lora or qlora"):
        RunConfig.parse({"method": "full"})


def test_coerce_setting_turns_text_into_the_fields_type():
    assert coerce_setting("lora_r", "8") == 8
    assert coerce_setting("learning_rate", "2e-4") == pytest.approx(2e-4)
    assert coerce_setting("num_epochs", "3") == 3.0
    assert coerce_setting("method", "qlora") == "qlora"
    assert coerce_setting("system_prompt", "Be brief.") == "Be brief."


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("true", True),
        ("Yes", True),
        ("1", True),
        ("on", True),
        ("false", False),
        ("NO", False),
        ("0", False),
        ("off", False),
    ],
)
def test_coerce_setting_bool_words(text, expected):
    assert coerce_setting("gradient_checkpointing", text) is expected


def test_coerce_setting_leaves_bad_text_for_parse_to_explain():
    values = {
        "lora_r": coerce_setting("lora_r", "sixteen"),
        "learning_rate": coerce_setting("learning_rate", "fast"),
        "gradient_checkpointing": coerce_setting("gradient_checkpointing", "maybe"),
        "no_such_key": coerce_setting("no_such_key", "7"),
    }
    assert values == {
        "lora_r": "sixteen",
        "learning_rate": "fast",
        "gradient_checkpointing": "maybe",
        "no_such_key": "7",
    }
    with pytest.raises(ConfigError) as info:
        RunConfig.parse(values)
    text = str(info.value)
    assert {p.field for p in info.value.problems} == set(values)
    assert "lora_r = 'sixteen'" in text and "valid integer" in text
    assert "learning_rate = 'fast'" in text and "valid number" in text
    assert "gradient_checkpointing = 'maybe'" in text and "Fix: use true or false" in text


def test_updated_returns_a_validated_copy():
    base = RunConfig.parse({"max_steps": 10})
    changed = base.updated(lora_r=8, learning_rate=1e-3)
    assert (changed.lora_r, changed.learning_rate, changed.max_steps) == (8, 1e-3, 10)
    assert (base.lora_r, base.learning_rate) == (16, 2e-4)  # the original is untouched
    with pytest.raises(ConfigError, match=r"lora_r = 0.*Fix:"):
        base.updated(lora_r=0)
    with pytest.raises(ConfigError, match="is not a setting TuneDeck knows"):
        base.updated(lora_rank=8)


def test_field_help_covers_every_setting():
    help_texts = RunConfig.field_help()
    assert set(help_texts) == set(RunConfig.model_fields)
    assert all(text.strip() for text in help_texts.values())


def test_training_engine_defaults():
    cfg = RunConfig.parse({})
    assert (cfg.use_dora, cfg.use_rslora, cfg.optimizer, cfg.batching) == (False, False, "auto", "auto")
    assert (cfg.save_steps, cfg.eval_steps, cfg.oom_retry) == (100, 0, False)
    assert (cfg.num_devices, cfg.multi_device) == (1, "ddp")


def test_settings_that_do_not_go_together_are_reported_with_the_rest():
    with pytest.raises(ConfigError) as info:
        RunConfig.parse({"method": "qlora", "device": "mps", "optimizer": "paged_adamw_8bit", "lora_r": 0})
    fields = [p.field for p in info.value.problems]
    assert fields == ["lora_r", "method", "optimizer"]
    text = str(info.value)
    assert "method = 'qlora': qlora needs bitsandbytes, which does not run on Apple MPS" in text
    assert "optimizer = 'paged_adamw_8bit': paged_adamw_8bit needs a CUDA GPU, but device is mps" in text
    with pytest.raises(ConfigError, match="multi_device = 'fsdp': fsdp splits a model across GPUs"):
        RunConfig.parse({"num_devices": 2, "multi_device": "fsdp", "device": "cpu"})
    with pytest.raises(
        ConfigError, match=r"precision = 'fp16': fp16 training needs a CUDA GPU, but device is cpu"
    ):
        RunConfig.parse({"precision": "fp16", "device": "cpu"})
    with pytest.raises(ConfigError, match=r"num_devices = 0: .*Fix: use a whole number of at least 1"):
        RunConfig.parse({"num_devices": 0})
    # Fine on their own and together:
    assert RunConfig.parse({"num_devices": 2, "device": "cpu"}).num_devices == 2
    assert (
        RunConfig.parse({"method": "qlora", "optimizer": "paged_adamw_8bit", "device": "cuda"}).method
        == "qlora"
    )


def test_every_setting_has_a_widget_in_the_train_tab():
    from ui.train_tab import BASIC, FIELDS

    assert sorted(FIELDS) == sorted(RunConfig.model_fields)
    assert len(FIELDS) == len(set(FIELDS))
    assert len(BASIC) <= 8 and {"base_model", "method", "max_steps", "learning_rate"} <= set(BASIC)


def test_min_steps_gives_a_small_dataset_more_passes_and_leaves_a_large_one_alone():
    from backend.jobs import estimate
    from backend.jobs.config import MAX_AUTO_PASSES, passes_for

    cfg = RunConfig.parse({"num_epochs": 2, "min_steps": 60, "batch_size": 8})
    assert passes_for(cfg, 301) == 2  # 38 steps a pass: 76 steps already
    assert estimate.planned_steps(cfg, 301) == 76
    small = passes_for(cfg, 84)  # 11 steps a pass: 2 passes would be 22 steps
    assert small == pytest.approx(60 / 11)
    assert estimate.planned_steps(cfg, 84) == 60
    assert passes_for(cfg, 8) == MAX_AUTO_PASSES  # one step a pass: never 60 passes over the same 8 rows
    assert passes_for(cfg.updated(min_steps=0), 84) == 2
    assert estimate.planned_steps(cfg.updated(max_steps=7), 84) == 7  # max_steps wins
