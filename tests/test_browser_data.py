"""The Data tab in a real browser (Debian's Chromium through Playwright; never `playwright install`).

A CSV with unusual column names whose contents mislead the suggestion: the person maps the columns by hand, sees
one example rendered the way the starter model will be trained on it (the reply highlighted), saves it with a progress
bar, and reads the report (rows left out with their row numbers, the token-length histogram, tokens per epoch).
Then a chat file, whose assistant turns are highlighted. Screenshots: test-artifacts/screenshots/data-*.png.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from backend.settings import Paths
from tests.browser_util import ROOT, ServedApp, chromium_page
from tests.conftest import link_starter_model, link_tiny_model

pytestmark = [pytest.mark.browser, pytest.mark.slow]
EXPECT_TIMEOUT_MS = 30_000  # the first rendered example builds nothing, but a loaded machine is slow
SHOTS = ROOT / "test-artifacts" / "screenshots"

# Spalte 1: what the customer wrote (no question marks, long); Spalte 2: the reply; Spalte 3: an internal note full
# of questions. From the contents alone the note looks like the prompt: the person has to map it.
ROWS = [
    (
        "My parcel has not arrived and the tracking page shows nothing since Monday",
        "Sorry for the delay. It arrives on Friday.",
        "check courier?",
    ),
    ("I was charged twice for the same order last week", "We refunded the second charge today.", "refund?"),
    (
        "The blue jacket I ordered is too small for me",
        "Please send it back and we will swap the size.",
        "size?",
    ),
    ("I was charged twice for the same order last week", "We refunded the second charge today.", "refund?"),
    ("Please cancel my subscription from next month", "", "churn?"),
]


@pytest.fixture
def browser_page():
    with chromium_page(1000, EXPECT_TIMEOUT_MS) as page:
        yield page


@pytest.fixture
def served(tmp_path: Path, tiny_model_build: Path, starter_model_build: Path):
    home = tmp_path / "browser-home"
    link_tiny_model(Paths.from_env(home), tiny_model_build)
    link_starter_model(
        Paths.from_env(home), starter_model_build
    )  # the Data tab renders with the default model
    app = ServedApp(home, tmp_path / "app.log")
    app.home = home  # type: ignore[attr-defined]
    yield app
    app.close()


def pick(page, label: str, option: str) -> None:
    """Choose an option of a Gradio dropdown."""
    page.get_by_label(label).click()
    page.get_by_role("option", name=option, exact=True).filter(visible=True).first.click()


def test_map_unusual_columns_see_the_rendered_example_and_the_report(browser_page, served, tmp_path) -> None:
    from playwright.sync_api import expect

    page = browser_page
    SHOTS.mkdir(parents=True, exist_ok=True)
    f = tmp_path / "Kundenservice Export (final).csv"
    f.write_bytes(
        ("Spalte 1;Spalte 2;Spalte 3\r\n" + "".join(f"{a};{b};{c}\r\n" for a, b, c in ROWS)).encode()
    )
    page.goto(served.url)
    page.get_by_role("button", name="Use the sample CSV").wait_for()  # the page is built

    # 1. Upload: the first rows and a suggestion (a wrong one: the notes hold the questions).
    page.locator("input[type=file]").first.set_input_files(str(f))
    expect(page.get_by_text("Suggested:")).to_be_visible()
    expect(page.get_by_text("5 rows, 3 columns")).to_be_visible()
    rendered = page.locator("#td-rendered")
    expect(rendered).to_contain_text("as smollm2-135m sees it")  # the model the Train tab starts from
    page.screenshot(path=str(SHOTS / "data-1-upload.png"), full_page=True)

    # 2. Map by hand: prompt = Spalte 1, response = Spalte 2, no system prompt.
    pick(page, "Prompt column (what the model is asked)", "Spalte 1")
    pick(page, "Response column (what it should answer)", "Spalte 2")
    trained = rendered.locator(".td-trained")
    expect(trained).to_have_text("Sorry for the delay. It arrives on Friday.<|im_end|>\n")
    expect(rendered.locator(".td-context").first).to_contain_text("My parcel has not arrived")
    rendered.scroll_into_view_if_needed()
    page.screenshot(path=str(SHOTS / "data-2-mapped.png"), full_page=True)

    # 3. Save: the report names what was left out and why, with the spreadsheet's row numbers.
    page.get_by_label("Dataset name").fill("support")
    page.get_by_role("button", name="Save dataset").click()
    expect(page.get_by_text("Saved dataset")).to_be_visible(timeout=60_000)
    report = page.locator("#td-report").first
    expect(report).to_contain_text("3 of 5 rows kept.")
    expect(report).to_contain_text("Left out: exact duplicate of an earlier row")
    expect(report).to_contain_text("row 5")
    expect(report).to_contain_text("Left out: empty response")
    expect(report).to_contain_text("row 6")
    expect(report).to_contain_text("per epoch")
    expect(report.locator("#td-histogram tr").first).to_be_visible()
    report.scroll_into_view_if_needed()
    page.screenshot(path=str(SHOTS / "data-3-report.png"), full_page=True)

    # The saved version keeps the person's mapping and is listed.
    from backend.core.store import Store

    record = Store(Paths.from_env(served.home).db).get_dataset("support")
    assert record.info["mapping"] == {
        "prompt": "Spalte 1",
        "response": "Spalte 2",
        "system": None,
        "context": None,
    }
    assert record.source_file == "Kundenservice Export (final).csv"
    expect(page.locator("table").filter(has_text="support").first).to_be_visible()


def test_a_chat_file_highlights_every_assistant_turn(browser_page, served, tmp_path) -> None:
    from playwright.sync_api import expect

    page = browser_page
    SHOTS.mkdir(parents=True, exist_ok=True)
    chats = [
        {
            "conversations": [
                {"from": "human", "value": "Hi, can you help?"},
                {"from": "gpt", "value": "Of course."},
                {"from": "human", "value": "Where is my order?"},
                {"from": "gpt", "value": "It ships tomorrow."},
            ]
        },
        {
            "conversations": [
                {"from": "human", "value": "Thanks"},
                {"from": "gpt", "value": "You are welcome."},
            ]
        },
    ]
    f = tmp_path / "chats.jsonl"
    f.write_text("".join(json.dumps(c) + "\n" for c in chats))
    page.goto(served.url)
    page.get_by_role("button", name="Use the sample CSV").wait_for()
    page.locator("input[type=file]").first.set_input_files(str(f))
    expect(page.get_by_text("multi-turn chat", exact=False).first).to_be_visible()
    rendered = page.locator("#td-rendered")
    expect(rendered.locator(".td-trained")).to_have_count(2)
    expect(rendered.locator(".td-trained").nth(1)).to_have_text("It ships tomorrow.<|im_end|>\n")
    rendered.scroll_into_view_if_needed()
    page.screenshot(path=str(SHOTS / "data-4-chat.png"), full_page=True)


def test_the_preview_shows_the_cut_and_a_new_file_clears_the_old_report(
    browser_page, served, tmp_path
) -> None:
    """An over-length row is shown exactly as trained: cut at the max length, the rest struck through. Then a file
    whose first row is data: its error names the problem, and the report of the file saved before is gone."""
    from playwright.sync_api import expect

    page = browser_page
    long = tmp_path / "long.csv"
    long.write_text(
        "question,answer\n" + 'Tell me everything,"' + " ".join(["word"] * 300) + '"\nAnd briefly?,Words.\n'
    )
    page.goto(served.url)
    page.get_by_role("button", name="Use the sample CSV").wait_for()
    page.locator("input[type=file]").first.set_input_files(str(long))
    rendered = page.locator("#td-rendered")
    expect(rendered).to_contain_text("as smollm2-135m sees it")
    limit = page.get_by_label("Max length (tokens)")
    expect(limit).to_have_value("256")  # the same as the Train tab's preset, not another number
    limit.fill("64")
    limit.press("Enter")
    expect(rendered).to_contain_text("Cut to 64 tokens")
    expect(rendered).to_contain_text("64 tokens, ")
    expect(rendered.locator(".td-cut-off")).to_contain_text("word")  # the rest, struck through
    rendered.scroll_into_view_if_needed()
    page.screenshot(path=str(SHOTS / "data-5-cut.png"), full_page=True)
    page.get_by_label("Dataset name").fill("long")
    page.get_by_role("button", name="Save dataset").click()
    expect(page.locator("#td-save-message")).to_contain_text("Saved dataset", timeout=60_000)
    expect(page.locator("#td-report")).to_contain_text("2 of 2 rows kept.")

    numbers = tmp_path / "numbers.csv"
    numbers.write_text("1,2,3\n4,5,6\n")
    page.locator("#td-upload").get_by_role("button", name="Clear").click()  # the × of the upload box
    page.locator("input[type=file]").first.set_input_files(str(numbers))
    expect(page.get_by_text("looks like data, not column names")).to_be_visible()
    expect(rendered).to_have_count(0)  # said once, under the upload: the example area does not repeat it
    expect(page.locator("#td-report")).to_have_count(0)  # the other file's report went with it
    expect(page.locator("#td-save-message")).not_to_contain_text("Saved dataset")
