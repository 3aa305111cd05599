from flask import flash, redirect
from flask_login import current_user

from ..extensions import db
from ..responses import form_errors, safe_next
from . import bp
from .forms import ThemeForm


@bp.app_context_processor
def theme_form():
    # Every page's header carries the theme switch.
    return {"theme_form": ThemeForm}


@bp.route("/theme", methods=["POST"])
def theme():
    form = ThemeForm()
    if not form.validate_on_submit():
        flash("The theme was not changed: " + form_errors(form), "error")
    else:
        current_user.theme = form.theme.data
        db.session.commit()
    return redirect(safe_next(form.back.data), code=303)
