"""Score a run against its base model on held-out examples: did the fine-tune help?

For each validation example (the dataset's ``split == "validation"`` rows; without a split, a seeded sample of the
training rows, and the result says so) both the base model and the fine-tuned run answer greedily. Scores:
eval loss and perplexity of the reference answer, ROUGE-L (Google's ``rouge-score``), BLEU and chrF
(``sacrebleu``), and exact match. One base model is loaded; the adapter is switched off for the base's answers.
Results go to ``eval.json`` and ``eval_examples.csv`` in the run's folder, so the Runs and Compare tabs and
``tunedeck eval`` show the same numbers.

A run on preference data (DPO, ORPO, KTO) is scored on the held-out pairs' better answers as above, and also by
two measures of preference: the *preference accuracy* of each model (how often it finds the better answer more
likely than the worse one, per token: the log-likelihood judge; see ``preference_accuracy`` for why per token) and a
*win rate* of tuned against base, judged
automatically (no other LLM is available offline): for each held-out prompt both models answer, and the answer that
is closer to the better answer than to the worse one (ROUGE-1, the words it shares with each, to the better minus
to the worse: word-level, so "Paris" against "Rome" counts wherever it stands) wins; a difference under 0.02 is a tie. Ties count half, as in the blind test's win rates.

A run that continued another run (``continue_from``) is also scored against the adapter it started from, a third
column: the bare base says how far the two runs together came, the starting run says what this run added (did DPO
after SFT help?).

Preference accuracy is not the *reward accuracy* TRL logs while a DPO run trains (the Runs tab's charts): that one
asks whether the better answer's log-probability rose more than the worse one's, measured against the model the run
started from; preference accuracy asks which of the two the model now finds likelier. A run can move every pair the
right way (reward accuracy 1.0) and still find most worse answers likelier; ``preference_gap`` says so in words.
"""

from __future__ import annotations

import csv
import json
import math
import random
import re
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from backend.core.store import JobRecord, Store
from backend.errors import TuneDeckError
from backend.jobs.handoff import START_ADAPTER
from backend.settings import Paths

METRICS = ("eval_loss", "perplexity", "rougeL", "bleu", "chrf", "exact_match")
PREF_METRICS = ("pref_accuracy",)  # preference data only
JUDGE_TIE = 0.02  # judge scores closer than this are a tie
DEFAULT_LIMIT = 64
PROGRESS_PREFIX = "scored "  # `tunedeck eval` prints "scored 8 of 32 answers" lines on stderr as it goes
SCORE_BATCH = 8  # answers generated together: on 2 CPU cores a batch of 8 costs ~2x one answer, not 8x


class EvalError(TuneDeckError, ValueError):
    pass


@dataclass
class EvalResult:
    run_id: str
    base_model: str
    n_examples: int
    source: str  # where the examples came from, in words
    base: dict[str, float]
    tuned: dict[str, float]
    seconds: float
    examples: list[dict[str, Any]] = field(default_factory=list)
    # preference data: the automatic judge's tuned-vs-base tally
    judge: dict[str, Any] = field(default_factory=dict)
    # a run that continued another: that run's id, the scores of the adapter it started from, and the judge's
    # tuned-vs-start tally
    start_run: str = ""
    start: dict[str, float] = field(default_factory=dict)
    judge_start: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> str:
        start = f"start ({self.start_run})" if self.start_run else ""
        rows = [
            f"{self.run_id} on {self.n_examples} examples ({self.source}):",
            f"{'metric':<12} {'base':>10}"
            + (f" {start:>{len(start)}}" if start else "")
            + f" {'fine-tuned':>11}",
        ]
        for m in METRICS + PREF_METRICS:
            b, t = self.base.get(m), self.tuned.get(m)
            if b is None and t is None:
                continue
            middle = f" {fmt_score(self.start.get(m)):>{len(start)}}" if start else ""
            rows.append(f"{m:<12} {fmt_score(b):>10}{middle} {fmt_score(t):>11}")
        if self.judge:
            rows.append(judge_line(self.judge))
        if self.judge_start:
            rows.append(judge_line(self.judge_start, self.start_run))
        if "pref_accuracy" in self.tuned:
            rows.append(f"pref_accuracy: {ABOUT['pref_accuracy']}")
        return "\n".join(rows)


