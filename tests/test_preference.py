"""Preference tuning (issue 12): preference and good/bad data in, the dpo / orpo / kto objectives, their checks,
their charts and their scores."""

from __future__ import annotations

import csv
import io
import json
import threading
from pathlib import Path

import pytest

from backend.data.datasets import import_dataset, inspect_file, load_examples
from backend.data.readers import DataError
from backend.data.shapes import preference_columns, unpaired
from backend.jobs.admission import Admission
from backend.jobs.config import ConfigError, RunConfig
from backend.jobs.handoff import START_ADAPTER, JobSpec, last_checkpoint
from backend.serving import evaluate
from backend.settings import CAPITALS_CSV
from tests.cli_util import JOB_TEST_TIMEOUT_S

# -- data in -------------------------------------------------------------------------------------------------------


def rows_csv(header: list[str], rows: list[list[str]]) -> str:
    out = io.StringIO()
    w = csv.writer(out)
    w.writerow(header)
    w.writerows(rows)
    return out.getvalue()


def test_pairs_of_text_are_detected_and_bad_rows_are_reported_with_their_row(store, paths, csv_file):
    f = csv_file(
        rows_csv(
            ["question", "chosen", "rejected"],
            [
                ["What is 2+2?", "4", "5"],
                ["Capital of France?", "Paris", "Lyon"],
                ["Same?", "yes", "yes"],
                ["", "x", "y"],
                ["Empty?", "yes", ""],
                ["Sky?", "Blue", "Green"],
            ],
        ),
        "pairs.csv",
    )
    preview = inspect_file(f)
    assert preview.shape == "preference"
    assert preview.mapping == {
        "prompt": "question",
        "chosen": "chosen",
        "rejected": "rejected",
        "system": None,
    }
    record, report = import_dataset(store, paths, f, validation="none")
    frame = load_examples(record)
    assert list(frame["chosen"]) == ["4", "Paris", "Blue"] and list(frame["rejected"]) == [
        "5",
        "Lyon",
        "Green",
    ]
    assert json.loads(frame["prompt"].iloc[0]) == [{"role": "user", "content": "What is 2+2?"}]
    assert report.dropped["same_answers"] == {"count": 1, "rows": [4]}
    assert report.dropped["empty_prompt"] == {"count": 1, "rows": [5]}
    assert report.dropped["empty_rejected"] == {"count": 1, "rows": [6]}
    assert "the better and the worse answer are the same text (row 4)" in report.summary()


def test_ultrafeedback_conversations_give_the_prompt_and_a_mismatched_pair_is_left_out(
    store, paths, csv_file
):
    def conv(q: str, a: str) -> list[dict]:
        return [{"role": "user", "content": q}, {"role": "assistant", "content": a}]

    rows = [
        {"prompt": "Hi", "chosen": conv("Hi", "Hello! How can I help?"), "rejected": conv("Hi", "What.")},
        {"prompt": "Bye", "chosen": conv("Bye", "Goodbye!"), "rejected": conv("Bye", "k")},
        {"prompt": "X", "chosen": conv("X", "a"), "rejected": conv("Y", "b")},
    ]
    f = csv_file("".join(json.dumps(r) + "\n" for r in rows), "uf.jsonl")
    record, report = import_dataset(store, paths, f, validation="none")
    frame = load_examples(record)
    assert list(frame["chosen"]) == ["Hello! How can I help?", "Goodbye!"]
    assert json.loads(frame["prompt"].iloc[1]) == [{"role": "user", "content": "Bye"}]
    assert report.dropped["prompts_differ"] == {"count": 1, "rows": [3]}


