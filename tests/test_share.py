"""Export, push, published demos and the app's own login: what a person sharing a fine-tune relies on."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
import zipfile
from pathlib import Path

import pytest

from backend.settings import CAPITALS_CSV, PROJECT_ROOT, Paths
from tests.browser_util import free_port
from tests.cli_util import home_with_sample, offline_env, train_sample, tunedeck, tunedeck_json

pytestmark = pytest.mark.slow
QUESTION = "What is the capital of France?"


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory, tiny_model_build: Path) -> dict:
    root = tmp_path_factory.mktemp("share-home")
    env = home_with_sample(root, tiny_model_build)
    job = train_sample(env)
    reply = tunedeck_json(env, "generate", job["id"], "--prompt", QUESTION, "--max-new-tokens", "24")["reply"]
    return {"root": root, "env": env, "job": job, "reply": reply}


def _greedy(model, tok) -> str:
    import torch

    enc = tok.apply_chat_template(
        [{"role": "user", "content": QUESTION}],
        add_generation_prompt=True,
        return_tensors="pt",
        return_dict=True,
    )
    with torch.inference_mode():
        out = model.generate(**enc, max_new_tokens=24, do_sample=False, pad_token_id=tok.pad_token_id)
    return tok.decode(out[0, enc["input_ids"].shape[1] :], skip_special_tokens=True)


def test_adapter_zip_loads_with_plain_peft_and_answers_the_same(run: dict, tmp_path: Path) -> None:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = tunedeck_json(run["env"], "export", run["job"]["id"], "--to", str(tmp_path / "out"))
    with zipfile.ZipFile(out["zip"]) as z:
        names = set(z.namelist())
        z.extractall(tmp_path / "unzipped")
    folder = tmp_path / "unzipped" / Path(out["folder"]).name
    for f in ("adapter_config.json", "adapter_model.safetensors", "tokenizer.json", "README.md"):
        assert f"{folder.name}/{f}" in names
    card = (folder / "README.md").read_text()
    assert "base_model: tiny-offline" in card and "capitals" in card and "sha256:" in card
    assert "PeftModel.from_pretrained" in card and "final training loss" in card
    base = AutoModelForCausalLM.from_pretrained(Paths.from_env(run["root"]).models / "tiny-offline")
    model = PeftModel.from_pretrained(base, folder).eval()
    assert _greedy(model, AutoTokenizer.from_pretrained(folder)) == run["reply"]


def test_merged_model_loads_with_plain_transformers_and_answers_the_same(run: dict, tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = tunedeck_json(run["env"], "export", run["job"]["id"], "--to", str(tmp_path), "--merged")
    folder = Path(out["folder"])
    assert (folder / "model.safetensors").is_file() and not (folder / "adapter_config.json").exists()
    model = AutoModelForCausalLM.from_pretrained(folder).eval()
    assert _greedy(model, AutoTokenizer.from_pretrained(folder)) == run["reply"]


def test_space_bundle_has_an_app_requirements_and_the_adapter(run: dict, tmp_path: Path) -> None:
    out = tunedeck_json(run["env"], "export", run["job"]["id"], "--to", str(tmp_path), "--space")
    folder = Path(out["folder"])
    assert (folder / "adapter" / "adapter_config.json").is_file()
    assert "peft==" in (folder / "requirements.txt").read_text()
    compile((folder / "app.py").read_text(), "app.py", "exec")  # valid Python
    assert "sdk: gradio" in (folder / "README.md").read_text()
    assert (
        "cannot load it" in (folder / "README.md").read_text()
    )  # tiny-offline is not on the Hub: said plainly


def test_a_push_never_writes_the_token_anywhere(run: dict) -> None:
    token = "hf_TuneDeckTestSecret0123456789"
    res = tunedeck({**run["env"], "HF_TOKEN": token}, "push", run["job"]["id"], "--repo", "someone/capitals")
    assert res.returncode != 0 and "Upload to someone/capitals failed" in res.stderr
    assert token not in res.stderr + res.stdout
    for path in Path(run["root"]).rglob("*"):
        if path.is_file() and not path.is_symlink():
            assert token.encode() not in path.read_bytes(), f"the token was written to {path}"
    missing = tunedeck(
        {k: v for k, v in run["env"].items() if k not in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN")},
        "push",
        run["job"]["id"],
        "--repo",
        "someone/capitals",
    )
    assert "No Hugging Face token" in missing.stderr


def test_a_published_demo_needs_its_password_and_chats(run: dict) -> None:
    from gradio_client import Client

    info = tunedeck_json(run["env"], "demo", "start", run["job"]["id"])
    try:
        password = info["password"]
        assert password and info["local_url"].startswith("http://127.0.0.1:")
        demo_json = (Path(run["root"]) / "demos" / run["job"]["id"] / "demo.json").read_text()
        assert password not in demo_json and "pbkdf2_sha256$" in demo_json
        with pytest.raises(Exception, match="(?i)credentials|login"):
            Client(info["local_url"], verbose=False)
        with pytest.raises(Exception, match="(?i)login|credentials|password|auth"):
            Client(info["local_url"], auth=("demo", "wrong-password"), verbose=False)
        client = Client(info["local_url"], auth=("demo", password), verbose=False)
        assert client.predict(QUESTION, api_name="/chat") == run["reply"]
        listed = tunedeck_json(run["env"], "demo", "list")
        assert [d["run_id"] for d in listed] == [run["job"]["id"]]
    finally:
        stopped = tunedeck(run["env"], "demo", "stop", run["job"]["id"])
    assert stopped.returncode == 0
    assert tunedeck_json(run["env"], "demo", "list") == []
    with pytest.raises(OSError):
        urllib.request.urlopen(info["local_url"], timeout=3)


def test_a_share_link_that_cannot_be_made_is_reported_and_the_local_url_works(run: dict) -> None:
    info = tunedeck_json(
        run["env"], "demo", "start", run["job"]["id"], "--share", "--password", "correct-horse"
    )
    try:
        assert info["share_url"] is None
        assert "Could not create a public share link" in info["share_message"]
        assert info["password"] is None  # the person's own password is never echoed
        assert urllib.request.urlopen(info["local_url"], timeout=10).status == 200
    finally:
        stopped = tunedeck(run["env"], "demo", "stop", run["job"]["id"])
    assert stopped.returncode == 0, stopped.stderr  # else the next test's demo of this run would be refused


def test_the_app_refuses_to_be_exposed_without_a_password(tmp_path: Path) -> None:
    from app import exposure_problem

    res = tunedeck(offline_env(tmp_path / "h"), "serve", "--host", "0.0.0.0", timeout=60)
    assert res.returncode == 2 and "without a password" in res.stderr and "TUNEDECK_PASSWORD" in res.stderr
    assert exposure_problem("127.0.0.1", False, False, False) is None
    assert "share link" in exposure_problem("127.0.0.1", True, False, False)
    assert exposure_problem("0.0.0.0", True, True, False) is None
    assert exposure_problem("0.0.0.0", False, False, True) is None


def test_the_app_with_a_password_refuses_anonymous_clients(tmp_path: Path) -> None:
    from gradio_client import Client

    port = free_port()
    env = offline_env(tmp_path / "h", TUNEDECK_PASSWORD="s3cret-pass", TUNEDECK_USERNAME="alice")
    secret_name = "private-merger-plans"
    tunedeck_json(env, "data", "add", str(CAPITALS_CSV), "--name", secret_name)
    proc = subprocess.Popen(
        [sys.executable, "app.py", "--port", str(port)],
        cwd=PROJECT_ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                urllib.request.urlopen(url, timeout=2)
                break
            except OSError:
                assert time.monotonic() < deadline and proc.poll() is None
                time.sleep(0.5)
        with pytest.raises(Exception, match="(?i)credentials|login"):
            Client(url, verbose=False)
        # The login page a visitor sees gives nothing away: no dataset names, no API description.
        login_page = urllib.request.urlopen(url, timeout=10).read().decode()
        assert "auth_required" in login_page  # it is the login page
        assert secret_name not in login_page and "named_endpoints" not in login_page
        client = Client(url, auth=("alice", "s3cret-pass"), verbose=False)
        assert "run" in str(client.predict(api_name="/list_jobs"))
        assert secret_name in str(client.predict(api_name="/list_datasets"))  # logged in, it is all there
    finally:
        os.killpg(proc.pid, 15)
        proc.wait(20)


def test_a_merged_push_from_the_share_tab_runs_in_a_child_and_never_shows_the_token(run: dict) -> None:
    from types import SimpleNamespace

    from backend.core.store import Store
    from ui import share_tab

    token = "hf_TuneDeckTestSecret0123456789"
    paths = Paths.from_env(run["root"])
    ctx = SimpleNamespace(paths=paths, store=Store(paths.db))
    message = share_tab.push_to_hub(run["job"]["id"], "someone/capitals", token, True, ctx)
    assert "Upload to someone/capitals failed" in message and token not in message
    assert "not a Hub repository name" in share_tab.push_to_hub(
        run["job"]["id"], "no-slash", token, True, ctx
    )
