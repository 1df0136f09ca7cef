"""Votes become data: every blind vote keeps what was voted on, and the votes become a preference dataset.

What a person notices: a vote A or B turns into a pair (the winner's answer better than the loser's); an answer they
wrote is better than both; ties, self-pairs and votes from an older TuneDeck are left out and said so; the dataset
holds exactly those texts; the win rate over time is a chart from the first vote on; the CLI lists and exports.
"""

from __future__ import annotations

import json
import re
import sqlite3
from contextlib import closing
from pathlib import Path

import gradio as gr
import pytest

from backend.core.store import SCHEMA_VERSION, Store, Vote, VoteStore
from backend.data.datasets import load_examples
from backend.data.readers import DataError
from backend.serving import votes as V
from backend.settings import Paths
from tests.cli_util import offline_env, plain_peft_answer, tunedeck, tunedeck_json
from tests.conftest import add_dataset_record

BASE = "base model"


def vote(winner: str = "A", **kw) -> Vote:
    """A vote of run-1 (A) against the base (B) on "What is 2+2?", answers "4" and "5"."""
    fields = {
        "id": 1,
        "time": 1000.0,
        "prompt": "What is 2+2?",
        "left": "run-1",
        "right": BASE,
        "left_answer": "4",
        "right_answer": "5",
    }
    fields.update(kw)
    name = {"A": fields["left"], "B": fields["right"]}.get(winner, "tie")
    return Vote(winner=name, **fields)


def full_vote(votes: VoteStore, winner: str = "run-1", **kw) -> int:
    """A vote as the Compare tab stores it now: with answers, models and decoding."""
    args = {
        "system": "",
        "left_answer": "4",
        "right_answer": "5",
        "left_model": {"base_model": "tiny-offline", "run": "run-1", "adapter_dir": "/adapters/run-1"},
        "right_model": {"base_model": "tiny-offline", "run": None, "adapter_dir": None},
        "decoding": {"max_new_tokens": 128, "temperature": 0.0, "seed": 0},
    }
    args.update(kw)
    return votes.add(args.pop("prompt", "What is 2+2?"), "run-1", BASE, winner, **args)


# -- the store -----------------------------------------------------------------------------------------------------


def test_a_vote_keeps_the_answers_models_decoding_and_the_written_answer(store: Store) -> None:
    full_vote(
        VoteStore(store),
        system="Answer with a number.",
        better="2+2 is 4.",
        decoding={"max_new_tokens": 64, "temperature": 0.7, "seed": 3},
        at=1234.5,
    )
    (v,) = VoteStore(Store(store.path)).votes()  # read back from the file, not from memory
    assert (v.time, v.prompt, v.system, v.left, v.right, v.winner) == (
        1234.5,
        "What is 2+2?",
        "Answer with a number.",
        "run-1",
        BASE,
        "run-1",
    )
    assert (v.left_answer, v.right_answer, v.better) == ("4", "5", "2+2 is 4.")
    assert v.left_model == {"base_model": "tiny-offline", "run": "run-1", "adapter_dir": "/adapters/run-1"}
    assert v.right_model["adapter_dir"] is None and v.right_model["base_model"] == "tiny-offline"
    assert v.decoding == {"max_new_tokens": 64, "temperature": 0.7, "seed": 3}
    with pytest.raises(ValueError, match="both answers"):
        VoteStore(store).add("q", "a", "b", "a", left_answer="only one")


