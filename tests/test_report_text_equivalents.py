"""The validation report's charts have their data in text for a screen reader (WCAG 1.1.1)."""

from __future__ import annotations

import io
import re

from tests.archives import labelled_films, zip_bytes
from tests.helpers import drain


def test_the_reliability_diagram_has_its_bins_as_a_table(app, client, auth, admin_user, admin_token):
    """The diagram is an SVG with role="img": a screen reader reads its heading and nothing of the
    dots (their <title> is inside the image). Each dot is now a row of a table, from the same rows."""
    response = client.post(
        "/api/v1/validation-runs",
        headers={"Authorization": f"Bearer {admin_token}"},
        data={"archive": (io.BytesIO(zip_bytes(labelled_films(copies=2))), "site.zip")},
    )
    assert response.status_code == 202
    drain(app)
    auth.login("admin")
    html = client.get(f"/admin/validation/{response.get_json()['id']}").get_data(as_text=True)

    diagram = re.search(r'<svg[^>]*aria-labelledby="reliability-title".*?</svg>', html, re.S).group(0)
    dots = re.findall(r"<title>(\d+) films: predicted ([\d.]+), observed ([\d.]+)</title>", diagram)
    table = re.search(r'<table[^>]*id="reliability-bins".*?</table>', html, re.S)
    assert table, "no table of the reliability bins"
    rows = re.findall(
        r'<tr><th scope="row">([\d.]+)</th><td>([\d.]+)</td><td>(\d+)</td></tr>', table.group(0).split("<tbody>")[1]
    )
    assert len(dots) >= 2  # the fixture films fall in more than one bin
    assert [(n, predicted, observed) for predicted, observed, n in rows] == dots
