"""Numbers and dates from URLs and query strings, range-checked: a bad value is a 400, never a 500.

Python integers have no upper bound but the database's do: a 20-digit id overflows SQLite's
64-bit integers and PostgreSQL's `integer`.
"""

from __future__ import annotations

import re

from flask import request
from flask_sqlalchemy.pagination import Pagination
from sqlalchemy import Select, select
from werkzeug.exceptions import BadRequest
from werkzeug.routing import IntegerConverter

from .extensions import db

# The `Integer` columns are 32-bit on PostgreSQL.
MAX_ID = 2**31 - 1
MAX_PAGE = 1_000_000
_WHOLE_NUMBER = re.compile(r"[0-9]{1,12}")  # ASCII only: str.isdigit() also accepts "²"


class BoundedIntConverter(IntegerConverter):
    """`<int:...>` in every route: ids beyond what a database column holds answer 400."""

    def to_python(self, value: str) -> int:
        number = super().to_python(value)
        if number > MAX_ID:
            # Raised during URL matching, Flask answers with this exception (a ValidationError would be a 404).
            raise BadRequest(f"The number {value[:24]} is out of range.")
        return number


def row_by_id(model, row_id: int):
    """The row of `model` with id `row_id`, or None: an id beyond the 32-bit column names no row (and
    PostgreSQL would fail the query rather than answer none)."""
    return db.session.get(model, row_id) if 0 < row_id <= MAX_ID else None


def int_arg(name: str, default: int, low: int, high: int) -> int:
    """Query argument `name` as an int in [low, high]; missing or empty gives `default`."""
    raw = request.args.get(name, "").strip()
    if not raw:
        return default
    if not _WHOLE_NUMBER.fullmatch(raw) or not low <= int(raw) <= high:
        raise BadRequest(f"'{name}' must be a whole number from {low} to {high}.")
    return int(raw)


def int_args(name: str, high: int = MAX_ID) -> list[int]:
    """Every value of a repeated query argument (e.g. ?id=1&id=2), each checked like `int_arg`."""
    values = []
    for raw in request.args.getlist(name):
        if not _WHOLE_NUMBER.fullmatch(raw) or not 1 <= int(raw) <= high:
            raise BadRequest(f"'{name}' must be a whole number from 1 to {high}.")
        values.append(int(raw))
    return values


def paginate(query: Select, page: int, per_page: int) -> Pagination:
    """One page of `query`, a select of one mapped class with an `id`, found by its ids first.

    Sorting and skipping rows then read only the ids and the sort keys, never whole rows: when the
    images were still in the predictions table (before migration 0010), a deep page of a filtered
    history sorted every candidate row's image chain (22 s for a clinician's last page among 10,000
    predictions); rows are small now, and the sort still carries no more than it needs. Only the
    rows of the page are loaded.
    """
    entity = query.column_descriptions[0]["entity"]
    found = db.paginate(query.with_only_columns(entity.id), page=page, per_page=per_page, error_out=False)
    if found.items:
        rows = {row.id: row for row in db.session.scalars(select(entity).where(entity.id.in_(found.items)))}
        found.items = [rows[key] for key in found.items]
    return found


def page_of(query: Select, per_page: int) -> Pagination:
    """The page the `page` argument asks for; past the last one, the last one (an old link or a
    narrower filter must not show an empty table under a count of rows it does not list)."""
    page = paginate(query, int_arg("page", 1, 1, MAX_PAGE), per_page)
    if not page.items and page.total:
        page = paginate(query, page.pages, per_page)
    return page