def test_hh_rlhf_text_becomes_a_multi_turn_prompt_without_a_prompt_column(store, paths, csv_file):
    rows = [
        {
            "chosen": "\n\nHuman: Hi\n\nAssistant: Hello\n\nHuman: A joke?\n\nAssistant: Why did the hen cross?",
            "rejected": "\n\nHuman: Hi\n\nAssistant: Hello\n\nHuman: A joke?\n\nAssistant: No.",
        },
        {
            "chosen": "\n\nHuman: Bread?\n\nAssistant: Knead, rise, bake.",
            "rejected": "\n\nHuman: Bread?\n\nAssistant: ?",
        },
    ]
    f = csv_file("".join(json.dumps(r) + "\n" for r in rows), "hh.jsonl")
    record, _ = import_dataset(store, paths, f, validation="none")
    frame = load_examples(record)
    assert json.loads(frame["prompt"].iloc[0]) == [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello"},
        {"role": "user", "content": "A joke?"},
    ]
    assert list(frame["chosen"]) == ["Why did the hen cross?", "Knead, rise, bake."]
    assert list(frame["rejected"]) == ["No.", "?"]


def test_plain_answers_with_no_prompt_column_are_refused_with_the_fix(store, paths, csv_file):
    f = csv_file(rows_csv(["chosen", "rejected"], [["a", "b"], ["c", "d"]]), "noprompt.csv")
    with pytest.raises(
        DataError, match="no prompt column was chosen.*Fix: choose the column that holds the prompts"
    ):
        import_dataset(store, paths, f)
    assert store.list_datasets() == []


def test_good_and_bad_answers_are_detected_and_a_label_that_is_neither_names_its_row(store, paths, csv_file):
    f = csv_file(
        rows_csv(
            ["prompt", "completion", "label"],
            [
                ["2+2?", "4", "true"],
                ["2+2?", "5", "false"],
                ["Capital?", "Paris", "👍"],
                ["Capital?", "Rome", "👎"],
            ],
        ),
        "kto.csv",
    )
    assert inspect_file(f).shape == "feedback"
    record, _ = import_dataset(store, paths, f, validation="none")
    assert list(load_examples(record)["label"]) == ["true", "false", "true", "false"]
    bad = csv_file(
        rows_csv(["prompt", "completion", "label"], [["a", "b", "yes"], ["c", "d", "maybe"]]), "bad.csv"
    )
    with pytest.raises(
        DataError, match=r"bad.csv: row 3, column 'label' says 'maybe'.*Fix: mark each answer"
    ):
        import_dataset(store, paths, bad, shape="feedback")
    assert [d.name for d in store.list_datasets()] == ["kto"]  # nothing half-imported


def test_stored_rows_become_trl_conversations_and_kto_gets_both_kinds():
    frame = {
        "prompt": [json.dumps([{"role": "user", "content": "Q"}])],
        "chosen": ["good"],
        "rejected": ["bad"],
    }
    cols = preference_columns(frame, "preference", system_prompt="Be kind.")
    assert cols["prompt"] == [[{"role": "system", "content": "Be kind."}, {"role": "user", "content": "Q"}]]
    assert cols["chosen"] == [[{"role": "assistant", "content": "good"}]]
    kto = unpaired(cols)
    assert [c[0]["content"] for c in kto["completion"]] == ["good", "bad"] and kto["label"] == [True, False]


# -- settings ------------------------------------------------------------------------------------------------------


def test_every_preference_setting_problem_is_reported_at_once():
    with pytest.raises(ConfigError) as err:
        RunConfig.parse({"objective": "ppo", "beta": 0, "max_steps": 0})
    fields = {p.field for p in err.value.problems}
    assert fields == {"objective", "beta", "max_steps"}
    assert "use sft, dpo, orpo or kto" in str(err.value)
    with pytest.raises(ConfigError, match="batching = 'packed': dpo compares two answers"):
        RunConfig.parse({"objective": "dpo", "batching": "packed"})


