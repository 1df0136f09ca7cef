"""Datasets kept safely: rename, delete (refused while a job uses it), export, the CLI, the Data tab's handlers,
and a database from before dataset hashes had a column (schema 1) still opening with its datasets."""

from __future__ import annotations

import json
import sqlite3
import subprocess
from contextlib import closing

import pytest

from backend.core.status import JobStatus
from backend.core.store import Store
from backend.data.datasets import DataError, delete_dataset, import_dataset, load_examples, rename_dataset
from backend.settings import CAPITALS_CSV
from tests import cli_util

QA = "question,answer\nWhat is 1+1?,Two.\nWhat is 2+2?,Four.\n"


def _job(store: Store, job_id: str, dataset_id: str) -> None:
    store.add_job(job_id, dataset_id, "tiny-offline", {"base_model": "tiny-offline"}, f"/jobs/{job_id}")


def test_rename_keeps_the_version_and_refuses_a_taken_name(store, paths, csv_file):
    a, _ = import_dataset(store, paths, csv_file(QA), name="first")
    import_dataset(store, paths, CAPITALS_CSV)
    renamed = rename_dataset(store, "first", "My better name!")
    assert (renamed.id, renamed.name, renamed.path) == (a.id, "My-better-name", a.path)
    assert store.get_dataset("first") is None
    with pytest.raises(
        DataError, match="A dataset named 'capitals' already exists. Fix: choose another name."
    ):
        rename_dataset(store, a.id, "capitals")
    with pytest.raises(DataError, match="There is no dataset 'nope'. Existing datasets: "):
        rename_dataset(store, "nope", "x")


@pytest.mark.parametrize("job_status", [JobStatus.QUEUED, JobStatus.RUNNING])
def test_delete_is_refused_while_a_queued_or_running_job_uses_it(store, paths, job_status, status):
    record, _ = import_dataset(store, paths, CAPITALS_CSV)
    _job(store, "run-1", record.id)
    if job_status is JobStatus.RUNNING:
        status.set("run-1", JobStatus.RUNNING, pid=1)
    with pytest.raises(DataError) as info:
        delete_dataset(store, paths, "capitals")
    assert str(info.value) == (
        "The dataset 'capitals' is used by a job that is queued or running (run-1), so it was not deleted. "
        "Fix: wait for the job to finish, or cancel it, then delete the dataset."
    )
    assert store.get_dataset(record.id) == record
    assert (paths.datasets / record.id / "data.parquet").is_file()


def test_delete_removes_record_and_folder_and_jobs_keep_the_version_id(store, paths, status):
    record, _ = import_dataset(store, paths, CAPITALS_CSV)
    _job(store, "run-1", record.id)
    status.set("run-1", JobStatus.RUNNING, pid=1)
    status.set("run-1", JobStatus.SUCCEEDED)
    deleted = delete_dataset(store, paths, record.id)
    assert deleted.id == record.id
    assert store.list_datasets() == []
    assert list(paths.datasets.iterdir()) == [] and list(paths.tmp.iterdir()) == []
    assert store.get_job("run-1").dataset_id == record.id  # the job still says which version it trained on


def test_versions_are_immutable_and_identified_by_content(store, paths, csv_file):
    a, _ = import_dataset(store, paths, csv_file(QA), name="a")
    b, _ = import_dataset(store, paths, csv_file(QA), name="b")
    assert a.id != b.id and a.info["sha256"] == b.info["sha256"]
    assert [d.id for d in store.datasets_with_hash(a.info["sha256"])] == [a.id, b.id]
    delete_dataset(store, paths, "a")
    assert load_examples(b)["response"].tolist() == ["Two.", "Four."]


def test_an_old_database_gains_the_hash_column(paths):
    Store(paths.db)
    with closing(sqlite3.connect(paths.db)) as c, c:  # make it look like schema 1, with one dataset
        c.execute("DROP INDEX datasets_sha256")
        c.execute("ALTER TABLE datasets DROP COLUMN sha256")
        c.execute(
            "INSERT INTO datasets VALUES ('ds-old', 'old', 1.0, 'old.csv', '/x/data.parquet', 3, ?)",
            (json.dumps({"sha256": "abc", "mapping": {}}),),
        )
        c.execute("UPDATE meta SET value='1' WHERE key='schema_version'")
    store = Store(paths.db)
    assert [d.id for d in store.datasets_with_hash("abc")] == ["ds-old"]
    assert store.get_dataset("old").info["sha256"] == "abc"


