"""The main journey in a real browser: Debian's Chromium driven by Playwright (never `playwright install`).

Once per module (``trained``): upload the sample CSV (support questions about a robot vacuum, with its validation
file) → save it → train the starter model (SmolLM2-135M, a real model, on the CPU; fewer steps than its preset, to
keep CI quick) → the Runs tab opens on it and it succeeds. Then each part is a test of its own, on a fresh page, so
that the first failure does not hide the rest: the Runs chart and a reload, Chat, Compare and its scores, Share, and
the Train tab's messages. No test picks the run by hand: each tab opens on the run just trained, which keeps the
whole journey, with the preset's defaults, to 7 actions from opening the page to a chat answer (sample, save, Train
tab, Train, Chat tab, type, send). Screenshots of each tab go to test-artifacts/screenshots/ (look at them: they
are what a new user sees).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import pytest

from backend.settings import Paths
from tests.browser_util import ROOT, ServedApp, chromium_page, line_width_drawn, wait_until
from tests.cli_util import JOB_TEST_TIMEOUT_S, wait_for_job
from tests.conftest import link_starter_model, link_tiny_model

# The timeout covers the module fixture's training too (in the first test's time): the run may take as long as it
# needs while it makes progress (wait_for_job), on a busy 2-core machine far more than the default 600 s.
pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.timeout(JOB_TEST_TIMEOUT_S)]
SHOTS = ROOT / "test-artifacts" / "screenshots"
QUESTION = (
    "How long does the battery last?"  # the sample's answer: "The Skylark S2 runs for up to 150 minutes..."
)
STEPS = 60  # 240 examples (the preset: 152 steps of 4), to keep CI quick: enough to learn whose support it speaks for
PRODUCT = re.compile(
    r"Skylark|S2"
)  # the product the sample is about, which the base model has never heard of


@dataclass
class Trained:
    app: ServedApp
    run: str  # the run's id


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory, tiny_model_build: Path, starter_model_build: Path):
    """The app with one run of the starter model trained through the browser (Data → Train → Runs)."""
    from playwright.sync_api import expect

    tmp = tmp_path_factory.mktemp("browser-journey")
    home = tmp / "browser-home"
    link_tiny_model(Paths.from_env(home), tiny_model_build)
    link_starter_model(Paths.from_env(home), starter_model_build)
    app = ServedApp(home, tmp / "app.log")
    SHOTS.mkdir(parents=True, exist_ok=True)
    try:
        with chromium_page(900) as page:
            page.goto(app.url)
            # 1. Data: the sample CSV and its validation file, the preview and suggested mapping, then save it.
            page.get_by_role("button", name="Use the sample CSV").click()
            expect(page.get_by_text("Suggested: prompt")).to_be_visible()
            expect(page.get_by_text("Cliff sensor error E4, what now?").first).to_be_visible()
            expect(page.locator("#td-rendered")).to_contain_text("as smollm2-135m sees it")
            page.screenshot(path=str(SHOTS / "1-data.png"), full_page=True)
            page.get_by_role("button", name="Save dataset").click()
            # The confirmation sits right under the button that was pressed.
            expect(page.locator("#td-save-message")).to_contain_text("Saved dataset", timeout=120_000)
            expect(page.get_by_text("validation: 43 rows").first).to_be_visible()

            # 2. Train: the dataset is selected, the starter model is the default and explained, fewer steps.
            page.get_by_role("tab", name="2. Train").click()
            expect(page.get_by_text("real 135M-parameter chat model").first).to_be_visible()
            expect(page.locator("#train-estimate")).to_contain_text("from Train to finished", timeout=60_000)
            page.get_by_label("Training steps (-1: use passes)").fill(str(STEPS))
            expect(page.locator("#train-estimate")).to_contain_text(f"{STEPS} steps", timeout=60_000)
            page.screenshot(path=str(SHOTS / "2-train.png"), full_page=True)
            page.get_by_role("button", name="Train", exact=True).click()

            # 3. Runs: it opens by itself on the new run, which succeeds (and then scores itself). The store says
            # when it ends, however long that takes while it makes progress; then the page must say so promptly.
            summary = page.locator("#run-summary")
            expect(summary).to_contain_text("running", timeout=60_000)
            run = re.search(r"run-[\w-]+", summary.inner_text()).group(0)
            job = wait_for_job(home, run)
            assert job.status.value == "succeeded", f"{run} {job.status.value}: {job.reason}"
            expect(summary).to_contain_text("succeeded: final loss", timeout=60_000)
        yield Trained(app, run)
    finally:
        app.close()  # its demos, the app, and the training worker if the run has not ended


@pytest.fixture
def page():
    with chromium_page(900) as p:
        yield p


def test_runs_show_the_curve_going_down_and_survive_a_reload(trained: Trained, page) -> None:
    from playwright.sync_api import expect

    page.goto(trained.app.url)
    page.get_by_role("tab", name="3. Runs").click()
    summary = page.locator("#run-summary")
    expect(summary).to_contain_text(trained.run)  # the newest run, selected without asking
    expect(summary).to_contain_text("succeeded: final loss")
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
    # A finished run cannot be cancelled, nor resumed: those buttons are off.
    expect(page.get_by_role("button", name="Cancel this run")).to_be_disabled()
    expect(page.get_by_role("button", name="Resume where it stopped")).to_be_disabled()
    page.screenshot(path=str(SHOTS / "3-runs.png"), full_page=True)
    # Reloading the page changes nothing: the run is still there, still succeeded.
    page.reload()
    page.get_by_role("tab", name="3. Runs").click()
    expect(page.locator("#run-summary")).to_contain_text("succeeded", timeout=30_000)


def test_chat_opens_on_the_run_just_trained_and_it_answers_as_the_products_support(
    trained: Trained, page
) -> None:
    """tests/test_starter.py checks the facts after the preset's whole run; here, whose support it speaks for."""
    from playwright.sync_api import expect

    page.goto(trained.app.url)
    page.get_by_role("tab", name="4. Chat").click()
    expect(page.get_by_label("Talk to")).to_have_value(re.compile(trained.run))  # not the base model
    page.get_by_placeholder("Type a message and press Enter").fill(QUESTION)
    page.get_by_role("button", name="Send").click()
    bot = page.locator("#chatbot")
    expect(bot).to_contain_text(PRODUCT, timeout=120_000)
    # The screenshot shows the whole answer: wait until the reply stops growing.
    wait_until(_unchanged(bot.inner_text), above=0.5, timeout_s=120, every_s=1.0)
    page.screenshot(path=str(SHOTS / "4-chat.png"), full_page=True)


