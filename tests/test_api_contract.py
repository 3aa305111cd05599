"""The API's published contract: the generated OpenAPI document, and inputs outside it refused cleanly.

The live fuzzing of the same contract is scripts/check_api_contract.py (Schemathesis, in .ci/run).
"""

import io
import json

import pytest
from openapi_spec_validator import validate

from tests.factories import add_prediction
from tests.helpers import fixture_image


def auth(token):
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def document(client, api_token):
    return client.get("/api/v1/openapi.json", headers=auth(api_token)).json


def test_document_is_valid_openapi(document):
    validate(document)  # raises on any violation of the OpenAPI 3.1 schema
    assert document["openapi"] == "3.1.0"
    assert document["servers"] == [{"url": "/api/v1", "description": "this server"}]
    assert document["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"


def test_every_operation_declares_auth_rate_limit_and_error_body(document):
    operations = [
        (path, method, op)
        for path, item in document["paths"].items()
        for method, op in item.items()
        if method != "parameters"
    ]
    assert {(path, method) for path, method, _ in operations} == {
        ("/predictions", "post"),
        ("/predictions", "get"),
        ("/predictions/{id}", "get"),
        ("/openapi.json", "get"),
        ("/audit-events", "get"),
        ("/tokens", "get"),
        ("/tokens/{id}", "delete"),
        ("/validation-runs", "post"),
        ("/validation-runs/{run_id}", "get"),
        ("/site-calibration", "post"),
        ("/site-calibration", "get"),
        ("/site-calibration", "delete"),
        ("/monitoring", "get"),
    }
    error_ref = {"$ref": "#/components/schemas/Error"}
    for _, _, op in operations:
        assert {"401", "414", "429", "431", "500"} <= set(op["responses"]) and "default" not in op["responses"]
        assert op["operationId"] and op["summary"]
    responses = document["components"]["responses"]
    assert responses["TOO_MANY_REQUESTS"]["headers"]["Retry-After"]["required"] is True
    assert responses["UNAUTHORIZED"]["content"]["application/json"]["schema"] == error_ref
    assert document["components"]["schemas"]["Error"]["required"] == ["error"]


def test_served_document_follows_a_path_prefix(client, api_token):
    document = client.get(
        "/api/v1/openapi.json", headers=auth(api_token), environ_overrides={"SCRIPT_NAME": "/screen"}
    ).json
    assert document["servers"][0]["url"] == "/screen/api/v1"


def test_document_response_schemas_match_what_is_served(app, client, admin_token, clinician_user, document):
    # The schemas serialise the answers, so a documented required field cannot go missing.
    with app.app_context():
        prediction_id = add_prediction(clinician_user, "PNEUMONIA", feedback="PNEUMONIA")
    item = client.get(f"/api/v1/predictions/{prediction_id}", headers=auth(admin_token)).json
    schema = document["components"]["schemas"]["Prediction"]
    assert set(schema["required"]) <= set(item) <= set(schema["properties"])
    assert item["feedback"]["label"] == "PNEUMONIA" and item["feedback"]["by"] == "clin"


@pytest.mark.parametrize(
    "query",
    [
        "page=42097424304987311862506848256",
        "page=0",
        "page=-1",
        "page=1.5",
        "page=abc",
        "per_page=null",
        "per_page=",
        "per_page=201",
        "verdict=MAYBE",
        "verdict=",
        "reviewed=perhaps",
        "date_from=2026-02-30",
        "date_to=tomorrow",
        "user=" + "u" * 65,
        "user=a%00b",
        "model_version=%1b[31m",
    ],
)
def test_out_of_contract_query_is_400_with_the_error_body(client, admin_token, query):
    response = client.get(f"/api/v1/predictions?{query}", headers=auth(admin_token))
    assert response.status_code == 400
    assert response.json["error"]["code"] == "invalid_filter"
    name = query.split("=")[0]
    assert response.json["error"]["message"].startswith(f"{name}: ")


def test_extreme_but_valid_filters_answer_200(app, client, admin_token, clinician_user):
    with app.app_context():
        add_prediction(clinician_user)
    headers = auth(admin_token)
    for query in ("date_from=0001-01-01&date_to=9999-12-31", "page=2147483647&per_page=200", "user=nobody"):
        response = client.get(f"/api/v1/predictions?{query}", headers=headers)
        assert response.status_code == 200, query
    assert client.get("/api/v1/predictions?date_from=0001-01-01&date_to=9999-12-31", headers=headers).json["total"] == 1
    assert client.get("/api/v1/predictions?page=2147483647", headers=headers).json["predictions"] == []


def test_unknown_query_parameters_are_ignored(client, admin_token):
    assert client.get("/api/v1/predictions?_=1234", headers=auth(admin_token)).status_code == 200


@pytest.mark.parametrize("raw_id", ["9" * 36, "9223372036854775808", "2147483648", "0", "-1", "abc", "1.0"])
def test_ids_outside_the_declared_range_are_404_json(client, api_token, raw_id):
    response = client.get(f"/api/v1/predictions/{raw_id}", headers=auth(api_token))
    assert response.status_code == 404 and response.json["error"]["code"] == "not_found"


def test_largest_declared_id_is_a_plain_404(client, api_token):
    # 2^31 - 1: the largest id the database column holds (32-bit on PostgreSQL).
    response = client.get("/api/v1/predictions/2147483647", headers=auth(api_token))
    assert response.status_code == 404 and response.json["error"]["message"] == "No prediction 2147483647."


@pytest.mark.parametrize("method", ["TRACE", "PUT", "PATCH", "DELETE"])
@pytest.mark.parametrize(
    ("path", "allowed"),
    [
        ("/api/v1/predictions", {"GET", "HEAD", "OPTIONS", "POST"}),
        ("/api/v1/predictions/1", {"GET", "HEAD", "OPTIONS"}),
        ("/api/v1/openapi.json", {"GET", "HEAD", "OPTIONS"}),
    ],
)
def test_undeclared_methods_are_405_with_allow(client, method, path, allowed):
    response = client.open(path, method=method)
    assert response.status_code == 405
    assert set(response.headers["Allow"].split(", ")) == allowed
    assert response.json["error"]["code"] == "method_not_allowed"


def test_file_sent_as_a_plain_form_field_is_no_file(client, api_token):
    response = client.post("/api/v1/predictions", headers=auth(api_token), data={"file": "not a file part"})
    assert response.status_code == 400 and response.json["error"]["code"] == "no_file"


def test_other_form_parts_are_ignored(client, api_token):
    response = client.post(
        "/api/v1/predictions",
        headers=auth(api_token),
        data={"file": (io.BytesIO(fixture_image("normal.jpeg")), "n.jpeg"), "note": "x"},
        content_type="multipart/form-data",
    )
    assert response.status_code == 201


def test_partial_batch_items_follow_their_schemas(client, api_token, document):
    response = client.post(
        "/api/v1/predictions",
        headers=auth(api_token),
        data={"file": [(io.BytesIO(fixture_image("normal.jpeg")), "n.jpeg"), (io.BytesIO(b"GIF89a"), "x.gif")]},
        content_type="multipart/form-data",
    )
    assert response.status_code == 207
    ok, refused = response.json["predictions"]
    schemas = document["components"]["schemas"]
    assert set(schemas["Prediction"]["required"]) <= set(ok)
    assert set(refused) == set(schemas["RejectedFile"]["required"]) == {"filename", "status", "error"}


def test_offline_document_matches_the_served_one(runner, document):
    # `flask openapi print` (flask-smorest) gives the same contract without a server or a token.
    result = runner.invoke(args=["openapi", "print"])
    assert result.exit_code == 0
    offline = json.loads(result.output)
    assert offline["paths"] == document["paths"] and offline["components"] == document["components"]