def judge_line(judge: dict[str, Any], against: str = "") -> str:
    """The judge's tally in words; ``against`` names the run it was measured against (the base model if empty)."""
    return (
        f"automatic judge, fine-tuned vs {against or 'base'}: win rate {judge['win_rate']:.0%} ({judge['wins']} "
        f"wins, {judge['ties']} ties, {judge['losses']} losses on {judge['games']} prompts)"
    )


def start_adapter(job: JobRecord) -> str | None:
    """The adapter a run that continued another started from (its own copy, kept in its folder), else None."""
    if not job.config.get("continue_from"):
        return None
    path = Path(job.job_dir) / START_ADAPTER
    return str(path) if (path / "adapter_config.json").is_file() else None


def judge_score(answer: str, chosen: str, rejected: str) -> float:
    """How much closer ``answer`` is to the better answer than to the worse one (ROUGE-1 F1 difference, -1..1).
    ROUGE-1 rather than ROUGE-L: the longest common word sequence ignores the one word that differs when it is
    placed elsewhere ("Paris is the capital" vs "the capital is Rome" share the same sequence)."""
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(["rouge1"], use_stemmer=False)
    return float(
        scorer.score(chosen, answer)["rouge1"].fmeasure - scorer.score(rejected, answer)["rouge1"].fmeasure
    )


def judge_tally(tuned: list[float], base: list[float]) -> dict[str, Any]:
    """Wins, ties and losses of tuned against base from per-prompt judge scores; ties count half."""
    wins = sum(t - b > JUDGE_TIE for t, b in zip(tuned, base, strict=True))
    losses = sum(b - t > JUDGE_TIE for t, b in zip(tuned, base, strict=True))
    games = len(tuned)
    ties = games - wins - losses
    return {
        "wins": wins,
        "losses": losses,
        "ties": ties,
        "games": games,
        "win_rate": (wins + 0.5 * ties) / games if games else float("nan"),
        "how": "closer to the better answer than to the worse one (shared words, ROUGE-1); under "
        f"{JUDGE_TIE} apart is a tie",
    }


def fmt_score(v: float | None) -> str:
    """A score as people read it: 0.473, 12.6, 12,260 (never 1.226e+04)."""
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "-"
    return f"{v:,.0f}" if abs(v) >= 1000 else f"{v:.3g}"


# -- pure scoring ------------------------------------------------------------------------------------------------


def normalise(text: str) -> str:
    return re.sub(r"\s+", " ", text.strip().lower())


def score_pair(prediction: str, reference: str) -> dict[str, float]:
    """Sentence-level scores of one answer against its reference (0-100 for BLEU/chrF, 0-1 for the rest)."""
    import sacrebleu
    from rouge_score import rouge_scorer

    rouge = (
        rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
        .score(reference, prediction)["rougeL"]
        .fmeasure
    )
    return {
        "rougeL": float(rouge),
        "bleu": float(sacrebleu.sentence_bleu(prediction, [reference]).score),
        "chrf": float(sacrebleu.sentence_chrf(prediction, [reference]).score),
        "exact_match": float(normalise(prediction) == normalise(reference)),
    }


def corpus_scores(predictions: list[str], references: list[str]) -> dict[str, float]:
    """Corpus BLEU and chrF (sacrebleu's, not a mean of sentences), mean ROUGE-L and exact-match rate."""
    import sacrebleu
    from rouge_score import rouge_scorer

    if not predictions:
        return {}
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
    rouge = [scorer.score(r, p)["rougeL"].fmeasure for p, r in zip(predictions, references, strict=True)]
    return {
        "rougeL": float(sum(rouge) / len(rouge)),
        "bleu": float(sacrebleu.corpus_bleu(predictions, [references]).score),
        "chrf": float(sacrebleu.corpus_chrf(predictions, [references]).score),
        "exact_match": float(
            sum(normalise(p) == normalise(r) for p, r in zip(predictions, references, strict=True))
            / len(predictions)
        ),
    }