# -- the command line --------------------------------------------------------------------------------------------


def tunedeck(paths, *args: str) -> subprocess.CompletedProcess:
    return cli_util.tunedeck(cli_util.offline_env(paths.home), *args, timeout=120)


def test_cli_add_with_mapping_flags_list_show_rename_export_rm(paths, csv_file, tmp_path, tiny_model):
    f = csv_file("Kundenfrage,Antwort,Notiz\nWo?,Hier.,x\nWann?,Jetzt.,y\n=1+1,Zwei.,z\n", "kunden.csv")
    res = tunedeck(
        paths,
        "data",
        "add",
        str(f),
        "--name",
        "kunden",
        "--prompt-col",
        "Kundenfrage",
        "--response-col",
        "Antwort",
        "--system-col",
        "none",
        "--json",
    )
    assert res.returncode == 0, res.stderr
    added = json.loads(res.stdout)
    assert added["mapping"] == {
        "prompt": "Kundenfrage",
        "response": "Antwort",
        "system": None,
        "context": None,
    }
    assert (added["rows"], added["shape"], added["report"]["rows_kept"]) == (3, "prompt_response", 3)

    listed = json.loads(tunedeck(paths, "data", "list", "--json").stdout)
    assert [d["name"] for d in listed] == ["kunden"]
    shown = tunedeck(paths, "data", "show", "kunden", "--model", "tiny-offline", "--json")
    assert shown.returncode == 0, shown.stderr
    detail = json.loads(shown.stdout)
    assert detail["tokens"]["train_rows"] == 3 and detail["examples"][0]["prompt"] == "Wo?"
    assert [s["text"] for s in detail["rendered_example"] if s["trained"]] == ["Hier.<|end|>\n"]
    text = tunedeck(paths, "data", "show", "kunden", "--model", "tiny-offline").stdout
    assert "[[Hier.<|end|>\n]]" in text and "3 of 3 rows kept." in text

    assert tunedeck(paths, "data", "rename", "kunden", "customers").returncode == 0
    out = tmp_path / "customers.csv"
    assert tunedeck(paths, "data", "export", "customers", str(out)).returncode == 0
    assert "'=1+1" in out.read_text(encoding="utf-8-sig")
    gone = tunedeck(paths, "data", "rm", "customers", "--json")
    assert gone.returncode == 0 and json.loads(gone.stdout)["name"] == "customers"
    assert json.loads(tunedeck(paths, "data", "list", "--json").stdout) == []


def test_cli_errors_name_file_and_row_and_register_nothing(paths, csv_file):
    f = csv_file("question,answer\nq1,a1\nq2,a2,extra\n", "ragged.csv")
    res = tunedeck(paths, "data", "add", str(f))
    assert res.returncode == 2
    assert res.stderr.startswith("error: ragged.csv: the rows do not line up with the header at row 3")
    assert json.loads(tunedeck(paths, "data", "list", "--json").stdout) == []
    missing = tunedeck(paths, "data", "rm", "nope")
    assert missing.returncode == 2 and "There is no dataset 'nope'" in missing.stderr


# -- the Data tab's handlers (plain functions) -------------------------------------------------------------------


@pytest.fixture
def ctx(store, paths, tiny_model):
    from ui.context import AppContext

    return AppContext(paths=paths, store=store, manager=None, models=None)  # type: ignore[arg-type]


