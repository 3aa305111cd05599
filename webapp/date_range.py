"""A filter's days (`date_from`, `date_to`, both inclusive) must not run backwards.

The days are the display zone's on the pages (webapp/local_time.py) and UTC in the API.

A range whose first day comes after its last matches nothing, and the history said only "No
predictions match these filters", as if there were none. One rule for the history and audit filters,
on their pages (the forms) and in the API (the query schemas), each naming the fields as its users
know them.
"""

from __future__ import annotations

from datetime import date

from wtforms import Field, Form, ValidationError


def backwards(date_from: date | None, date_to: date | None, first: str, last: str) -> str | None:
    """Why the range is refused, or None (either end may be missing)."""
    if date_from and date_to and date_from > date_to:
        return (
            f"{first} ({date_from.isoformat()}) is after {last} ({date_to.isoformat()}), so no day can match: "
            "swap the two dates."
        )
    return None


def not_before_date_from(form: Form, field: Field) -> None:
    """The `date_to` field's validator on a filter form with a `date_from` field."""
    message = backwards(form.date_from.data, field.data, f"'{form.date_from.label.text}'", f"'{field.label.text}'")
    if message:
        raise ValidationError(message)
