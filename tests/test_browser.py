"""The main journey in a real browser: Debian's Chromium driven by Playwright (never `playwright install`).

upload the sample CSV → save it → train tiny-offline → the Runs chart fills and the run succeeds → reload the page
and the run is still there → chat with the run and get a reply. Screenshots of each tab go to
test-artifacts/screenshots/ (look at them: they are what a new user sees).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from backend.settings import Paths
from tests.browser_util import ROOT, ServedApp, chromium_page, line_width_drawn
from tests.conftest import link_tiny_model

pytestmark = [pytest.mark.browser, pytest.mark.slow]
SHOTS = ROOT / "test-artifacts" / "screenshots"


@pytest.fixture
def browser_page():
    with chromium_page(900) as page:
        yield page


@pytest.fixture
def served(tmp_path: Path, tiny_model_build: Path):
    home = tmp_path / "browser-home"
    link_tiny_model(Paths.from_env(home), tiny_model_build)
    app = ServedApp(home, tmp_path / "app.log")
    yield app
    app.close()


def test_upload_train_watch_and_chat(browser_page, served: ServedApp) -> None:
    from playwright.sync_api import expect

    page = browser_page
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.goto(served.url)

    # 1. Data: the sample CSV, its preview and suggested mapping, then save it.
    page.get_by_role("button", name="Use the sample CSV").click()
    expect(page.get_by_text("Suggested: prompt")).to_be_visible()
    expect(page.get_by_text("What is the capital of France?").first).to_be_visible()
    page.screenshot(path=str(SHOTS / "1-data.png"), full_page=True)
    page.get_by_role("button", name="Save dataset").click()
    expect(page.get_by_text("Saved dataset")).to_be_visible()

    # 2. Train: the dataset is selected, tiny-offline is explained, fewer steps, Train.
    page.get_by_role("tab", name="2. Train").click()
    expect(page.get_by_text("knows nothing else").first).to_be_visible()
    steps = page.get_by_label("max steps")
    steps.fill("40")
    page.screenshot(path=str(SHOTS / "2-train.png"), full_page=True)
    page.get_by_role("button", name="Train", exact=True).click()

    # 3. Runs: it opens by itself on the new run; the chart fills; the run succeeds.
    summary = page.locator("#run-summary")
    expect(summary).to_contain_text("running", timeout=60_000)
    expect(summary).to_contain_text("succeeded: final loss", timeout=180_000)
    expect(page.locator("#run-log textarea")).to_have_value(re.compile("finished: succeeded"))
    text = summary.inner_text()
    first, last = (float(x) for x in re.search(r"Loss ([\d.]+) at the start, ([\d.]+) now", text).groups())
    assert last < first
    # The loss chart shows a line across the plot, not an empty frame (Vega draws it on a canvas: look at pixels).
    chart = page.locator("#run-loss-chart")
    expect(chart).to_be_visible()
    page.wait_for_timeout(2_000)  # the timer's next refresh and Vega's transition
    page.screenshot(path=str(SHOTS / "3-runs.png"), full_page=True)
    assert line_width_drawn(chart.screenshot(path=str(SHOTS / "3-runs-loss-chart.png"))) > 0.6
    page.screenshot(path=str(SHOTS / "3-runs.png"), full_page=True)

    # Reloading the page changes nothing: the run is still there, still succeeded.
    page.reload()
    page.get_by_role("tab", name="3. Runs").click()
    expect(page.locator("#run-summary")).to_contain_text("succeeded", timeout=30_000)

    # 4. Chat with the fine-tuned run.
    page.get_by_role("tab", name="4. Chat").click()
    page.get_by_label("Talk to").click()
    page.get_by_role("option", name=re.compile(r"^run-")).first.click()
    page.get_by_placeholder("Type a message and press Enter").fill("What is the capital of France?")
    page.get_by_role("button", name="Send").click()
    bot = page.locator("#chatbot")
    expect(bot).to_contain_text("The capital of", timeout=120_000)
    page.screenshot(path=str(SHOTS / "4-chat.png"), full_page=True)

    # 5. Compare: the base and the run side by side, then scores on held-out examples.
    page.get_by_role("tab", name="5. Compare").click()
    page.get_by_label("Runs (up to 4, same base model)").click()
    page.get_by_role("option", name=re.compile(r"^run-")).first.click()
    page.keyboard.press("Escape")
    page.get_by_placeholder("Type a prompt, or pick one from the validation set").fill(
        "What is the capital of France?"
    )
    page.get_by_role("button", name="Answer side by side").click()
    expect(page.get_by_text("one copy of")).to_be_visible(timeout=60_000)
    # Column 0 is the base alone, column 1 the run: the run answers in the pattern it learned, the base does not.
    expect(page.locator("#answer-1 textarea")).to_have_value(re.compile("^The capital of"), timeout=90_000)
    expect(page.locator("#answer-0")).to_contain_text("base model: tiny-offline")
    assert not page.locator("#answer-0 textarea").input_value().startswith("The capital of")
    page.screenshot(path=str(SHOTS / "5a-compare.png"), full_page=True)
    page.get_by_text("Scores on held-out examples").click()
    page.get_by_label("Run to score").click()
    page.get_by_role("option", name=re.compile(r"^run-")).first.click()
    # Scored already when training ended (the preset's 16 examples); pressing Score rescores with the slider's 32.
    scored = page.locator(".td-ok", has_text="lower is better, ↑ higher is better")
    expect(scored).to_contain_text(re.compile(r"on 16 examples from"), timeout=30_000)
    page.get_by_role("button", name="Score (base vs fine-tuned)").click()
    expect(scored).to_contain_text(re.compile(r"on 32 examples from"), timeout=180_000)
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
