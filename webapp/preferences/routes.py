from flask import flash, redirect, request, url_for
from flask_login import current_user

from ..extensions import db
from ..responses import form_errors, safe_next
from ..security import referring_page
from . import bp
from .forms import ThemeForm


@bp.app_context_processor
def theme_form():
    # Every page's header carries the theme switch.
    return {"theme_form": ThemeForm}


@bp.app_template_global()
def theme_switch_back() -> str:
    """Where the theme switch brings the reader back to: this page. A page that answers a form is at
    the form's address, which may take no GET (the new API token's page, /admin/users/N/tokens, came
    back as a 405 page after Apply): then the page the form was on, else the upload page."""
    if request.method in ("GET", "HEAD"):
        return request.full_path if request.query_string else request.path
    return referring_page() or url_for("screening.upload")


@bp.route("/theme", methods=["POST"])
def theme():
    form = ThemeForm()
    if not form.validate_on_submit():
        flash("The theme was not changed: " + form_errors(form), "error")
    else:
        current_user.theme = form.theme.data
        db.session.commit()
    return redirect(safe_next(form.back.data), code=303)