# -- the examples ------------------------------------------------------------------------------------------------


def held_out_count(store: Store, job: JobRecord) -> int:
    """How many examples ``held_out_examples`` can draw from for this run, without reading the data: the dataset's
    validation rows, else all its rows (0 when the dataset is gone)."""
    record = store.get_dataset(job.dataset_id)
    if record is None:
        return 0
    validation = int((record.info.get("report") or {}).get("validation_rows") or 0)
    return validation or record.n_rows


def held_out_examples(
    store: Store, job: JobRecord, limit: int = DEFAULT_LIMIT, seed: int = 0
) -> tuple[list[tuple[list[dict[str, str]], str]], str]:
    """([(prompt messages, reference answer)], where they came from). Preference data: the better answer is the
    reference (feedback data: its good answers); ``held_out_pairs`` gives the worse ones too."""
    examples, _, source = _held_out(store, job, limit, seed)
    return examples, source


def held_out_pairs(
    store: Store, job: JobRecord, limit: int = DEFAULT_LIMIT, seed: int = 0
) -> tuple[list[tuple[list[dict[str, str]], str]], list[str], str]:
    """Preference data: ([(prompt, better answer)], [worse answer], source); the worse list is empty otherwise."""
    return _held_out(store, job, limit, seed)


def _held_out(
    store: Store, job: JobRecord, limit: int, seed: int
) -> tuple[list[tuple[list[dict[str, str]], str]], list[str], str]:
    import pandas as pd

    record = store.get_dataset(job.dataset_id)
    if record is None:
        raise EvalError(
            f"The dataset of {job.id} ({job.dataset_id}) was deleted, so there is nothing to score on."
        )
    frame = pd.read_parquet(record.path)
    shape = record.info.get("shape", "prompt_response")
    if shape == "text":
        raise EvalError(
            "This run was trained on raw text (continued pre-training): there are no prompts and "
            "reference answers to score. Its eval loss is in the Runs tab."
        )
    if shape == "feedback":  # only the good answers are references; there are no pairs
        frame = frame[frame["label"] == "true"].reset_index(drop=True)
    if "split" in frame.columns and (frame["split"] == "validation").any():
        rows, source = frame[frame["split"] == "validation"], "the validation split"
    else:
        rows, source = (
            frame,
            "training rows: the dataset has no validation split, so this measures memorisation",
        )
    picked = sorted(random.Random(seed).sample(range(len(rows)), min(limit, len(rows))))
    system = job.config.get("system_prompt", "")
    out, worse = [], []
    for i in picked:
        row = rows.iloc[i]
        if shape in ("preference", "feedback"):
            from backend.data.shapes import chat_messages

            out.append(
                (
                    chat_messages(row["prompt"], system),
                    row["chosen" if shape == "preference" else "completion"],
                )
            )
            if shape == "preference":
                worse.append(row["rejected"])
        elif shape == "chat":
            from backend.data.shapes import chat_messages

            messages = chat_messages(row["messages"], system)  # with the system prompt it was trained with
            last = max(k for k, m in enumerate(messages) if m["role"] == "assistant")
            out.append((messages[:last], messages[last]["content"]))
        else:
            sys_text = row.get("system", "") or system
            msgs = ([{"role": "system", "content": sys_text}] if sys_text else []) + [
                {"role": "user", "content": row["prompt"]}
            ]
            out.append((msgs, row["response"]))
    return out, worse, source


# -- running it --------------------------------------------------------------------------------------------------


def reference_loss(
    loaded: Any, examples: list[tuple[list[dict[str, str]], str]], batch_size: int = SCORE_BATCH
) -> float:
    """Token-weighted mean loss of the reference answers given their prompts (prompt tokens masked), in batches."""
    total, count = _losses(loaded, examples, batch_size, per_example=False)
    return total / count if count else float("nan")