def test_the_objective_must_fit_the_dataset_and_continue_from_must_be_a_finished_run(store, paths, csv_file):
    from tests.conftest import add_dataset_record

    pairs, _ = import_dataset(
        store,
        paths,
        csv_file(rows_csv(["prompt", "chosen", "rejected"], [["a", "b", "c"], ["d", "e", "f"]]), "p.csv"),
    )
    examples, _ = import_dataset(store, paths, CAPITALS_CSV, name="capitals")
    admission = Admission(store, paths, gpu_probe=list)
    sft_on_pairs = admission.objective_problems(pairs, RunConfig.parse({"objective": "sft"}))
    assert [p.field for p in sft_on_pairs] == ["objective"]
    assert "use objective dpo or orpo or kto" in sft_on_pairs[0].fix
    dpo_on_examples = admission.objective_problems(examples, RunConfig.parse({"objective": "dpo"}))
    assert "make one from your blind-test votes" in dpo_on_examples[0].fix
    assert admission.objective_problems(pairs, RunConfig.parse({"objective": "kto"})) == []
    all_good, _ = import_dataset(
        store,
        paths,
        csv_file(
            rows_csv(["prompt", "completion", "label"], [["a", "b", "1"], ["c", "d", "yes"]]), "good.csv"
        ),
        validation="none",
    )
    one_kind = admission.objective_problems(all_good, RunConfig.parse({"objective": "kto"}))
    assert (
        one_kind[0].field == "dataset"
        and "every training answer of this dataset is marked good" in one_kind[0].message
    )
    assert "add answers marked bad" in one_kind[0].fix

    add_dataset_record(store)
    store.add_job("run-old", "ds-1", "test", {"base_model": "other-model"}, str(paths.job_dir("run-old")))
    unknown = admission.objective_problems(
        pairs, RunConfig.parse({"objective": "dpo", "continue_from": "run-x"})
    )
    assert unknown[0].field == "continue_from" and "there is no run" in unknown[0].message
    unfinished = admission.objective_problems(
        pairs, RunConfig.parse({"objective": "dpo", "continue_from": "run-old"})
    )
    assert "has no finished adapter" in unfinished[0].message


def test_preference_configs_carry_our_settings_into_trl():
    from backend.models.devices import detect
    from backend.training import hf

    caps = detect("cpu", "fp32")
    cfg = RunConfig.parse({"objective": "dpo", "beta": 0.25, "max_length": 300, "learning_rate": 5e-5})
    dpo = hf.preference_config(cfg, caps, "/tmp/out")
    assert (type(dpo).__name__, dpo.beta, dpo.max_length, dpo.learning_rate) == ("DPOConfig", 0.25, 300, 5e-5)
    kto = hf.preference_config(cfg.updated(objective="kto"), caps, "/tmp/out", kto_counts=(10, 30))
    assert (kto.desirable_weight, kto.undesirable_weight) == (3.0, 1.0)  # the rarer good answers weigh more
    assert kto.train_sampling_strategy == "sequential"
    orpo = hf.preference_config(cfg.updated(objective="orpo"), caps, "/tmp/out")
    assert type(orpo).__name__ == "ORPOConfig" and orpo.remove_unused_columns is False
    assert hf.kto_weights(5, 5) == (1.0, 1.0)
    assert dpo.loss_type == ["sigmoid"]  # plain DPO by default
    rpo = hf.preference_config(cfg.updated(sft_weight=1.0), caps, "/tmp/out")
    assert (rpo.loss_type, rpo.loss_weights) == (["sigmoid", "sft"], [1.0, 1.0])


# -- scores --------------------------------------------------------------------------------------------------------


def test_the_judge_prefers_the_answer_closer_to_the_better_one():
    better, worse = "The capital of France is Paris.", "The capital of France is Rome."
    assert evaluate.judge_score("Paris is the capital of France.", better, worse) > 0
    assert evaluate.judge_score("It is Rome.", better, worse) < 0
    tally = evaluate.judge_tally([0.5, 0.0, -0.2, 0.1], [0.1, 0.005, 0.3, 0.1])
    assert (tally["wins"], tally["ties"], tally["losses"]) == (1, 2, 1) and tally["win_rate"] == 0.5
    assert evaluate.preference_accuracy([1.0, 2.0, 3.0], [2.0, 1.0, 4.0]) == pytest.approx(2 / 3)


def test_preference_accuracy_is_per_token_so_a_short_worse_answer_does_not_win_by_its_length():
    """A long better answer, likelier per token (20 tokens at loss 1.0: 20 in all), against a short worse one
    (4 tokens at loss 2.0: 8 in all): per token the better answer is ahead; a sum would pick the worse one."""
    better_total, better_tokens, worse_total, worse_tokens = 20.0, 20, 8.0, 4
    per_token = evaluate.preference_accuracy([better_total / better_tokens], [worse_total / worse_tokens])
    assert per_token == 1.0
    assert evaluate.preference_accuracy([better_total], [worse_total]) == 0.0  # what a sum would say


