"""The main journey in a real browser: Debian's Chromium driven by Playwright (never `playwright install`).

upload the sample CSV (support questions about a robot vacuum, with its validation file) → save it → train the
starter model (SmolLM2-135M, a real model, on the CPU; fewer steps than its preset, to keep CI quick) → the Runs
chart fills and the run succeeds → reload the page and the run is still there → chat with the run and get the
fact it was taught → compare it with its base → its scores → publish a demo. Screenshots of each tab go to
test-artifacts/screenshots/ (look at them: they are what a new user sees).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from backend.settings import Paths
from tests.browser_util import ROOT, ServedApp, chromium_page, line_width_drawn, wait_until
from tests.conftest import link_starter_model, link_tiny_model

pytestmark = [pytest.mark.browser, pytest.mark.slow]
SHOTS = ROOT / "test-artifacts" / "screenshots"
QUESTION = (
    "How long does the battery last?"  # the sample's answer: "The Skylark S2 runs for up to 150 minutes..."
)
STEPS = 30  # a third of the preset's run, to keep CI quick: enough to learn whose support it speaks for
PRODUCT = re.compile(
    r"Skylark|S2"
)  # the product the sample is about, which the base model has never heard of


@pytest.fixture
def browser_page():
    with chromium_page(900) as page:
        yield page


@pytest.fixture
def served(tmp_path: Path, tiny_model_build: Path, starter_model_build: Path):
    home = tmp_path / "browser-home"
    link_tiny_model(Paths.from_env(home), tiny_model_build)
    link_starter_model(Paths.from_env(home), starter_model_build)
    app = ServedApp(home, tmp_path / "app.log")
    yield app
    app.close()


def test_upload_train_watch_and_chat(browser_page, served: ServedApp) -> None:
    from playwright.sync_api import expect

    page = browser_page
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.goto(served.url)

    # 1. Data: the sample CSV and its validation file, the preview and suggested mapping, then save it.
    page.get_by_role("button", name="Use the sample CSV").click()
    expect(page.get_by_text("Suggested: prompt")).to_be_visible()
    expect(page.get_by_text("Cliff sensor error E4, what now?").first).to_be_visible()
    expect(page.locator("#td-rendered")).to_contain_text("as smollm2-135m sees it")
    page.screenshot(path=str(SHOTS / "1-data.png"), full_page=True)
    page.get_by_role("button", name="Save dataset").click()
    expect(page.get_by_text("Saved dataset")).to_be_visible()
    expect(page.get_by_text("validation: 43 rows").first).to_be_visible()

    # 2. Train: the dataset is selected, the starter model is the default and explained, fewer steps, Train.
    page.get_by_role("tab", name="2. Train").click()
    expect(page.get_by_text("real 135M-parameter chat model").first).to_be_visible()
    expect(page.locator("#train-estimate")).to_contain_text("from Train to finished", timeout=60_000)
    steps = page.get_by_label("max steps")
    steps.fill(str(STEPS))
    page.screenshot(path=str(SHOTS / "2-train.png"), full_page=True)
    page.get_by_role("button", name="Train", exact=True).click()

    # 3. Runs: it opens by itself on the new run; the chart fills; the run succeeds (then scores itself).
    summary = page.locator("#run-summary")
    expect(summary).to_contain_text("running", timeout=60_000)
    expect(summary).to_contain_text("succeeded: final loss", timeout=600_000)
    expect(page.locator("#run-log textarea")).to_have_value(re.compile("finished: succeeded"))
    text = summary.inner_text()
    first, last = (float(x) for x in re.search(r"Loss ([\d.]+) at the start, ([\d.]+) now", text).groups())
    assert last < first
    # The loss chart shows a line across the plot, not an empty frame (Vega draws it on a canvas: look at pixels).
    chart = page.locator("#run-loss-chart")
    expect(chart).to_be_visible()
    # The timer's next refresh and Vega's transition take a moment: wait for the line itself, not for a fixed time.
    drawn = wait_until(lambda: line_width_drawn(chart.screenshot()), above=0.6, timeout_s=30)
    chart.screenshot(path=str(SHOTS / "3-runs-loss-chart.png"))
    assert drawn > 0.6
    page.screenshot(path=str(SHOTS / "3-runs.png"), full_page=True)

    # Reloading the page changes nothing: the run is still there, still succeeded.
    page.reload()
    page.get_by_role("tab", name="3. Runs").click()
    expect(page.locator("#run-summary")).to_contain_text("succeeded", timeout=30_000)

    # 4. Chat with the fine-tuned run: it answers as the product's support (tests/test_starter.py checks the facts
    # after the preset's whole run).
    page.get_by_role("tab", name="4. Chat").click()
    page.get_by_label("Talk to").click()
    page.get_by_role("option", name=re.compile(r"^run-")).first.click()
    page.get_by_placeholder("Type a message and press Enter").fill(QUESTION)
    page.get_by_role("button", name="Send").click()
    bot = page.locator("#chatbot")
    expect(bot).to_contain_text(PRODUCT, timeout=120_000)
    page.screenshot(path=str(SHOTS / "4-chat.png"), full_page=True)

    # 5. Compare: the base and the run side by side, then scores on held-out examples.
    page.get_by_role("tab", name="5. Compare").click()
    page.get_by_label("Runs (up to 4, same base model)").click()
    page.get_by_role("option", name=re.compile(r"^run-")).first.click()
    page.keyboard.press("Escape")
    page.get_by_placeholder("Type a prompt, or pick one from the validation set").fill(QUESTION)
    page.get_by_role("button", name="Answer side by side").click()
    expect(page.get_by_text("one copy of")).to_be_visible(timeout=60_000)
    # Column 0 is the base alone, column 1 the run: the run speaks for the product, the base cannot.
    expect(page.locator("#answer-1 textarea")).to_have_value(PRODUCT, timeout=120_000)
    expect(page.locator("#answer-0")).to_contain_text("base model: smollm2-135m")
    assert not PRODUCT.search(page.locator("#answer-0 textarea").input_value())
    page.screenshot(path=str(SHOTS / "5a-compare.png"), full_page=True)
    page.get_by_text("Scores on held-out examples").click()
    page.get_by_label("Run to score").click()
    page.get_by_role("option", name=re.compile(r"^run-")).first.click()
    # Scored already when training ended (the preset's 16 examples); pressing Score rescores with the slider's 32.
    scored = page.locator(".td-ok", has_text="lower is better, ↑ higher is better")
    expect(scored).to_contain_text(re.compile(r"on 16 examples from"), timeout=30_000)
    page.get_by_role("button", name="Score (base vs fine-tuned)").click()
    expect(scored).to_contain_text(re.compile(r"on 32 examples from"), timeout=300_000)
    expect(page.get_by_text("ROUGE-L ↑").filter(visible=True).first).to_be_visible()  # (Runs has one too)
    page.screenshot(path=str(SHOTS / "5b-scores.png"), full_page=True)

    # 6. Share: publish a password-protected demo of the run; the password is shown once.
    page.get_by_role("tab", name="6. Share").click()
    page.get_by_label("Run to share").click()
    page.get_by_role("option", name=re.compile(r"^run-")).first.click()
    page.get_by_role("button", name="Publish demo").click()
    expect(page.get_by_text("is live at")).to_be_visible(timeout=120_000)
    expect(page.get_by_text("shown only now")).to_be_visible()
    page.screenshot(path=str(SHOTS / "5-share.png"), full_page=True)
    page.get_by_role("button", name="Stop this run's demo").click()
    expect(page.get_by_text("Stopped the demo")).to_be_visible()