def test_tab_preview_render_save_and_details(ctx, csv_file, tiny_model):
    from ui import data_tab

    f = str(
        csv_file(
            "Kundenfrage;Antwort vom Team\nWo ist <b>mein</b> Paket?;Unterwegs & bald da.\nWann?;Morgen.\n",
            "kunden.csv",
        )
    )
    out = data_tab.preview_file(f)
    assert "kunden.csv" in out[0] and "2 rows, 2 columns" in out[0]
    assert out[3]["value"] == "Kundenfrage" and out[4]["value"] == "Antwort vom Team"
    html = data_tab.render_example(
        f,
        None,
        "prompt_response",
        "Kundenfrage",
        "Antwort vom Team",
        "(none)",
        "(none)",
        None,
        None,
        "tiny-offline",
        2,
        "",
        ctx=ctx,
    )
    assert "Wo ist &lt;b&gt;mein&lt;/b&gt; Paket?" in html  # escaped, shown as text
    assert (
        '<span style="background:#c9f2d4;color:#0b3d1a;border-radius:3px" class="td-trained">Unterwegs &amp; '
        "bald da.&lt;|end|&gt;\n</span>" in html
    )
    message, table, choices, report = data_tab.save_dataset(
        f, "kunden", "Kundenfrage", "Antwort vom Team", ctx, shape="prompt_response", max_length=1024
    )
    assert "Saved dataset <b>kunden</b>" in message
    assert table["name"].tolist() == ["kunden"] and choices["value"] == "kunden"
    assert "2 of 2 rows kept." in report and "per epoch" in report
    details, example = data_tab.dataset_details("kunden", "tiny-offline", 1024, ctx)
    assert "kunden" in details and "td-histogram" in details and "td-trained" in example


def test_tab_save_shows_errors_and_delete_refusal(ctx, csv_file, store):
    from ui import data_tab

    bad = str(csv_file("question,answer\nq1?,\nq2?,\n", "empty.csv"))
    message, *_ = data_tab.save_dataset(bad, "x", "question", "answer", ctx)
    assert "td-error" in message and "every response (column &#x27;answer&#x27;) is empty" in message
    good = str(csv_file(QA, "qa.csv"))
    data_tab.save_dataset(good, "qa", None, None, ctx)
    _job(store, "run-9", store.get_dataset("qa").id)
    message, *_ = data_tab.delete("qa", ctx)
    assert "queued or running (run-9)" in message
    message, *_ = data_tab.rename("qa", "qa2", ctx)
    assert "Renamed <b>qa</b> to <b>qa2</b>" in message


@pytest.mark.slow
def test_data_actions_through_the_gradio_api(paths, tiny_model, csv_file, monkeypatch):
    """Every Data action is a named endpoint; /save_dataset still works with the first four arguments only."""
    from gradio_client import Client, handle_file

    import app as tunedeck_app
    from tests.browser_util import free_port

    monkeypatch.setenv("TUNEDECK_HOME", str(paths.home))
    blocks, ctx, stop = tunedeck_app.create()
    port = free_port()
    blocks.queue().launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    try:
        client = Client(f"http://127.0.0.1:{port}", verbose=False)
        names = set(client.view_api(print_info=False, return_format="dict")["named_endpoints"])
        for endpoint in (
            "/preview_file",
            "/render_example",
            "/change_shape",
            "/choose_sheet",
            "/save_dataset",
            "/list_datasets",
            "/dataset_details",
            "/rename_dataset",
            "/delete_dataset",
            "/download_dataset",
        ):
            assert endpoint in names
        f = handle_file(str(csv_file("Frage,Antwort\nWo?,Hier.\nWann?,Jetzt.\n", "faq.csv")))
        message, *_ = client.predict(f, api_name="/preview_file")
        assert "2 rows, 2 columns" in message and "prompt = <b>Frage</b>" in message
        saved = client.predict(f, "faq", "Frage", "Antwort", api_name="/save_dataset")
        assert "Saved dataset <b>faq</b>" in saved[0] and "per epoch" in saved[3]
        details, example = client.predict("faq", "tiny-offline", 512, api_name="/dataset_details")
        assert "2 of 2 rows kept." in details and "td-trained" in example
        renamed = client.predict("faq", "faq-v1", api_name="/rename_dataset")
        assert "Renamed <b>faq</b> to <b>faq-v1</b>" in renamed[0]
        deleted = client.predict("faq-v1", api_name="/delete_dataset")
        assert "Deleted dataset <b>faq-v1</b>" in deleted[0]
        assert ctx.store.list_datasets() == []
    finally:
        blocks.close()
        stop()