def answer_losses(
    loaded: Any, examples: list[tuple[list[dict[str, str]], str]], batch_size: int = SCORE_BATCH
) -> list[float]:
    """Each answer's mean loss per token given its prompt (lower: the model finds it more likely): its negative
    log-probability divided by its length in tokens (``answer_totals``)."""
    return [
        total / tokens if tokens else float("nan")
        for total, tokens in answer_totals(loaded, examples, batch_size)
    ]


def answer_totals(
    loaded: Any, examples: list[tuple[list[dict[str, str]], str]], batch_size: int = SCORE_BATCH
) -> list[tuple[float, int]]:
    """Each answer's summed loss given its prompt (its negative log-probability) and its length in tokens, the
    end-of-turn tokens of the chat template included; (nan, 0) for an answer with no tokens."""
    return _losses(loaded, examples, batch_size, per_example=True)


def preference_accuracy(better: list[float], worse: list[float]) -> float:
    """The share of pairs whose better answer the model finds more likely per token (a lower mean loss).

    Per token, not the whole answer's log-probability: every token adds a negative log-probability, so a sum
    favours the shorter answer whatever it says (a curt wrong answer beats a full right one). The mean per token
    removes that length bias; it can in turn favour an answer padded with easy, predictable tokens."""
    return sum(b < w for b, w in zip(better, worse, strict=True)) / len(better) if better else float("nan")


# A finished preference run whose reward accuracy says it learned while its preference accuracy says the model
# still does not prefer the better answers: both are honest, and ``preference_gap`` says so with what to change.
REWARD_ACCURACY_HIGH = 0.75  # TRL's last reward accuracy at or above this: "it learned"
PREF_GAIN_CLEAR = 0.10  # preference accuracy up by less than this from where it started: no clear gain
PREF_ACCURACY_LOW = 0.6  # a tuned preference accuracy under this: the worse answer is still often likelier


def preference_gap(
    reward_accuracy: float | None,
    scores: dict[str, Any] | None,
    config: dict[str, Any] | None = None,
    measured_on: str = "validation",
) -> str:
    """One sentence when a preference run's last reward accuracy (``measured_on`` the validation pairs or the
    training batches) is at least ``REWARD_ACCURACY_HIGH`` while its tuned preference accuracy is not clearly above
    where it started (up by less than ``PREF_GAIN_CLEAR``, or under ``PREF_ACCURACY_LOW``), with what to change;
    "" otherwise, or when a number is missing. "Where it started": the run it continued when that was scored
    (``scores["start"]``), else the base model. ``config``: the run's settings (``continue_from``, ``sft_weight``),
    for the advice. Pure: the Runs tab only shows the text."""
    config, scores = config or {}, scores or {}
    tuned = scores.get("tuned", {}).get("pref_accuracy")
    # "not x >= y" is true for a nan too: a missing number says nothing
    if (
        reward_accuracy is None
        or not reward_accuracy >= REWARD_ACCURACY_HIGH
        or tuned is None
        or tuned != tuned
    ):
        return ""
    start_run = scores.get("start_run") or ""
    before = scores.get("start" if start_run else "base", {}).get("pref_accuracy")
    if before is not None and before == before:  # scored (not nan)
        clear_gain, then = (
            tuned - before >= PREF_GAIN_CLEAR,
            f"; {before:.0%} for {start_run or 'the base model'}",
        )
    else:  # only the tuned model's own level can tell
        clear_gain, then = True, ""
    if tuned >= PREF_ACCURACY_LOW and clear_gain:
        return ""
    if config.get("continue_from"):
        # it started from a run already: push this step further, or add the SFT term
        first = (
            "or a weight on “Also learn the better answers” (1.0)"
            if not config.get("sft_weight")
            else "or more pairs that the run it started from gets wrong"
        )
    else:
        first = (
            "or first an SFT run on the better answers (in Data, download the pairs as CSV and add them back as "
            "examples, the better answer as the response), then DPO from it with “Start from a finished run's "
            "adapter”"
        )
    where = "validation pairs" if measured_on == "validation" else "training batches"
    return (
        f"Reward accuracy ended at {reward_accuracy:.2f} on the {where}: against where it started, the run raised "
        f"the better answers more than the worse ones, yet the tuned model finds the better answer likelier in "
        f"{tuned:.0%} of held-out pairs (its preference accuracy{then}), so it moved the right way but not far "
        f"enough to prefer them: try more passes, a higher learning rate, {first}."
    )