def test_the_scoring_path_compares_answers_per_token_not_in_total(tiny_model):
    """Through the real scoring code (tokenizer, chat template, batching, masking) with a model whose every token
    of the better answer is likely and the rest unlikely: the long better answer loses as a whole, wins per token."""
    from types import SimpleNamespace

    import torch
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(tiny_model))
    prompt = [{"role": "user", "content": "What is the capital of France?"}]
    better = "The capital of France is Paris, a city on the Seine with about two million people."
    worse = "Rome."

    def scored_ids(answer: str) -> list[int]:  # the answer's tokens as scored: the template's end of turn too
        start = tok.apply_chat_template(prompt, add_generation_prompt=True, return_dict=True)["input_ids"]
        full = tok.apply_chat_template(prompt + [{"role": "assistant", "content": answer}], return_dict=True)
        return list(full["input_ids"])[len(start) :]

    likely = sorted(set(scored_ids(better)))

    class Model:
        device = torch.device("cpu")

        def __call__(self, input_ids, attention_mask):
            logits = torch.zeros(*input_ids.shape, len(tok))
            logits[..., likely] = 4.0
            return SimpleNamespace(logits=logits)

    loaded = SimpleNamespace(tokenizer=tok, model=Model())
    examples = [(prompt, better), (prompt, worse)]
    (better_total, better_n), (worse_total, worse_n) = evaluate.answer_totals(loaded, examples)
    # as a whole the short worse answer is likelier: a sum would pick it
    assert better_n > 2 * worse_n and better_total > worse_total
    better_mean, worse_mean = evaluate.answer_losses(loaded, examples)
    assert better_mean == pytest.approx(better_total / better_n)
    assert worse_mean == pytest.approx(worse_total / worse_n)
    assert evaluate.preference_accuracy([better_mean], [worse_mean]) == 1.0
    assert evaluate.preference_accuracy([better_total], [worse_total]) == 0.0
    about = evaluate.ABOUT["pref_accuracy"]  # the score's help line says so
    assert "per token" in about and "shorter answer" in about


def scores(base: float, tuned: float, start: float | None = None) -> dict:
    """An eval.json's preference accuracies (and the run it started from, run-sft, when ``start`` is given)."""
    out = {"base": {"pref_accuracy": base}, "tuned": {"pref_accuracy": tuned}}
    if start is not None:
        out.update(start_run="run-sft", start={"pref_accuracy": start})
    return out


def test_a_run_that_learned_but_does_not_prefer_the_better_answers_says_what_to_change():
    said = evaluate.preference_gap(0.94, scores(0.21, 0.21), {"objective": "dpo"}, "validation")
    assert "Reward accuracy ended at 0.94 on the validation pairs" in said
    assert "likelier in 21% of held-out pairs (its preference accuracy; 21% for the base model)" in said
    for change in ("more passes", "a higher learning rate", "first an SFT run on the better answers"):
        assert change in said
    assert "“Start from a finished run's adapter”" in said
    # each bound of the rule, on both sides
    assert evaluate.preference_gap(0.74, scores(0.21, 0.21)) == ""  # reward accuracy not high: no puzzle
    assert evaluate.preference_gap(0.75, scores(0.21, 0.21))
    assert evaluate.preference_gap(0.94, scores(0.50, 0.65)) == ""  # up 0.15 and above 0.6: clearly better
    assert evaluate.preference_gap(0.94, scores(0.60, 0.65))  # up 0.05 only
    assert evaluate.preference_gap(0.94, scores(0.30, 0.55))  # up 0.25 but still under 0.6
    # missing numbers: nothing said
    assert evaluate.preference_gap(None, scores(0.2, 0.2)) == "" and evaluate.preference_gap(0.9, None) == ""
    assert evaluate.preference_gap(0.9, {"base": {}, "tuned": {"pref_accuracy": float("nan")}}) == ""


