"""Preference tuning in a real browser: blind-test votes (one with a better answer written) become a preference
dataset in the Compare tab; the Train tab trains on it with DPO, starting from the run that was voted on; the Runs
tab charts the reward margin. Screenshots go to test-artifacts/screenshots/7-*.png."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.browser_util import ROOT, ServedApp, chromium_page
from tests.cli_util import home_with_sample, train_sample

pytestmark = [pytest.mark.browser, pytest.mark.slow]
SHOTS = ROOT / "test-artifacts" / "screenshots"
VOTES = (
    ("What is the capital of France?", "The capital of France is Paris."),
    ("What is the capital of Spain?", "The capital of Spain is Madrid."),
)


def pick(page, label: str, option: str | re.Pattern) -> None:
    """Choose an option of a Gradio dropdown as a person does: open it, click the option."""
    page.get_by_label(label, exact=True).click()
    page.get_by_role("option", name=option).click()


def test_blind_votes_become_a_dataset_and_a_dpo_run_from_the_browser(
    tmp_path: Path, tiny_model_build: Path
) -> None:
    from playwright.sync_api import expect

    home = tmp_path / "home"
    env = home_with_sample(home, tiny_model_build)
    sft = train_sample(env, steps=30)["id"]
    app = ServedApp(home, tmp_path / "app.log")
    SHOTS.mkdir(parents=True, exist_ok=True)
    try:
        with chromium_page(1000) as page:
            page.goto(app.url)
            # 1. Compare: two blind votes, the second with a better answer written.
            page.get_by_role("tab", name="5. Compare").click()
            page.get_by_role("button", name=re.compile(r"^Blind test")).click()
            expect(page.get_by_label("Contestant 2")).to_have_value(sft)
            for i, (question, better) in enumerate(VOTES):
                page.get_by_label("Prompt", exact=True).last.fill(question)
                page.get_by_role("button", name="Get two answers").click()
                expect(page.get_by_text("Which answer is better?")).to_be_visible(timeout=120_000)
                if i == 1:
                    page.locator("#better-answer textarea").fill(better)
                page.get_by_role("button", name="A is better").click()
                expect(page.get_by_text("Recorded.")).to_be_visible()
            page.get_by_label("Name for the new dataset (optional)").fill("my-votes")
            page.get_by_role("button", name="Make a dataset from my votes").click()
            made = page.locator("#votes-dataset-message")
            expect(made).to_contain_text("my-votes", timeout=60_000)
            expect(made).to_contain_text(re.compile(r"\d+ preference pairs from 2 votes"))
            # the win rate after each vote: whole votes on its axis (no 1.2, 1.4 ...)
            history = page.locator("#win-rates-over-time")
            expect(history).to_be_visible()
            expect(history).not_to_contain_text(re.compile(r"\b1\.\d\b"))
            page.screenshot(path=str(SHOTS / "7-votes-to-dataset.png"), full_page=True)

            expect(made).to_contain_text(f"DPO starting from {sft}, the run these votes were about")

            # 2. Train: the votes' dataset, DPO and the run voted on are picked by themselves, the run to start
            # from beside the objective (not under More settings); the tiny preset, then the same again by hand.
            page.get_by_role("tab", name="2. Train").click()
            train_dataset = page.get_by_label("Dataset", exact=True).filter(visible=True)
            expect(train_dataset).to_have_value("my-votes")
            objective = page.get_by_label("What it learns from", exact=True)
            start = page.get_by_label("Start from a finished run's adapter", exact=True)
            expect(objective).to_have_value("better vs worse answers (DPO)")
            expect(start).to_be_visible()
            expect(start).to_have_value(re.compile(re.escape(sft)))
            page.screenshot(path=str(SHOTS / "7-train-from-votes.png"), full_page=True)
            pick(page, "Preset", "tiny-offline")
            expect(start).to_be_hidden()  # the preset trains sft: nothing to start from
            pick(page, "What it learns from", "better vs worse answers (DPO)")
            page.get_by_label("Training steps (-1: use passes)").fill("6")
            pick(page, "Start from a finished run's adapter", re.compile(re.escape(sft)))
            expect(page.locator("#train-estimate")).to_contain_text("6 steps", timeout=60_000)
            page.screenshot(path=str(SHOTS / "7-train-dpo.png"), full_page=True)
            page.get_by_role("button", name="Train", exact=True).click()

            # 3. Runs: it opens by itself on the new run (the Train tab's "Queued" note is hidden by then, so the
            # test waits for what the person sees), which succeeds; the preference charts appear beside the loss.
            expect(page.get_by_role("tab", name="3. Runs")).to_have_attribute(
                "aria-selected", "true", timeout=120_000
            )
            summary = page.locator("#run-summary")
            expect(summary).to_contain_text(f"objective DPO, starting from {sft}'s adapter", timeout=120_000)
            run = re.search(r"run-[\w-]+", summary.inner_text()).group(0)
            assert run != sft
            expect(summary).to_contain_text("succeeded", timeout=300_000)
            expect(page.locator("#chart-rewards-margins")).to_be_visible(timeout=30_000)
            # beside the charts, what reward accuracy measures and how the scores' preference accuracy differs
            expect(page.locator("#pref-charts-note")).to_contain_text("preference accuracy")
            rewards = page.locator("#chart-rewards")
            expect(rewards).to_be_visible()
            # the reward is a quantity: round axis ticks, not each value as a label of its own ("13.2120552063")
            expect(rewards).not_to_contain_text(re.compile(r"\d\.\d{6,}"))
            expect(summary).to_contain_text(f"objective DPO, starting from {sft}'s adapter")
            page.screenshot(path=str(SHOTS / "7-runs-dpo.png"), full_page=True)
    finally:
        app.close()