def _losses(loaded: Any, examples: list, batch_size: int, *, per_example: bool) -> Any:
    import torch

    tok, model = loaded.tokenizer, loaded.model
    seqs: list[tuple[list[int], list[int], int]] = []
    for k, (prompt, reference) in enumerate(examples):
        p_ids = tok.apply_chat_template(prompt, add_generation_prompt=True, return_dict=True)["input_ids"]
        full = list(
            tok.apply_chat_template(prompt + [{"role": "assistant", "content": reference}], return_dict=True)[
                "input_ids"
            ]
        )
        if len(full) > len(p_ids):
            seqs.append((full, [-100] * len(p_ids) + full[len(p_ids) :], k))
    seqs.sort(key=lambda s: len(s[0]))  # similar lengths together: little padding
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    total, count = 0.0, 0
    each: list[tuple[float, int]] = [(float("nan"), 0)] * len(examples)
    for i in range(0, len(seqs), batch_size):
        chunk = seqs[i : i + batch_size]
        width = max(len(ids) for ids, _, _ in chunk)
        ids = torch.tensor([s + [pad] * (width - len(s)) for s, _, _ in chunk], device=model.device)
        mask = torch.tensor([[1] * len(s) + [0] * (width - len(s)) for s, _, _ in chunk], device=model.device)
        labels = torch.tensor([lab + [-100] * (width - len(lab)) for _, lab, _ in chunk], device=model.device)
        with torch.inference_mode():
            logits = model(input_ids=ids, attention_mask=mask).logits[:, :-1]
            target = labels[:, 1:]
            keep = target != -100  # only the reference answer's positions, in fp32: a fraction of the logits
            loss = torch.nn.functional.cross_entropy(logits[keep].float(), target[keep], reduction="none")
        total += float(loss.sum())
        count += int(keep.sum())
        if per_example:
            rows = keep.nonzero()[:, 0]
            sums = torch.zeros(len(chunk)).index_add_(0, rows.cpu(), loss.detach().float().cpu())
            for j, (_, _, k) in enumerate(chunk):
                each[k] = (float(sums[j]), int(keep[j].sum()))
    return each if per_example else (total, count)


def evaluate_run(
    store: Store,
    paths: Paths,
    run_id: str,
    *,
    limit: int = DEFAULT_LIMIT,
    max_new_tokens: int = 128,
    pool: Any = None,
    on_progress: Any = None,
) -> EvalResult:
    """Score a finished run (``tunedeck eval``, the Compare tab): loads its base model and adapter.
    ``on_progress(done, total)`` hears how many answers (base and fine-tuned) are written so far."""
    from backend.serving.generate import ModelPool

    job = store.get_job(run_id)
    if job is None:
        raise EvalError(f"There is no run {run_id!r}.")
    adapter = (job.result or {}).get("adapter_dir")
    if not adapter:
        raise EvalError(f"{run_id} has no adapter to evaluate (status {job.status.value}).")
    if pool is not None:  # the caller's models, already loaded where it decided
        return score(
            store, job, adapter, pool, limit=limit, max_new_tokens=max_new_tokens, on_progress=on_progress
        )
    # Scoring loads the base and answers every example twice: it waits its turn while a job trains, as chat does
    # on a GPU (one owner of the accelerator), and says so.
    import os
    import sys

    from backend.jobs.accelerator import Accelerator

    accelerator, holder = Accelerator(store), f"score:{os.getpid()}"
    said: list[str] = []

    def notify(message: str) -> None:
        if message not in said:  # once, not every poll
            said.append(message)
            print(message, file=sys.stderr, flush=True)

    accelerator.wait_for_turn(holder, 0.0, notify=notify)
    try:
        return score(
            store,
            job,
            adapter,
            ModelPool(paths),
            limit=limit,
            max_new_tokens=max_new_tokens,
            on_progress=on_progress,
        )
    finally:
        accelerator.release(holder)