def test_a_continued_run_is_compared_with_the_run_it_started_from():
    continued = {"continue_from": "run-sft", "objective": "dpo"}
    said = evaluate.preference_gap(0.9, scores(0.2, 0.72, start=0.7), continued, "training")
    assert "on the training batches" in said and "(its preference accuracy; 70% for run-sft)" in said
    # it already started from a run: no "SFT first", but the weight that also learns the better answers
    assert "SFT run" not in said and "“Also learn the better answers” (1.0)" in said
    # far above the base, but that is the run it started from's doing: still said; clearly above its start: not
    assert evaluate.preference_gap(0.9, scores(0.2, 0.72, start=0.5), continued) == ""


def test_the_runs_tab_explains_the_preference_charts_and_a_gap_under_the_scores(store, paths, status):
    from backend.core.status import JobStatus
    from tests.conftest import add_dataset_record
    from ui import runs_tab
    from ui.context import AppContext

    ctx = AppContext(paths=paths, store=store, manager=None, models=None)  # type: ignore[arg-type]
    add_dataset_record(store)
    job_dir = paths.job_dir("run-p")
    job_dir.mkdir(parents=True)
    store.add_job("run-p", "ds-1", "test", {"objective": "dpo"}, str(job_dir))
    status.set("run-p", JobStatus.RUNNING, pid=1)
    for step in (1, 2):
        store.add_metrics("run-p", step, {"rewards/margins": 0.2 * step, "rewards/accuracies": 0.5 * step})
    store.add_metrics("run-p", 2, {"eval_rewards/accuracies": 0.94})
    charts = dict(zip(runs_tab.CHART_NAMES, runs_tab.job_charts("run-p", ctx), strict=True))
    assert charts["note"]["visible"] is True and charts["note"]["value"] == runs_tab.PREF_NOTE
    # the charts keep TRL's name: "preference accuracy" is the scores' other measure
    assert all("Preference accuracy" not in title for _, title in runs_tab.PREF_CHARTS)
    status.set("run-p", JobStatus.SUCCEEDED, result={})
    summary, _, _ = runs_tab.job_panel("run-p", ctx)
    assert "Reward accuracy ended" not in summary  # not scored yet: nothing to compare
    evaluate_json = {"n_examples": 8, "source": "the validation split", **scores(0.21, 0.21)}
    for side in ("base", "tuned"):
        evaluate_json[side].update(dict.fromkeys(evaluate.METRICS, 1.0))
    (job_dir / "eval.json").write_text(json.dumps(evaluate_json))
    summary, _, _ = runs_tab.job_panel("run-p", ctx)
    assert "Reward accuracy ended at 0.94 on the validation pairs" in summary and "td-note" in summary
    # an SFT run: no preference charts, no note
    store.add_job("run-s", "ds-1", "test", {"objective": "sft"}, str(paths.job_dir("run-s")))
    charts = dict(zip(runs_tab.CHART_NAMES, runs_tab.job_charts("run-s", ctx), strict=True))
    assert charts["note"]["visible"] is False


def test_the_data_tab_shows_both_answers_the_worse_one_as_what_to_avoid(paths, tiny_model):
    from ui import data_tab

    row = {
        "prompt": json.dumps([{"role": "user", "content": "Capital of France?"}]),
        "chosen": "Paris.",
        "rejected": "Rome.",
    }
    html = data_tab.example_html(paths, "tiny-offline", "preference", row, "", "row 2")
    good, bad = html.split('id="td-rendered-avoid"')
    assert "Better answer: row 2" in good and "Paris." in good and "Rome." not in good
    assert "Worse answer: row 2" in bad and "Rome." in bad and "learns <b>not</b> to write" in bad
    assert data_tab.AVOID_STYLE in bad and data_tab.AVOID_STYLE not in good


# -- training (slow: the tiny model, in this process) --------------------------------------------------------------

CURT = ("No idea.", "Look it up.", "Not telling.", "Whatever.")