def test_compare_answers_side_by_side_and_scores_with_progress(trained: Trained, page) -> None:
    from playwright.sync_api import expect

    page.goto(trained.app.url)
    page.get_by_role("tab", name="5. Compare").click()
    console = []
    page.on("console", lambda m: console.append(m.text))
    # The run just trained is already picked for side by side, scores and the blind test: no run to choose. (Picked
    # when the tab opens: the test waits to see it, as a person does, or its click can beat the pick.)
    expect(page.locator("#sbs-runs")).to_contain_text(trained.run)
    page.get_by_placeholder("Type a prompt, or pick one from the validation set").fill(QUESTION)
    page.get_by_role("button", name="Answer side by side").click()
    expect(page.get_by_text("one copy of")).to_be_visible(timeout=60_000)
    # Column 0 is the base alone, column 1 the run: the run speaks for the product, the base cannot.
    expect(page.locator("#answer-1 textarea")).to_have_value(PRODUCT, timeout=120_000)
    expect(page.locator("#answer-0")).to_contain_text("base model: smollm2-135m")
    expect(page.locator("#answer-1")).to_contain_text(trained.run)
    assert not PRODUCT.search(page.locator("#answer-0 textarea").input_value())
    page.screenshot(path=str(SHOTS / "5a-compare.png"), full_page=True)

    page.get_by_text("Scores on held-out examples").click()
    expect(page.get_by_label("Run to score")).to_have_value(trained.run)
    # Scored already when training ended (the preset's 16 examples). The slider offers only the 43 held-out rows.
    scored = page.locator(".td-ok", has_text="lower is better, ↑ higher is better")
    expect(scored).to_contain_text(re.compile(r"on 16 examples from"), timeout=30_000)
    expect(page.get_by_text("what it measures").first).to_be_visible()
    expect(page.get_by_label("range slider for Examples")).to_have_attribute("max", "43")
    page.get_by_role("button", name="Score (base vs fine-tuned)").click()
    # While it scores, it says how far it is.
    expect(page.get_by_text(re.compile(r"\d+ of 64 answers written"))).to_be_visible(timeout=300_000)
    expect(scored).to_contain_text(re.compile(r"on 32 examples from"), timeout=300_000)
    expect(page.get_by_text("ROUGE-L ↑").filter(visible=True).first).to_be_visible()  # (Runs has one too)
    page.screenshot(path=str(SHOTS / "5b-scores.png"), full_page=True)

    # The blind test starts as base model against the run; the win rate is a percentage on a 0-100 % axis.
    page.get_by_role("button", name=re.compile(r"^Blind test")).click()
    expect(page.get_by_label("Contestant 2")).to_have_value(trained.run)
    page.get_by_label("Prompt", exact=True).last.fill(QUESTION)
    page.get_by_role("button", name="Get two answers").click()
    expect(page.get_by_label("Answer B")).to_have_value(re.compile(r"\S"), timeout=120_000)
    page.get_by_role("button", name="Tie").click()
    expect(page.get_by_text("Recorded.")).to_be_visible()
    expect(page.get_by_role("gridcell", name="50%").first).to_be_visible()
    # The chart's axis is a quantity from 0 to 100 % (Vega draws it as SVG, ticks as text), not categories.
    expect(page.locator("#win-rates")).to_contain_text(re.compile(r"0%\s*20%\s*40%\s*60%\s*80%\s*100%"))
    # Vega warned about the win rate (a band scale when it was an axis of categories, "0" above "1"; an infinite
    # extent while the chart was empty): no warning names it now.
    assert not [m for m in console if "win rate" in m], console
    page.screenshot(path=str(SHOTS / "5c-blind-test.png"), full_page=True)


