"""Side-by-side answers, scores and blind votes: whether a fine-tune helped, shown the same way every time."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import pytest

from backend.core.store import Store, VoteStore
from backend.jobs import handoff
from backend.serving import evaluate
from backend.settings import Paths
from tests.cli_util import home_with_sample, train_sample, tunedeck, tunedeck_json
from tests.conftest import add_dataset_record

QUESTION = "What is the capital of France?"


# -- pure scoring, checked against values computed by hand ---------------------------------------------------------


def test_rouge_l_bleu_chrf_and_exact_match_on_a_fixed_example() -> None:
    s = evaluate.score_pair("the cat is on the mat", "the cat sat on the mat")
    # ROUGE-L: the longest common subsequence "the cat on the mat" is 5 of 6 tokens on both sides -> F = 5/6.
    assert s["rougeL"] == pytest.approx(5 / 6)
    # BLEU: n-gram precisions 5/6, 3/5, 1/4 and (no 4-gram match, sacrebleu's exp smoothing) 1/(2*3);
    # equal lengths so no brevity penalty: 100 * geometric mean.
    expected_bleu = 100 * math.exp(
        (math.log(5 / 6) + math.log(3 / 5) + math.log(1 / 4) + math.log(1 / 6)) / 4
    )
    assert s["bleu"] == pytest.approx(expected_bleu, abs=1e-6)
    assert s["exact_match"] == 0.0
    same = evaluate.score_pair("  The capital is   Paris. ", "the capital is paris.")
    assert same["exact_match"] == 1.0
    perfect = evaluate.score_pair("Paris is the capital.", "Paris is the capital.")
    assert perfect["bleu"] == pytest.approx(100) and perfect["chrf"] == pytest.approx(100)
    assert perfect["rougeL"] == pytest.approx(1.0)
    nothing = evaluate.score_pair("xyz", "Paris is the capital.")
    assert nothing["rougeL"] == 0.0 and nothing["exact_match"] == 0.0


def test_corpus_scores_average_rouge_and_count_exact_matches() -> None:
    c = evaluate.corpus_scores(["a b c", "x y z"], ["a b c", "p q r"])
    assert c["exact_match"] == 0.5
    assert c["rougeL"] == pytest.approx(0.5)


def test_csv_cells_that_look_like_formulas_stay_text(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    evaluate.write_csv([{"prompt": '=HYPERLINK("x")', "answer": "+1", "ok": "plain", "n": -3}], path)
    row = next(csv.DictReader(path.open()))
    assert row == {"prompt": '\'=HYPERLINK("x")', "answer": "'+1", "ok": "plain", "n": "-3"}


def test_blind_votes_tally_into_win_rates(store: Store) -> None:
    votes = VoteStore(store)
    votes.add("q1", "base model", "run-a", "run-a")
    votes.add("q2", "run-a", "base model", "tie")
    votes.add("q3", "run-a", "base model", "base model")
    tally = votes.tally()
    assert tally["run-a"] == {"wins": 1, "losses": 1, "ties": 1, "games": 3}
    assert tally["base model"] == {"wins": 1, "losses": 1, "ties": 1, "games": 3}
    with pytest.raises(ValueError, match="winner must be"):
        votes.add("q", "a", "b", "c")
    assert VoteStore(Store(store.path)).tally() == tally  # stored, not in memory


# -- with real models ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory: pytest.TempPathFactory, tiny_model_build: Path) -> dict:
    root = tmp_path_factory.mktemp("compare-home")
    env = home_with_sample(root, tiny_model_build)
    first = train_sample(env, steps=30)
    second = train_sample(env, steps=8)  # a weaker run: its answers differ from the first's
    return {
        "root": root,
        "env": env,
        "runs": [first["id"], second["id"]],
        "adapters": [first["adapter_dir"], second["adapter_dir"]],
    }


@pytest.mark.slow
def test_switching_adapters_on_one_base_answers_like_separately_loaded_models(two_runs: dict) -> None:
    from backend.serving.generate import Decoding, ModelPool, generate, load

    paths = Paths.from_env(two_runs["root"])
    msgs = [{"role": "user", "content": QUESTION}]
    d = Decoding(max_new_tokens=20)
    separate = [
        generate(load("tiny-offline", a, paths), msgs, decoding=d) for a in [None, *two_runs["adapters"]]
    ]
    assert len(set(separate)) == 3  # base and both runs really differ, so the check below means something
    pool = ModelPool(paths)
    order = [None, two_runs["adapters"][0], None, two_runs["adapters"][1], two_runs["adapters"][0]]
    switched = []
    for adapter in order:
        loaded, mode = pool.use("tiny-offline", adapter)
        with mode:
            switched.append(generate(loaded, msgs, decoding=d))
    assert switched == [separate[0], separate[1], separate[0], separate[2], separate[1]]


@pytest.mark.slow
def test_compare_from_the_cli_matches_generate(two_runs: dict) -> None:
    out = tunedeck_json(
        two_runs["env"],
        "compare",
        *two_runs["runs"],
        "--base",
        "--prompt",
        QUESTION,
        "--max-new-tokens",
        "24",
    )
    assert [a["who"] for a in out["answers"]] == ["base: tiny-offline", *two_runs["runs"]]
    alone = tunedeck_json(
        two_runs["env"], "generate", two_runs["runs"][0], "--prompt", QUESTION, "--max-new-tokens", "24"
    )
    assert out["answers"][1]["answer"] == alone["reply"]


@pytest.mark.slow
def test_eval_scores_the_run_and_its_base_and_keeps_them_with_the_run(two_runs: dict) -> None:
    run = two_runs["runs"][0]
    out = tunedeck_json(two_runs["env"], "eval", run, "--limit", "12", "--max-new-tokens", "24")
    assert out["n_examples"] == 12
    assert out["tuned"]["eval_loss"] < out["base"]["eval_loss"]
    assert out["tuned"]["perplexity"] == pytest.approx(math.exp(out["tuned"]["eval_loss"]))
    assert out["tuned"]["rougeL"] > out["base"]["rougeL"]
    job_dir = Path(Store(Paths.from_env(two_runs["root"]).db).get_job(run).job_dir)
    saved = handoff.read_scores(job_dir)
    assert saved["tuned"] == out["tuned"]
    rows = list(csv.DictReader((job_dir / "eval_examples.csv").open()))
    assert len(rows) == 12 and {"prompt", "reference", "base_answer", "tuned_answer", "tuned_rougeL"} <= set(
        rows[0]
    )
    text = tunedeck(two_runs["env"], "eval", "run-does-not-exist")
    assert text.returncode == 2 and "no job" in text.stderr.lower()


def test_config_diff_shows_only_what_differs(store: Store, paths: Paths) -> None:
    from ui.compare_tab import config_diff
    from ui.context import AppContext

    add_dataset_record(store, "ds-1")
    store.add_job("run-a", "ds-1", "tiny-offline", {"learning_rate": 0.01, "lora_r": 16}, "/x/a")
    store.add_job("run-b", "ds-1", "tiny-offline", {"learning_rate": 0.001, "lora_r": 16}, "/x/b")
    ctx = AppContext(paths=paths, store=store, manager=None, models=None)  # type: ignore[arg-type]
    diff = config_diff(["run-a", "run-b"], True, ctx)
    assert list(diff["setting"]) == ["Learning rate"]  # in words, as the Train tab says it
    assert set(config_diff(["run-a", "run-b"], False, ctx)["setting"]) >= {
        "Learning rate",
        "Adapter size (rank)",
        "Dataset",
    }


def test_a_request_waits_only_for_a_training_job_that_holds_the_memory_it_needs() -> None:
    from backend.serving.modelserver import gpu_wait_message

    gib = 1024**3
    assert gpu_wait_message(16 * gib, 4 * gib, None) is None  # nothing to wait for: load and report any OOM
    assert gpu_wait_message(2 * gib, 4 * gib, "run-x") is None  # fits beside the training job
    msg = gpu_wait_message(16 * gib, 4 * gib, "run-x")
    assert "busy training run-x" in msg and "16.0 GB" in msg and "4.0 GB are free" in msg and "waits" in msg
    assert "pause the training: Cancel run-x" in msg and "Resume" in msg  # the person may choose to go first