def style_pairs(csv_file) -> str:
    """The capitals with a full answer preferred to a curt one: a preference a tiny model can learn and carry over
    to held-out prompts (the capitals themselves it cannot know)."""
    rows = list(csv.DictReader(open(CAPITALS_CSV, encoding="utf-8")))
    return str(
        csv_file(
            rows_csv(
                ["prompt", "chosen", "rejected"],
                [[r["question"], r["answer"], CURT[i % len(CURT)]] for i, r in enumerate(rows)],
            ),
            "style-pairs.csv",
        )
    )


def preference_recipe(paths, store, job_id: str, **values):
    """A recipe on the "style" dataset (the fixture below), as the worker would run it."""
    from backend.training.recipe import Recipe

    record = store.get_dataset("style")
    config = RunConfig.parse(
        {
            "base_model": "tiny-offline",
            "max_steps": 30,
            "batch_size": 8,
            "save_steps": 0,
            "max_length": 64,
            "precision": "fp32",
            "eval_steps": 10,
            "score_examples": 8,
            **values,
        }
    )
    job_dir = paths.job_dir(job_id)
    job_dir.mkdir(parents=True, exist_ok=True)
    spec = JobSpec(
        job_id, str(paths.home), record.id, record.path, config.model_dump(), shape=record.info["shape"]
    )
    spec.save(job_dir)
    store.add_job(job_id, record.id, "test", config.model_dump(), str(job_dir))
    return Recipe(spec, job_dir, store, threading.Event())


@pytest.fixture
def style_dataset(paths, store, csv_file, tiny_model):
    """24 pairs to train on and 8 held out (the validation file)."""
    path = style_pairs(csv_file)
    # a validation file of its own: held-out capitals the run never sees
    rows = list(csv.reader(open(path, encoding="utf-8")))
    train = csv_file(rows_csv(rows[0], rows[1:25]), "train.csv")
    held = csv_file(rows_csv(rows[0], rows[25:]), "held.csv")
    return import_dataset(store, paths, train, name="style", validation_file=held)[0]


@pytest.mark.slow
@pytest.mark.parametrize(
    "objective,method", [("dpo", "lora"), ("orpo", "lora"), ("kto", "lora"), ("dpo", "qlora")]
)
def test_a_preference_run_learns_to_prefer_the_better_answer_on_held_out_prompts(
    paths, store, style_dataset, objective, method
):
    """QLoRA too: DPO's reference pass is a no-grad forward at every step, the kind that makes bitsandbytes repack
    4-bit weights for inference on some CPUs (see test_training's QLoRA trap test); it must still learn."""
    lr = {"dpo": 0.003, "orpo": 0.01, "kto": 0.003}[objective]  # ORPO also learns the answers themselves
    recipe = preference_recipe(
        paths, store, f"run-{objective}", objective=objective, learning_rate=lr, method=method
    )
    recipe.setup()
    result = recipe.train()
    assert result.status == "succeeded" and result.extra["objective"] == objective
    margins = [v for _, _, v in store.metrics(f"run-{objective}", "eval_rewards/margins")]
    assert len(margins) >= 2 and margins[-1] > margins[0] + 0.05, margins  # the charts' margin rises
    if objective != "kto":  # KTO logs no accuracy
        accuracy = [v for _, _, v in store.metrics(f"run-{objective}", "eval_rewards/accuracies")]
        assert accuracy[-1] >= 0.75, accuracy
    recipe.score(result)
    scores = json.loads((paths.job_dir(f"run-{objective}") / "eval.json").read_text())
    # the tuned model finds the better answer of held-out pairs more likely than the base does
    assert scores["tuned"]["pref_accuracy"] >= 0.75 and scores["base"]["pref_accuracy"] < 0.75
    assert scores["judge"]["games"] == 8