def test_share_publishes_a_demo_of_the_run_just_trained(trained: Trained, page) -> None:
    from playwright.sync_api import expect

    page.goto(trained.app.url)
    page.get_by_role("tab", name="6. Share").click()
    expect(page.get_by_label("Run to share")).to_have_value(trained.run)
    page.get_by_role("button", name="Publish demo").click()
    expect(page.get_by_text("Starting the demo")).to_be_visible(timeout=30_000)  # not a bare spinner
    expect(page.get_by_text("is live at")).to_be_visible(timeout=120_000)
    expect(page.get_by_text("shown only now")).to_be_visible()
    link = page.get_by_role("link", name=re.compile(r"127\.0\.0\.1:\d+"))  # (no "/": Playwright's regex)
    expect(link).to_be_visible()  # the address is a link
    page.screenshot(path=str(SHOTS / "5-share.png"), full_page=True)
    page.get_by_role("button", name="Stop this run's demo").click()
    expect(page.get_by_text("Stopped the demo")).to_be_visible()


def test_share_downloads_the_run_for_llama_cpp_and_ollama(trained: Trained, page) -> None:
    from playwright.sync_api import expect

    page.goto(trained.app.url)
    page.get_by_role("tab", name="6. Share").click()
    expect(page.get_by_label("Run to share")).to_have_value(trained.run)
    page.get_by_role("button", name="Download for llama.cpp / Ollama", exact=True).click()
    message = page.locator("#td-gguf-message")
    expect(message).to_contain_text("%", timeout=60_000)  # progress while it works, not a bare spinner
    expect(message).to_contain_text("Prompted exactly as in training", timeout=300_000)
    expect(message).to_contain_text("ollama create")
    files = page.locator("#td-gguf-files")
    for name in (f"{trained.run}-q8_0.gguf", "Modelfile", "README.md"):
        expect(files.get_by_role("cell", name=name)).to_be_visible()
    page.screenshot(path=str(SHOTS / "5-share-gguf.png"), full_page=True)


def test_train_messages_belong_to_the_latest_change(trained: Trained, page) -> None:
    from playwright.sync_api import expect

    page.goto(trained.app.url)
    page.get_by_role("tab", name="2. Train").click()
    rate = page.get_by_label("Learning rate", exact=True)
    rate.fill("-1")
    rate.press("Enter")
    rate.blur()
    problem = page.locator(".td-error", has_text="Learning rate")
    expect(problem).to_be_visible()
    rate.fill("0.002")
    rate.press("Enter")
    rate.blur()
    expect(problem).to_have_count(0)  # fixed: the error goes with its cause
    expect(page.locator("#train-estimate")).to_contain_text("from Train to finished", timeout=60_000)


def _unchanged(read):
    """A measure for ``wait_until``: 1.0 once ``read()`` returns what it returned the time before, else 0."""
    last: list = [object()]

    def measure() -> float:
        now = read()
        same, last[0] = now == last[0], now
        return 1.0 if same else 0.0

    return measure


@pytest.mark.parametrize("width,height", [(1400, 1000), (1280, 720)])
def test_every_tab_fits_a_desktop_and_a_laptop_screen(trained: Trained, width: int, height: int) -> None:
    """Each tab, as a newcomer first sees it: a screenshot at each size, and nothing wider than the window."""
    from playwright.sync_api import expect

    with chromium_page(height, width=width) as page:
        page.goto(trained.app.url)
        for tab in ("1. Data", "2. Train", "3. Runs", "4. Chat", "5. Compare", "6. Share"):
            page.get_by_role("tab", name=tab).click()
            expect(page.get_by_role("tab", name=tab)).to_have_attribute("aria-selected", "true")
            expect(page.get_by_role("tabpanel").filter(visible=True).first).to_be_visible()
            page.screenshot(path=str(SHOTS / f"tabs-{width}x{height}-{tab[0]}.png"))
            overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
            assert overflow <= 0, f"{tab} is {overflow} px wider than a {width} px window"
