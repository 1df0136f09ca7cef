"""A published demo in a real browser: the login page, the password, then a chat with the fine-tuned run."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.browser_util import ROOT, chromium_page
from tests.cli_util import home_with_sample, train_sample, tunedeck, tunedeck_json

pytestmark = [pytest.mark.browser, pytest.mark.slow]
SHOTS = ROOT / "test-artifacts" / "screenshots"


@pytest.fixture
def browser_page():
    with chromium_page(900) as page:
        yield page


def test_a_published_demo_asks_for_the_password_then_chats(
    browser_page,
    tmp_path: Path,
    tiny_model_build: Path,
) -> None:
    from playwright.sync_api import expect

    env = home_with_sample(tmp_path / "home", tiny_model_build)
    job = train_sample(env, steps=60)
    info = tunedeck_json(env, "demo", "start", job["id"], "--password", "open-sesame-42")
    page = browser_page
    SHOTS.mkdir(parents=True, exist_ok=True)
    try:
        page.goto(info["local_url"])
        expect(page.get_by_text("This demo is password protected.")).to_be_visible()
        page.get_by_label("username").fill("demo")
        page.get_by_label("password").fill("not-the-password")
        page.get_by_role("button", name="Login").click()
        expect(page.get_by_text("Incorrect Credentials")).to_be_visible()
        page.screenshot(path=str(SHOTS / "6-demo-login.png"), full_page=True)
        page.get_by_label("username").fill("demo")  # the login page clears it after a failed attempt
        page.get_by_label("password").fill("open-sesame-42")
        page.get_by_role("button", name="Login").click()
        expect(page.get_by_text(f"Demo: {job['id']}")).to_be_visible()
        box = page.get_by_role("textbox").first
        box.fill("What is the capital of France?")
        box.press("Enter")
        reply = page.locator(".bot, [data-testid='bot']").last
        expect(reply).to_contain_text("The capital of", timeout=60_000)
        expect(page.get_by_role("textbox").first).to_be_editable(
            timeout=60_000
        )  # the reply has finished streaming
        page.screenshot(path=str(SHOTS / "6-demo-chat.png"), full_page=True)
    finally:
        tunedeck(env, "demo", "stop", job["id"])