class Stopped(Exception):
    """Scoring was asked to stop (the job was cancelled while it scored)."""


def score(
    store: Store,
    job: JobRecord,
    adapter: str,
    pool: Any,
    *,
    limit: int = DEFAULT_LIMIT,
    max_new_tokens: int = 128,
    should_stop: Any = None,
    on_progress: Any = None,
) -> EvalResult:
    """Score ``adapter`` against its base on ``job``'s held-out examples and save eval.json / eval_examples.csv.

    ``pool.use(base_model, adapter_dir or None)`` gives (loaded model, context to generate in): a ModelPool, or
    the worker's view of the model it has just trained. ``should_stop()`` is checked between batches;
    ``on_progress(done, total)`` is told how many answers (base, start and fine-tuned) are written so far.
    A run that continued another is also scored against the adapter it started from (side "start")."""
    from backend.serving.generate import generate_batch

    t0 = time.monotonic()
    examples, worse, source = held_out_pairs(store, job, limit)
    answers: dict[str, list[str]] = {}
    losses: dict[str, float] = {}
    accuracy: dict[str, float] = {}
    start = start_adapter(job)
    models = [("base", None)] + ([("start", start)] if start else []) + [("tuned", adapter)]
    done, total = 0, len(models) * len(examples)
    for side, adapter_dir in models:
        loaded, mode = pool.use(job.config["base_model"], adapter_dir, like=adapter)
        # An answer much longer than its reference only lowers its scores: stop at 1.5x the reference (+8 tokens).
        budgets = [
            min(max_new_tokens, int(1.5 * len(loaded.tokenizer(r)["input_ids"])) + 8) for _, r in examples
        ]
        order = sorted(range(len(examples)), key=lambda i: budgets[i])  # similar budgets share a batch
        with mode:
            answers[side] = [""] * len(examples)
            for k in range(0, len(order), SCORE_BATCH):
                if should_stop is not None and should_stop():
                    raise Stopped()
                chunk = order[k : k + SCORE_BATCH]
                texts = generate_batch(loaded, [examples[i][0] for i in chunk], [budgets[i] for i in chunk])
                for i, text in zip(chunk, texts, strict=True):
                    answers[side][i] = text
                done += len(chunk)
                if on_progress is not None:
                    on_progress(done, total)
            losses[side] = reference_loss(loaded, examples)
            if worse:
                better_loss = answer_losses(loaded, examples)
                worse_loss = answer_losses(
                    loaded, [(p, w) for (p, _), w in zip(examples, worse, strict=True)]
                )
                accuracy[side] = preference_accuracy(better_loss, worse_loss)
    refs = [r for _, r in examples]
    sides = {}
    for side, _ in models:
        scores = corpus_scores(answers[side], refs)
        loss = losses[side]
        sides[side] = {
            "eval_loss": loss,
            "perplexity": math.exp(loss) if math.isfinite(loss) else float("nan"),
            **scores,
            **({"pref_accuracy": accuracy[side]} if side in accuracy else {}),
        }
    judge: dict[str, Any] = {}
    judge_start: dict[str, Any] = {}
    if worse:
        judged = {
            side: [judge_score(a, r, w) for a, r, w in zip(answers[side], refs, worse, strict=True)]
            for side, _ in models
        }
        judge = judge_tally(judged["tuned"], judged["base"])
        if start:
            judge_start = judge_tally(judged["tuned"], judged["start"])
    rows = []
    for i, (prompt, ref) in enumerate(examples):
        row: dict[str, Any] = {"prompt": prompt[-1]["content"], "reference": ref}
        row.update({f"{side}_answer": answers[side][i] for side, _ in models})
        for side, _ in models:
            row.update({f"{side}_{k}": v for k, v in score_pair(answers[side][i], ref).items()})
        rows.append(row)
    result = EvalResult(
        job.id,
        job.config["base_model"],
        len(examples),
        source,
        sides["base"],
        sides["tuned"],
        round(time.monotonic() - t0, 2),
        rows,
        judge,
        start_run=job.config["continue_from"] if start else "",
        start=sides.get("start", {}),
        judge_start=judge_start,
    )
    save(result, Path(job.job_dir))
    return result