@pytest.mark.slow
def test_dpo_continues_from_an_sft_run_and_measures_change_against_it(paths, store, style_dataset):
    from tests.test_training import recipe_for

    first = recipe_for(paths, store, "run-sft", max_steps=4)
    first.setup()
    sft_result = first.train()
    assert sft_result.status == "succeeded"
    start = paths.job_dir("run-dpo") / START_ADAPTER
    import shutil

    shutil.copytree(sft_result.adapter_dir, start)  # what the manager does for continue_from
    recipe = preference_recipe(
        paths, store, "run-dpo", objective="dpo", learning_rate=0.003, continue_from="run-sft", max_steps=3
    )
    recipe.setup()
    result = recipe.train()
    assert result.status == "succeeded" and result.extra["continued_from"] == "run-sft"
    first_chosen = store.metrics("run-dpo", "rewards/chosen")[0][2]
    # the reference is the SFT adapter (a frozen copy), not the base: at the first step policy and reference agree
    assert abs(first_chosen) < 1e-4
    import torch
    from safetensors.torch import load_file

    before = load_file(str(start / "adapter_model.safetensors"))
    after = load_file(str(paths.job_dir("run-dpo") / "adapter" / "adapter_model.safetensors"))
    assert before.keys() == after.keys()
    assert not (paths.job_dir("run-dpo") / "adapter" / "ref").exists()  # TRL's frozen copy is not shipped
    assert any(not torch.equal(before[k], after[k]) for k in before)  # it trained on from there

    # Scored against the base and against the run it started from: three columns, two verdicts of the judge.
    recipe.score(result)
    scores = json.loads((paths.job_dir("run-dpo") / "eval.json").read_text())
    assert scores["start_run"] == "run-sft" and scores["judge_start"]["games"] == 8
    losses = [scores[side]["eval_loss"] for side in ("base", "start", "tuned")]
    assert len(set(losses)) == 3, losses  # three different models answered
    table = evaluate.scores_markdown(scores)
    assert "| | base model | started from run-sft | fine-tuned |" in table
    assert "automatic judge, fine-tuned vs run-sft: win rate" in table
    rows = list(csv.DictReader(open(paths.job_dir("run-dpo") / "eval_examples.csv", encoding="utf-8")))
    assert len(rows) == 8 and all(r["start_answer"] is not None for r in rows)
    assert {"base_answer", "start_answer", "tuned_answer", "start_rougeL"} <= set(rows[0])
    # The worker scored the start from TRL's in-memory reference; `tunedeck eval` and Compare load the run's copy
    # of that adapter from disk: the same model, the same scores.
    from backend.serving.generate import ModelPool

    again = evaluate.score(store, store.get_job("run-dpo"), result.adapter_dir, ModelPool(paths), limit=8)
    assert again.start["eval_loss"] == pytest.approx(scores["start"]["eval_loss"], abs=1e-4)
    assert again.tuned["eval_loss"] == pytest.approx(scores["tuned"]["eval_loss"], abs=1e-4)


def test_the_rewards_chart_gets_numbers_not_labels(store, paths):
    """Gradio fixes a chart's axis type from its first frame: the rewards must be floats from the start."""
    from tests.conftest import add_dataset_record
    from ui import runs_tab

    add_dataset_record(store)
    store.add_job("run-p", "ds-1", "test", {"objective": "dpo"}, str(paths.job_dir("run-p")))
    assert runs_tab.reward_points(store, "run-p") is None  # nothing logged: no chart
    for step in (1, 2):
        store.add_metrics("run-p", step, {"rewards/chosen": 0.1 * step, "rewards/rejected": -0.2 * step})
    frame = runs_tab.reward_points(store, "run-p")
    assert str(frame["reward"].dtype) == "float64"
    assert set(frame["series"]) == set(runs_tab.REWARD_SERIES)


