"""A model that failed to load is loaded again once its file is repaired, in the web app and the job
worker, without a restart; not while the file stays as it was. The loader is replaced by a stand-in
that reads the file, so no test here loads TensorFlow."""

from __future__ import annotations

import pytest

from tests.helpers import AuthActions, app_with_model_file, make_user, reset_database
from webapp.extensions import db

GOOD = b"a model"


class StandIn:
    """Loads like the Analyzer as far as the files go: a model missing or not one, or no card, fails."""

    loads: list[str]

    def __init__(self, model_path, max_batch=8, batch_window_ms=0.0):
        StandIn.loads.append(str(model_path))
        if model_path.read_bytes() != GOOD:
            raise ValueError("not a Keras file")
        if not (model_path.parent / "model_card.json").is_file():
            raise FileNotFoundError("no model card")
        self.model_version = "v-restored"


@pytest.fixture
def loader(monkeypatch):
    StandIn.loads = []
    monkeypatch.setattr("webapp.inference.analyzer.Analyzer", StandIn)
    return StandIn.loads


def broken_app(tmp_path, content):
    app = app_with_model_file(tmp_path, content)
    with app.app_context():
        reset_database()
    return app, tmp_path / "cxr_pneumonia.keras"


@pytest.mark.parametrize("content", [None, b"cut short"])
def test_a_repaired_model_file_is_loaded_without_a_restart(tmp_path, loader, content):
    """Found by the resource-failure review (live gunicorn, MODEL_PATH missing, the file then copied
    back): /readyz and every upload stayed 503 until gunicorn and the worker were restarted."""
    app, model = broken_app(tmp_path, content)
    client = app.test_client()
    for _ in range(3):
        assert client.get("/readyz").status_code == 503
    assert len(loader) == 1  # no load per probe while the file is as it was
    model.write_bytes(GOOD)
    (tmp_path / "model_card.json").write_text("{}")
    response = client.get("/readyz")
    assert response.status_code == 200 and response.json["model_version"] == "v-restored"
    client.get("/readyz")
    assert len(loader) == 2  # loaded once, then kept


def test_a_model_card_put_back_is_loaded(tmp_path, loader):
    app, model = broken_app(tmp_path, GOOD)
    client = app.test_client()
    assert client.get("/readyz").status_code == 503  # no card beside the file
    (tmp_path / "model_card.json").write_text("{}")
    assert client.get("/readyz").status_code == 200


def test_the_job_worker_waits_for_a_repaired_model(app, runner, monkeypatch, loader, caplog):
    """The worker exited when the model would not load (under ./scripts/run.sh taking gunicorn with it)."""
    model = app.config["MODEL_PATH"] = app.config["INSTANCE_DIR"] / "cxr_pneumonia.keras"
    slept = []

    def sleep(seconds):
        slept.append(seconds)
        if len(slept) == 3:
            model.write_bytes(GOOD)
            model.with_name("model_card.json").write_text("{}")

    class Consumer:
        def run(self):
            pass

    monkeypatch.setattr("webapp.jobs.cli.time.sleep", sleep)
    monkeypatch.setattr("webapp.jobs.cli.install_process_logging", lambda *filters: None)
    monkeypatch.setattr("webapp.jobs.cli.yield_cpu", lambda *args: None)
    monkeypatch.setattr("huey.api.Huey.create_consumer", lambda self, **options: Consumer())
    monkeypatch.setattr("webapp.jobs.cli.exit_at_once", lambda: None)  # would end the test process
    with caplog.at_level("INFO", logger="webapp.jobs.cli"):
        result = runner.invoke(args=["jobs", "worker"])
    assert result.exit_code == 0, result.output
    assert len(slept) == 3 and len(loader) == 2  # looked at three times, loaded once the file changed
    messages = [r.getMessage() for r in caplog.records]
    assert sum("no job is taken" in m for m in messages) == 1
    assert any(m.startswith("jobs worker ready") for m in messages)
    with app.app_context():
        db.session.remove()


def test_the_upload_page_says_up_front_that_screening_is_unavailable(tmp_path, loader):
    """Found by the resource-failure review: with the model unloadable, the upload page said nothing;
    a clinician chose and uploaded films and only then read that screening was unavailable."""
    app, model = broken_app(tmp_path, b"cut short")
    make_user(app, "clin", "clinician")
    client = app.test_client()
    AuthActions(client).login()
    assert "screening-unavailable" not in client.get("/screen").get_data(as_text=True)
    assert loader == []  # the page loads no model: gunicorn's post_worker_init does, or the first upload
    client.get("/readyz")  # the load, as at a worker's start
    page = client.get("/screen").get_data(as_text=True)
    assert "Screening is not available on this server right now" in page and "Please tell IT." in page
    assert str(model) not in page and "Keras" not in page  # the cause is for the admin, on /readyz
    assert len(loader) == 1
    model.write_bytes(GOOD)
    (tmp_path / "model_card.json").write_text("{}")
    assert "screening-unavailable" not in client.get("/screen").get_data(as_text=True)
    assert len(loader) == 1  # the next request that needs the model loads it


def test_the_job_worker_is_seen_while_it_loads_the_model(app, runner, monkeypatch):
    """Found by the resource-failure review (gunicorn, one job queued, then `flask jobs worker`): /readyz
    warned "no job worker ... never seen ... start `flask --app wsgi jobs worker`" for the whole load
    (8 s on an idle 2-core machine, over a minute on a busy one), with the worker starting."""
    from webapp.jobs.queue import enqueue, jobs

    said_while_loading = []

    def load(config):
        said_while_loading.append(jobs().silent_worker())

    class Consumer:
        def run(self):
            pass

    with app.app_context():
        enqueue("dicom.screen", 999999)
        assert "never seen" in jobs().silent_worker()
    monkeypatch.setattr("webapp.jobs.cli.analyzer_for", load)
    monkeypatch.setattr("webapp.jobs.cli.install_process_logging", lambda *filters: None)
    monkeypatch.setattr("webapp.jobs.cli.yield_cpu", lambda *args: None)
    monkeypatch.setattr("huey.api.Huey.create_consumer", lambda self, **options: Consumer())
    monkeypatch.setattr("webapp.jobs.cli.exit_at_once", lambda: None)  # would end the test process
    result = runner.invoke(args=["jobs", "worker"])
    assert result.exit_code == 0, result.output
    assert said_while_loading == [None]
