"""The app published under a path of a shared host (https://intranet.hospital.example/cxr/), by a reverse
proxy's X-Forwarded-Prefix (nginx: `location /cxr/ { proxy_pass http://app:8000/; ... }`) or gunicorn's
SCRIPT_NAME: every address it hands the browser stays under that path (docs/deployment.md, "Under a path").
The browser journey under a real nginx is tests/e2e/test_under_a_path.py."""

from __future__ import annotations

import pytest

from webapp import create_app
from webapp.config import TestingConfig


@pytest.mark.parametrize("trusted, expected", [(1, "/cxr/auth/login?next=/screen"), (0, "/auth/login?next=/screen")])
def test_the_proxys_prefix_is_taken_from_a_trusted_proxy_only(tmp_path, trusted, expected):
    """Found behind nginx with `proxy_set_header X-Forwarded-Prefix /cxr;` and TRUSTED_PROXIES=1: the
    sign-in redirect, the stylesheet and every link went to the host's root (https://intranet/screen),
    where another application, or nothing, answers."""
    app = create_app(TestingConfig, {"INSTANCE_DIR": tmp_path, "TRUSTED_PROXIES": trusted})
    client = app.test_client()
    answer = client.get("/screen", headers={"X-Forwarded-Prefix": "/cxr"})
    assert answer.status_code == 302 and answer.headers["Location"] == expected
    page = client.get("/auth/login", headers={"X-Forwarded-Prefix": "/cxr"}).get_data(as_text=True)
    assert f'href="{expected.removesuffix("/auth/login?next=/screen")}/static/app.css"' in page
