import pytest

from tests.helpers import app_with_model_file


def test_healthz(client):
    assert client.get("/healthz").json == {"status": "ok"}


def test_readyz_with_model_and_database(client):
    response = client.get("/readyz")
    assert response.status_code == 200
    assert response.json["status"] == "ready" and response.json["model_version"]


@pytest.mark.parametrize("content", [None, b"this is not a keras file"])
def test_readyz_503_when_model_missing_or_corrupt(tmp_path, content, caplog):
    app = app_with_model_file(tmp_path, content)
    client = app.test_client()
    for _ in range(3):
        response = client.get("/readyz")
        assert response.status_code == 503
        assert "model could not be loaded" in response.json["reasons"][0]
    errors = [r for r in caplog.records if r.levelname == "ERROR" and "model could not be loaded" in r.getMessage()]
    assert len(errors) == 1  # one clear error, not one per probe
    assert client.get("/healthz").status_code == 200