OLD_VOTES = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
INSERT INTO meta VALUES ('schema_version', '5');
CREATE TABLE votes (
    id INTEGER PRIMARY KEY AUTOINCREMENT, time REAL NOT NULL, prompt TEXT NOT NULL,
    left TEXT NOT NULL, right TEXT NOT NULL, winner TEXT NOT NULL
);
INSERT INTO votes (time, prompt, left, right, winner) VALUES (1.0, 'old question', 'base model', 'run-1', 'run-1');
INSERT INTO votes (time, prompt, left, right, winner) VALUES (2.0, 'old question', 'run-1', 'base model', 'tie');
"""


def test_an_old_votes_table_is_upgraded_in_place_and_its_votes_still_count(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    with closing(sqlite3.connect(path)) as c, c:
        c.executescript(OLD_VOTES)
    store = Store(path)
    old = VoteStore(store).votes()
    assert [(v.prompt, v.winner, v.has_answers) for v in old] == [
        ("old question", "run-1", False),
        ("old question", "tie", False),
    ]
    assert VoteStore(store).tally()["run-1"] == {"wins": 1, "losses": 0, "ties": 1, "games": 2}
    full_vote(VoteStore(store), at=3.0)  # a new vote with its answers goes into the upgraded table
    Store(path)  # opening it again changes nothing (the upgrade is idempotent)
    after = VoteStore(Store(path)).votes()
    assert [v.has_answers for v in after] == [False, False, True]
    with closing(sqlite3.connect(path)) as c:
        assert (
            int(c.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()[0])
            == SCHEMA_VERSION
        )
    rows, counts = V.preference_rows(after)
    assert [(r["chosen"], r["rejected"]) for r in rows] == [("4", "5")]
    assert counts["left_out"] == {V.NO_ANSWERS: 2}


# -- votes into pairs ----------------------------------------------------------------------------------------------


def test_the_winners_answer_is_chosen_and_the_losers_rejected() -> None:
    rows, counts = V.preference_rows([vote("A"), vote("B", prompt="And 2+3?", left_answer="6")])
    assert rows == [
        {"prompt": [{"role": "user", "content": "What is 2+2?"}], "chosen": "4", "rejected": "5"},
        {"prompt": [{"role": "user", "content": "And 2+3?"}], "chosen": "5", "rejected": "6"},
    ]
    assert counts == {"votes": 2, "pairs": 2, "written": 0, "left_out": {}}


def test_the_system_prompt_comes_first_in_the_pairs_prompt() -> None:
    (row,), _ = V.preference_rows([vote("A", system="Answer with a number.")])
    assert row["prompt"] == [
        {"role": "system", "content": "Answer with a number."},
        {"role": "user", "content": "What is 2+2?"},
    ]


def test_ties_self_pairs_old_votes_and_empty_answers_are_left_out_and_counted() -> None:
    rows, counts = V.preference_rows(
        [
            vote("tie"),
            vote("tie", id=2),
            vote("A", left="run-1", right="run-1"),  # one contestant against itself
            vote("A", right_answer="4 "),  # two contestants, the same answer
            vote("A", left_answer=None, right_answer=None),  # voted before answers were kept
            vote("B", right_answer="  "),  # the winner said nothing
            vote("A", id=9),
        ]
    )
    assert [(r["chosen"], r["rejected"]) for r in rows] == [("4", "5")]
    assert counts["votes"] == 7 and counts["pairs"] == 1
    assert counts["left_out"] == {V.TIE: 2, V.SAME: 2, V.NO_ANSWERS: 1, V.EMPTY: 1}
    text = V.counts_text(counts)
    assert text.startswith("1 preference pair from 7 votes; left out: ")
    assert (
        "ties with no better answer written (2)" in text
        and "from before TuneDeck kept the answers (1)" in text
    )


def test_a_written_answer_is_better_than_both_answers_shown() -> None:
    # A won: the ranking written > A > B gives its three pairs.
    rows, counts = V.preference_rows([vote("A", better="  2 + 2 = 4.  ")])
    assert [(r["chosen"], r["rejected"]) for r in rows] == [
        ("4", "5"),
        ("2 + 2 = 4.", "4"),
        ("2 + 2 = 4.", "5"),
    ]
    assert counts["written"] == 2
    # On a tie, or with the same answer twice, it is still better than what was shown (once per distinct answer).
    tie, _ = V.preference_rows([vote("tie", better="Four.")])
    assert [(r["chosen"], r["rejected"]) for r in tie] == [("Four.", "4"), ("Four.", "5")]
    same, counts = V.preference_rows([vote("tie", right_answer="4", better="Four.")])
    assert [(r["chosen"], r["rejected"]) for r in same] == [("Four.", "4")] and counts["left_out"] == {}
    # Writing the winner's answer again adds nothing new (no pair of an answer against itself, no duplicate).
    copied, _ = V.preference_rows([vote("A", better="4")])
    assert [(r["chosen"], r["rejected"]) for r in copied] == [("4", "5")]


# -- export --------------------------------------------------------------------------------------------------------


def test_exported_votes_are_a_preference_dataset_with_the_voted_texts(store: Store, paths: Paths) -> None:
    votes = VoteStore(store)
    full_vote(votes, system="Answer with a number.", at=1.0)
    full_vote(
        votes,
        prompt="Capital of France?",
        winner="tie",
        left_answer="Lyon",
        right_answer="Marseille",
        better="Paris.",
        at=2.0,
    )
    full_vote(votes, winner="tie", at=3.0)  # left out
    record, report, counts = V.export_votes(store, paths)
    assert record.name.startswith("votes-") and record.info["shape"] == "preference"
    assert counts == {"votes": 3, "pairs": 3, "written": 2, "left_out": {V.TIE: 1}}
    assert report.rows_kept == 3
    frame = load_examples(record)
    pairs = [
        (json.loads(p), c, r)
        for p, c, r in zip(frame["prompt"], frame["chosen"], frame["rejected"], strict=True)
    ]
    assert pairs == [
        (
            [
                {"role": "system", "content": "Answer with a number."},
                {"role": "user", "content": "What is 2+2?"},
            ],
            "4",
            "5",
        ),
        ([{"role": "user", "content": "Capital of France?"}], "Paris.", "Lyon"),
        ([{"role": "user", "content": "Capital of France?"}], "Paris.", "Marseille"),
    ]
    assert list(paths.tmp.iterdir()) == []  # the JSONL it went through is gone
    # A second export the same day gets a name of its own; a name the person picks that is taken is refused.
    again, _, _ = V.export_votes(store, paths)
    assert again.name == f"{record.name}-2"
    with pytest.raises(DataError, match="already exists"):
        V.export_votes(store, paths, name=record.name)
    assert list(paths.tmp.iterdir()) == []


def refused_export(store: Store, paths: Paths) -> str:
    """The message of a votes export that is refused; nothing may be left behind (no dataset, no temporary file)."""
    with pytest.raises(DataError) as refused:
        V.export_votes(store, paths)
    assert store.list_datasets() == [] and (not paths.tmp.exists() or list(paths.tmp.iterdir()) == [])
    return str(refused.value)


def test_no_usable_vote_says_how_many_why_and_what_to_do(store: Store, paths: Paths) -> None:
    empty = refused_export(store, paths)
    assert "no blind-test votes yet" in empty and "vote A or B" in empty
    votes = VoteStore(store)
    votes.add("old question", BASE, "run-1", "run-1")  # an old vote: no answers
    full_vote(votes, winner="tie")
    full_vote(votes, winner="tie")
    assert refused_export(store, paths) == (
        "No preference pairs in 3 votes, left out: from before TuneDeck kept the answers (1), "
        "ties with no better answer written (2). "
        "Fix: vote A or B on a few more prompts, or write a better answer."
    )
    full_vote(votes)  # one pair: too few for a dataset, said in the votes' terms (not a file's)
    assert refused_export(store, paths) == (
        "Only 1 preference pair from 4 votes; left out: from before TuneDeck kept the answers (1), "
        "ties with no better answer written (2). A dataset needs at least 2 pairs. "
        "Fix: vote A or B on a few more prompts, or write a better answer."
    )


def test_the_run_the_votes_were_about_is_the_one_to_start_from() -> None:
    run2 = {"base_model": "tiny-offline", "run": "run-2", "adapter_dir": "/adapters/run-2"}
    base = {"base_model": "tiny-offline", "run": None, "adapter_dir": None}
    votes = [
        vote("A", id=1),  # run-1 against the base
        vote("A", id=2, left="run-2", left_model=run2, right_model=base),
        vote("B", id=3, left="run-2", left_model=run2, right_model=base),
    ]
    assert V.voted_run(votes) == "run-2"  # in two votes, run-1 in one
    assert V.voted_run(votes[:2]) == "run-2"  # one each: the one voted on last
    assert V.voted_run(votes[:2][::-1]) == "run-1"
    assert V.voted_run(votes, eligible=["run-1"]) == "run-1"  # run-2 cannot be started from (no adapter)
    # only votes that give a pair count; the base model is never a run to start from
    assert V.voted_run([vote("tie", id=4, left="run-2"), vote("A", id=5)]) == "run-1"
    assert V.voted_run([vote("A", id=6, left=BASE, right=BASE, better="Four.")]) is None
    assert V.voted_run([]) is None


def test_default_name_is_the_date_then_numbered() -> None:
    import datetime as dt

    day = dt.date(2025, 3, 9)
    assert V.default_name([], day) == "votes-2025-03-09"
    assert V.default_name(["votes-2025-03-09", "votes-2025-03-09-2"], day) == "votes-2025-03-09-3"


# -- win rates over time -------------------------------------------------------------------------------------------


def test_win_rate_after_each_vote_counts_ties_half() -> None:
    history = V.win_rate_history(
        [vote("A", time=10.0), vote("tie", time=20.0), vote("B", time=30.0, left="run-2")]
    )
    by = {}
    for row in history:
        by.setdefault(row["contestant"], []).append((row["time"], row["win rate"]))
    assert by["run-1"] == [(10.0, 1.0), (20.0, 0.75)]
    assert by[BASE] == [(10.0, 0.0), (20.0, 0.25), (30.0, 0.5)]  # (0 + 0.5 + 1) / 3
    assert by["run-2"] == [(30.0, 0.0)]


# -- the Compare tab -----------------------------------------------------------------------------------------------


class FakeModels:
    """The model server's ``compare``: streams each column's answer ("base" or the adapter's folder name)."""

    def __init__(self) -> None:
        self.calls: list[dict] = []

    def compare(self, base_model, adapters, messages, **decoding):
        self.calls.append({"base_model": base_model, "adapters": adapters, "messages": messages, **decoding})
        final = [f"Answer from {Path(a).name if a else 'the base'}." for a in adapters]
        yield [t[:3] for t in final]
        yield final


@pytest.fixture
def tab(store: Store, paths: Paths, status):
    """The Compare tab's context with one finished run, run-1, on tiny-offline, and a fake model server."""
    from backend.core.status import JobStatus
    from ui.context import AppContext

    add_dataset_record(store, "ds-1")
    store.add_job("run-1", "ds-1", "tiny-offline", {"base_model": "tiny-offline"}, "/jobs/run-1")
    status.set("run-1", JobStatus.RUNNING, pid=1)
    status.set("run-1", JobStatus.SUCCEEDED, result={"adapter_dir": "/adapters/run-1"})
    return AppContext(paths=paths, store=store, manager=None, models=FakeModels())  # type: ignore[arg-type]


def test_a_blind_vote_keeps_what_the_person_saw_and_wrote(tab) -> None:
    from ui import compare_tab

    msg, a, b, hidden = compare_tab.blind_pair(
        BASE, "run-1", "What is 2+2?", tab, rng_seed=1, system="Answer with a number."
    )
    assert "names are hidden" in msg and {a, b} == {"Answer from the base.", "Answer from run-1."}
    (call,) = tab.models.calls
    assert call["messages"] == [
        {"role": "system", "content": "Answer with a number."},
        {"role": "user", "content": "What is 2+2?"},
    ]
    assert call["max_new_tokens"] == 128 and call["temperature"] == 0.0 and call["seed"] == 0
    a_is = "run-1" if a == "Answer from run-1." else BASE
    msg, _, cleared = compare_tab.vote("A", hidden, tab, better="  4  ")
    assert f"A was <b>{a_is}</b>" in msg and "better answer is kept" in msg and cleared == ""
    (v,) = VoteStore(tab.store).votes()
    assert (v.winner, v.left, v.left_answer, v.right_answer) == (a_is, a_is, a, b)
    assert (v.system, v.better) == ("Answer with a number.", "4")
    models = {m["run"]: m for m in (v.left_model, v.right_model)}
    assert models["run-1"]["adapter_dir"] == "/adapters/run-1" and models[None]["adapter_dir"] is None
    assert {m["base_model"] for m in models.values()} == {"tiny-offline"}
    assert v.decoding == compare_tab.BLIND_DECODING
    rows, _ = V.preference_rows([v])
    assert [(r["chosen"], r["rejected"]) for r in rows] == [(a, b), ("4", a), ("4", b)]


def test_voting_clears_the_written_answer_and_draws_the_win_rate_lines(tab) -> None:
    from ui import compare_tab

    with gr.Blocks() as page:
        compare_tab.render(tab)
    fns = {f.api_name: f.fn for f in page.fns.values()}
    assert "export_votes" in fns  # the dataset button is a named API endpoint
    _, _, _, hidden = compare_tab.blind_pair(BASE, "run-1", "What is 2+2?", tab, rng_seed=1)
    msg, _, _, lines, cleared, written = fns["vote_a"](hidden, "Four.")
    assert "Recorded." in msg and cleared == "" and written == ""
    assert lines["visible"] is False  # one point per contestant draws no line yet
    _, _, _, hidden = compare_tab.blind_pair(BASE, "run-1", "What is 3+3?", tab, rng_seed=1)
    _, _, _, lines, _, _ = fns["vote_tie"](hidden, "")
    assert lines["visible"] is True and set(lines["color_map"]) == {"run-1", BASE}
    rates = {n: list(g["win rate"]) for n, g in lines["value"].groupby("contestant")}
    assert sorted(rates.values()) == [[0.0, 0.25], [1.0, 0.75]]
    # No answers yet: nothing is recorded and the written answer stays in its box.
    msg, *_, written = fns["vote_b"]("", "keep me")
    assert "Get two answers first" in msg and written == {"__type__": "update"}


def test_the_win_rate_lines_are_typed_from_the_first_frame(tab) -> None:
    from ui import compare_tab

    plot = gr.LinePlot(x="vote", y="win rate", color="contestant")
    empty = compare_tab.rates_history(tab)
    assert plot.postprocess(empty).datatypes == {
        "vote": "nominal",  # whole votes: a quantity got ticks at 1.2, 1.4, ...
        "time": "temporal",
        "contestant": "nominal",
        "win rate": "quantitative",
        "games": "quantitative",
    }
    assert compare_tab.history_chart(empty)["visible"] is False
    # Whole votes on the x axis, in their order (as text, "10" would sort before "2")
    votes = VoteStore(tab.store)
    for i in range(11):
        votes.add(f"Q{i}?", "run-1", BASE, "run-1", at=float(i))
    chart = compare_tab.history_chart(compare_tab.rates_history(tab))
    assert chart["sort"] == [str(n) for n in range(1, 12)] and chart["x_axis_labels_visible"] is True
    assert plot.postprocess(chart["value"]).datatypes["vote"] == "nominal"


def test_make_a_dataset_from_votes_says_what_was_made_or_what_to_do(tab) -> None:
    from ui import compare_tab

    empty = compare_tab.make_vote_dataset("", tab)
    assert "td-error" in empty and "no blind-test votes yet" in empty and "Traceback" not in empty
    votes = VoteStore(tab.store)
    full_vote(votes, at=1.0)
    full_vote(votes, prompt="What is 3+3?", left_answer="6", right_answer="9", at=2.0)
    full_vote(votes, winner="tie", at=3.0)
    made = compare_tab.make_vote_dataset("my-prefs", tab)
    assert "td-ok" in made and "<b>my-prefs</b>" in made
    assert "2 preference pairs from 3 votes; left out: ties with no better answer written (1)" in made
    assert "DPO starting from <b>run-1</b>, the run these votes were about" in made
    assert tab.store.get_dataset("my-prefs").info["shape"] == "preference"
    # ... and the Train tab is set so: the new dataset, DPO, from run-1 on its base model
    from ui import train_tab

    dataset, objective, start, base = train_tab.train_on_votes(["my-prefs", "older"], "run-1", tab)
    assert (dataset["value"], objective["value"], base["value"]) == ("my-prefs", "dpo", "tiny-offline")
    assert start["value"] == "run-1" and start["visible"] is True
    assert ("run-1 (tiny-offline, sft)", "run-1") in start["choices"]
    dataset, objective, start, base = train_tab.train_on_votes(["my-prefs"], None, tab)
    assert objective["value"] == "dpo" and "value" not in start and "value" not in base
    taken = compare_tab.make_vote_dataset("my-prefs", tab)
    assert "td-error" in taken and "already exists" in taken


# -- the CLI -------------------------------------------------------------------------------------------------------


def test_votes_list_and_export_from_the_cli(store: Store, paths: Paths) -> None:
    env = offline_env(paths.home)
    assert "No blind-test votes yet" in tunedeck(env, "votes", "list").stdout
    votes = VoteStore(store)
    long = "Please explain, in two short sentences, why the sky looks blue at noon"
    full_vote(votes, prompt=long, better="Sunlight scatters off air; blue scatters most.", at=1.0)
    votes.add("old question", BASE, "run-1", "tie", at=2.0)
    listed = tunedeck(env, "votes", "list")
    assert listed.returncode == 0, listed.stderr
    header, first, second = (re.split(r"\s{2,}", line) for line in listed.stdout.splitlines()[:3])
    assert header == ["time", "prompt", "A", "B", "winner", "better answer"]
    assert first[1:] == ["Please explain, in two short sentences,…", "run-1", BASE, "run-1", "yes"]
    assert second[1:] == ["old question", BASE, "run-1", "tie", "no"]
    assert "3 preference pairs from 2 votes" in listed.stdout and "tunedeck votes export" in listed.stdout
    as_json = json.loads(tunedeck(env, "votes", "list", "--json").stdout)
    assert [(v["a"], v["b"], v["winner"], v["better_answer"]) for v in as_json] == [
        ("run-1", BASE, "run-1", True),
        (BASE, "run-1", "tie", False),
    ]
    made = tunedeck(env, "votes", "export", "--name", "sky-prefs")
    assert made.returncode == 0, made.stderr
    assert (
        made.stdout.startswith("Added dataset sky-prefs") and "3 preference pairs from 2 votes" in made.stdout
    )
    assert "from before TuneDeck kept the answers (1)" in made.stdout
    again = tunedeck(env, "votes", "export", "--name", "sky-prefs")
    assert again.returncode == 2 and "already exists" in again.stderr and "Traceback" not in again.stderr


def test_votes_export_with_nothing_usable_fails_with_the_reason(store: Store, paths: Paths) -> None:
    full_vote(VoteStore(store), winner="tie")
    res = tunedeck(offline_env(paths.home), "votes", "export")
    assert res.returncode == 2
    assert res.stderr.strip() == (
        "error: No preference pairs in 1 vote, left out: ties with no better answer written (1). "
        "Fix: vote A or B on a few more prompts, or write a better answer."
    )


@pytest.mark.slow
def test_votes_become_a_dataset_and_a_dpo_run_from_the_cli(store: Store, paths: Paths, tiny_model) -> None:
    """The loop the issue asks for, as a person runs it: blind votes, `votes export`, `train` with dpo."""
    votes = VoteStore(store)
    capitals = [("France", "Paris", "Rome"), ("Spain", "Madrid", "Lisbon"), ("Italy", "Rome", "Paris")]
    for i, (country, right, wrong) in enumerate(capitals * 3):
        full_vote(
            votes,
            prompt=f"What is the capital of {country}? ({i})",
            left_answer=f"The capital of {country} is {right}.",
            right_answer=f"The capital of {country} is {wrong}.",
            at=float(i),
        )
    env = offline_env(paths.home)
    made = tunedeck(env, "votes", "export", "--name", "capital-votes")
    assert made.returncode == 0, made.stderr
    res = tunedeck(
        env,
        "train",
        "capital-votes",
        "--preset",
        "tiny-offline",
        "--set",
        "objective=dpo",
        "--set",
        "max_steps=4",
        "--set",
        "score_examples=0",
        "--wait",
        "--json",
    )
    assert res.returncode == 0, res.stdout + res.stderr
    job = store.list_jobs()[0]
    assert job.status.value == "succeeded" and job.config["objective"] == "dpo"
    assert Path(job.result["adapter_dir"], "adapter_model.safetensors").is_file()
    assert len(store.metrics(job.id, "rewards/margins")) == 4  # charted every step
    # Everywhere an SFT run goes: it answers, exports with a card that says how it was trained, and its adapter
    # gives the same answer loaded with plain PEFT.
    question = "What is the capital of France? (0)"
    ours = tunedeck_json(env, "generate", job.id, "--prompt", question, "--max-new-tokens", "16")
    out = tunedeck_json(env, "export", job.id, "--to", str(paths.home / "exports"))
    card = (Path(out["folder"]) / "README.md").read_text()
    assert "tags: [tunedeck, lora, dpo]" in card
    assert (
        "Preference-tuned with DPO (Direct Preference Optimization) on pairs of a better and a worse answer"
        in card
    )
    plain, *_ = plain_peft_answer(paths.models / "tiny-offline", out["folder"], question, 16)
    assert plain == ours["reply"]