def save(result: EvalResult, job_dir: Path) -> None:
    data = asdict(result)
    examples = data.pop("examples")
    tmp = job_dir / "eval.json.tmp"
    tmp.write_text(json.dumps(data, indent=2))
    tmp.replace(job_dir / "eval.json")
    write_csv(examples, job_dir / "eval_examples.csv")


LABELS = {
    "eval_loss": "eval loss ↓",
    "perplexity": "perplexity ↓",
    "rougeL": "ROUGE-L ↑",
    "bleu": "BLEU ↑",
    "chrf": "chrF ↑",
    "exact_match": "exact match ↑",
    "pref_accuracy": "prefers the better answer ↑",
}
# What each score measures, and what to trust it for: shown beside every scores table.
ABOUT = {
    "eval_loss": "how surprised the model is by the reference answers; the most sensitive sign of learning",
    "perplexity": "the same as eval loss, as e to its power",
    "rougeL": "0-1: the longest run of words the answer shares with the reference, in order; good for facts",
    "bleu": "0-100: shared runs of 1-4 words; strict, low for answers worded differently but right",
    "chrf": "0-100: shared letter sequences; forgiving of word forms, and it can drop when answers get shorter "
    "and more to the point even as they get better",
    "exact_match": "0-1: the share of answers identical to the reference; only for short fixed answers",
    "pref_accuracy": "0-1: how often the model now finds the better answer of a held-out pair likelier than the "
    "worse one, by mean log-probability per token (0.5 is a coin toss). Per token, as a total favours the shorter "
    "answer whatever it says; a mean can favour answers padded with easy words. Not the reward accuracy of the Runs "
    "charts, which measures change since the start",
}


def scores_markdown(data: dict[str, Any]) -> str:
    """A saved result (eval.json) as a small base vs fine-tuned table, for the Runs tab (with the run it started
    from between them, for a run that continued another)."""
    sides = score_columns(data)
    lines = [
        f"**Held-out scores** on {data['n_examples']} examples from {data['source']} "
        "(every answer: Compare tab, Scores):",
        "",
        "| | " + " | ".join(label for _, label in sides) + " |",
        "|---|" + "---:|" * len(sides),
    ]
    for m in METRICS + PREF_METRICS:
        if m in PREF_METRICS and m not in data["tuned"]:
            continue
        lines.append(f"| {LABELS[m]} | " + " | ".join(fmt_score(data[s].get(m)) for s, _ in sides) + " |")
    for line in judge_lines(data):
        lines += ["", line]
    return "\n".join(lines)


def score_columns(data: dict[str, Any]) -> list[tuple[str, str]]:
    """(side in eval.json, column label) of a saved result: base, the run it started from if any, fine-tuned."""
    start = [("start", f"started from {data['start_run']}")] if data.get("start_run") else []
    return [("base", "base model"), *start, ("tuned", "fine-tuned")]


def judge_lines(data: dict[str, Any]) -> list[str]:
    """The automatic judge's verdicts of a saved result, against the base and the run it started from."""
    out = []
    if data.get("judge"):
        out.append(judge_line(data["judge"]) + f"; the judge: {data['judge']['how']}.")
    if data.get("judge_start"):
        out.append(judge_line(data["judge_start"], data["start_run"]) + ".")
    return out


def csv_safe(value: Any) -> Any:
    """Spreadsheet apps run cells starting with = + - @ as formulas: prefix them with ' so they stay text."""
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return value


def write_csv(rows: list[dict[str, Any]], path: Path) -> None:
    tmp = path.with_suffix(".csv.tmp")
    with open(tmp, "w", newline="", encoding="utf-8") as f:
        if rows:
            w = csv.DictWriter(f, fieldnames=list(rows[0]))
            w.writeheader()
            for r in rows:
                w.writerow({k: csv_safe(v) for k, v in r.items()})
    tmp.replace(path)
