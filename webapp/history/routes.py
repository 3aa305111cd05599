from flask import current_app, render_template, request
from flask_login import current_user

from ..extensions import db
from ..models import record_audit
from ..params import page_of
from . import bp
from .filters import HistoryFilterForm, filter_args, filtered_predictions, filters_text


def render_history(owner, title: str, endpoint: str, show_user: bool, audited: bool = False):
    """`audited`: the page lists other people's patients (the administrators' history), so each page
    read is in the audit trail, as each page of GET /api/v1/predictions is."""
    form = HistoryFilterForm(request.args)
    valid = form.validate()
    # Invalid filters: the page explains them (400) and lists unfiltered rows meanwhile.
    applied = form if valid else HistoryFilterForm(formdata=None)
    page = page_of(filtered_predictions(applied, owner), current_app.config["HISTORY_PAGE_SIZE"])
    if audited:
        shown = filters_text(applied)
        record_audit(current_user.username, "history_viewed", f"{len(page.items)} rows", f"{shown}; page={page.page}")
        db.session.commit()
    return render_template(
        "history/list.html",
        form=form,
        page=page,
        title=title,
        endpoint=endpoint,
        args=filter_args(applied),
        show_user=show_user,
    ), 200 if valid else 400


@bp.route("/")
def mine():
    return render_history(current_user, "My predictions", "history.mine", show_user=False)