@pytest.mark.slow
@pytest.mark.parametrize("objective,from_sft", [("dpo", False), ("kto", False), ("dpo", True)])
def test_a_cancelled_preference_run_resumes_exactly_where_it_stopped(
    paths, store, style_dataset, objective, from_sft
):
    """Cancel at step 4, resume from its checkpoint: steps 5-8 have the losses and reward margins of a run that was
    never interrupted (KTO's shuffled order, and the frozen reference of a run continued from an SFT run, included)."""
    import shutil
    from dataclasses import replace

    from tests.test_training import cancel_when_step_begins, recipe_for

    settings = {"objective": objective, "learning_rate": 0.003, "max_steps": 8, "eval_steps": 0}
    settings["lr_scheduler"] = "linear"
    if from_sft:
        sft = recipe_for(paths, store, "run-sft", max_steps=4)
        sft.setup()
        start = sft.train().adapter_dir
        settings["continue_from"] = "run-sft"

    def recipe(job_id: str):
        if from_sft:  # what the manager does for continue_from, on the first run and on its resume alike
            shutil.copytree(start, paths.job_dir(job_id) / START_ADAPTER)
        return preference_recipe(paths, store, job_id, **settings)

    whole = recipe("run-whole")
    whole.setup()
    assert whole.train().status == "succeeded"

    first = recipe("run-first")
    first.setup()
    cancel_when_step_begins(first, 3)
    stopped = first.train()
    assert stopped.status == "cancelled" and stopped.steps == 4
    second = recipe("run-second")
    second.spec = replace(second.spec, resume_from=str(last_checkpoint(first.job_dir)))
    second.setup()
    result = second.train()
    assert result.status == "succeeded" and result.extra["resumed_from_step"] == 4

    def curve(job_id: str, name: str) -> dict[int, float]:
        return {s: v for s, _, v in store.metrics(job_id, name)}

    for name in ("loss", "rewards/margins"):
        resumed, uninterrupted = curve("run-second", name), curve("run-whole", name)
        assert sorted(resumed) == [5, 6, 7, 8], name  # the step count goes on from the checkpoint
        for step in (5, 6, 7, 8):
            assert resumed[step] == pytest.approx(uninterrupted[step], abs=1e-4), (name, step)


@pytest.mark.slow
@pytest.mark.timeout(JOB_TEST_TIMEOUT_S)
def test_dpo_over_two_processes_through_accelerate_launch(tmp_path, tiny_model_build, csv_file):
    """num_devices 2 on a CPU: two workers run TRL's DPOTrainer together over gloo, one adapter, one point per step."""
    from backend.core.store import Store
    from backend.settings import Paths
    from tests.cli_util import offline_env, tunedeck_json, tunedeck_wait
    from tests.conftest import link_tiny_model

    paths = Paths.from_env(tmp_path / "home")
    link_tiny_model(paths, tiny_model_build)
    env = offline_env(paths.home)
    tunedeck_json(env, "data", "add", style_pairs(csv_file), "--name", "style")
    settings = ["objective=dpo", "num_devices=2", "device=cpu", "max_steps=4", "score_examples=0"]
    args = [x for s in settings for x in ("--set", s)]
    res = tunedeck_wait(env, "train", "style", "--preset", "tiny-offline", *args, "--wait", "--json")
    assert res.returncode == 0, res.stderr
    done = json.loads(res.stdout)
    assert done["status"] == "succeeded", done["reason"]
    assert done["result"]["extra"]["world_size"] == 2 and done["result"]["extra"]["objective"] == "dpo"
    margins = Store(paths.db).metrics(done["id"], "rewards/margins")
    assert [s for s, _, _ in margins] == [1, 2, 3, 4]  # one writer: one point per step
    adapters = list(Path(done["job_dir"]).rglob("adapter_model.safetensors"))
    assert [p.parent.name for p in adapters if "checkpoint" not in str(p)] == ["adapter"]


def test_a_dpo_run_from_the_base_model_is_told_what_teaches_the_answers_and_which_preset_does():
    from backend.jobs.admission import FROM_BASE_PRESET, start_note
    from backend.jobs.presets import load_preset

    dpo = load_preset("smollm2-135m-dpo").config
    note = start_note(dpo)
    assert "No run to start from" in note and FROM_BASE_PRESET in note and "objective sft" in note
    assert load_preset(FROM_BASE_PRESET).config.objective == "dpo"  # the preset the note names exists
    assert start_note(dpo.updated(continue_from="run-1")) == ""
    assert start_note(dpo.updated(objective="orpo")) == ""  # ORPO learns the better answers itself
    assert start_note(load_preset("smollm2-135m").config) == ""
    other = start_note(dpo.updated(base_model="tiny-offline"))
    assert other and FROM_BASE_PRESET not in other  # the preset is for the starter model only
