"""The admin's list pages on a database of many predictions: monitoring, history, CSV export.

    python benchmarks/list_pages.py seed DATABASE_URL [--films 10000]
    python benchmarks/list_pages.py time DATABASE_URL [--repeats 5]

`seed` migrates an empty database and writes an admin (password ADMIN_PASSWORD) and the films, a
prediction every 12 minutes back from now for the model version in service, each with a random
review copy of 30-60 KB and a 4.3 KB heat map (random bytes: PNGs barely compress further, and the
database stores them as they come). `time` signs the admin in with Flask's test client and prints
the median, fastest and slowest of `--repeats` requests to each page.

Run as a file, not a module, so that PYTHONPATH can name another checkout: its app and migrations
are then the ones measured. Images go where that checkout's schema keeps them: in their own table
(migration 0010 on), else in the predictions row.
"""

from __future__ import annotations

import argparse
import os
import random
import re
import statistics
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from flask_migrate import upgrade
from sqlalchemy import insert, inspect

from webapp import create_app
from webapp.config import TestingConfig
from webapp.extensions import db
from webapp.models import Prediction, User
from webapp.validation.site import current_model_version

ADMIN_PASSWORD = "admin-password-1"
PAGES = ("/admin/validation/monitoring", "/admin/history", "/admin/history?page=150", "/admin/history.csv")
BATCH = 500


def film(number: int, version: str, user_id: int, now: datetime, rnd: random.Random) -> dict:
    label = rnd.choice(["NORMAL", "PNEUMONIA", "UNKNOWN"])
    p = rnd.random()
    return {
        "id": number,
        "created_at": now - timedelta(minutes=12 * number),
        "user_id": user_id,
        "source": "upload",
        "filename": f"upload-{number}-1.jpeg",
        "sha256": f"{number:064x}",
        "image_format": "JPEG",
        "file_size": 200_000,
        "width": 2000,
        "height": 1600,
        "label": label,
        "p_normal": 1 - p,
        "p_pneumonia": p,
        "threshold": 0.5,
        "model_version": version,
        "unknown_reason": "not a chest radiograph" if label == "UNKNOWN" else None,
        "latency_ms": 30.0,
        "chest_probability": rnd.random(),
        "feature_distance": rnd.random() * 10,
        "facts": {},
    }


def seed(films: int) -> None:
    upgrade()
    admin = User(username="admin", role="admin")
    admin.set_password(ADMIN_PASSWORD)
    db.session.add(admin)
    db.session.commit()
    version, now, rnd = current_model_version(), datetime.now(UTC), random.Random(1)
    own_table = "prediction_images" in inspect(db.engine).get_table_names()
    for start in range(1, films + 1, BATCH):
        rows, images = [], []
        for number in range(start, min(films, start + BATCH - 1) + 1):
            row = film(number, version, admin.id, now, rnd)
            stored = {"review_png": os.urandom(rnd.randint(30_000, 60_000)), "heatmap_png": os.urandom(4300)}
            if own_table:
                images.append({"prediction_id": number, **stored})
            else:
                row |= stored
            rows.append(row)
        db.session.execute(insert(Prediction.__table__), rows)
        if images:
            db.session.execute(insert(db.metadata.tables["prediction_images"]), images)
        db.session.commit()
    print(f"{films} predictions of {version}, images in {'prediction_images' if own_table else 'predictions'}")


def time_pages(app, repeats: int) -> None:
    client = app.test_client()
    page = client.get("/auth/login").get_data(as_text=True)
    csrf = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', page).group(1)
    signed_in = client.post("/auth/login", data={"username": "admin", "password": ADMIN_PASSWORD, "csrf_token": csrf})
    if signed_in.status_code not in (302, 303):
        raise SystemExit(f"sign-in failed ({signed_in.status_code}): seed this database first")
    for path in PAGES:
        times = []
        for _ in range(repeats):
            started = time.perf_counter()
            response = client.get(path)
            times.append((time.perf_counter() - started) * 1000)
            if response.status_code != 200:
                raise SystemExit(f"{path}: {response.status_code}")
        print(f"{path:32} median {statistics.median(times):7.1f} ms, {min(times):7.1f}-{max(times):7.1f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=("seed", "time"))
    parser.add_argument("database_url")
    parser.add_argument("--films", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    instance = Path(tempfile.mkdtemp(prefix="list-pages-"))  # the app's secret key and logs, not the data
    # Rate limits off: the benchmark asks for the same pages back to back.
    app = create_app(
        TestingConfig,
        {"SQLALCHEMY_DATABASE_URI": args.database_url, "INSTANCE_DIR": instance, "RATE_LIMITS_ENABLED": False},
    )
    with app.app_context():
        if args.action == "seed":
            seed(args.films)
        else:
            time_pages(app, args.repeats)


if __name__ == "__main__":
    main()
