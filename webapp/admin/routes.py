from flask import Response, flash, redirect, render_template, request, url_for
from flask_login import current_user
from sqlalchemy import select

from ..auth.sessions import end_all_access
from ..extensions import db
from ..history.filters import HistoryFilterForm, filtered_predictions
from ..history.routes import render_history
from ..models import AuditEvent, User, record_audit, utcnow
from ..responses import form_errors
from . import bp
from .export import predictions_csv
from .forms import CreateUserForm, ResetPasswordForm, ToggleActiveForm
from .summary import agreement_per_version, verdicts_per_day


@bp.route("/history")
def history():
    return render_history(None, "Prediction history", "admin.history", show_user=True)


@bp.route("/history.csv")
def export_csv():
    form = HistoryFilterForm(request.args)
    if not form.validate():
        flash("The export filters are not valid: " + form_errors(form), "error")
        return redirect(url_for("admin.history"))
    predictions = db.session.scalars(filtered_predictions(form)).all()
    filters = ", ".join(f"{k}={v}" for k, v in request.args.items() if v) or "none"
    record_audit(current_user.username, "history.export_csv", f"{len(predictions)} rows", f"filters: {filters}")
    db.session.commit()
    stamp = utcnow().strftime("%Y%m%d-%H%M%S")
    return Response(
        predictions_csv(predictions),
        mimetype="text/csv",
        headers={"Content-Disposition": f'attachment; filename="predictions-{stamp}.csv"'},
    )


@bp.route("/summary")
def summary():
    return render_template("admin/summary.html", per_day=verdicts_per_day(), agreement=agreement_per_version())


@bp.route("/users", methods=["GET", "POST"])
def users():
    form = CreateUserForm()
    if form.validate_on_submit():
        if User.by_username(form.username.data):
            form.username.errors.append("That username is taken.")
        else:
            # The administrator knows this password: its owner replaces it at first sign-in.
            user = User(username=form.username.data, role=form.role.data, must_change_password=True)
            user.set_password(form.password.data)
            db.session.add(user)
            record_audit(current_user.username, "user_created", user.username, f"role={user.role}")
            db.session.commit()
            flash(f"User {user.username} created.", "info")
            return redirect(url_for("admin.users"), code=303)
    all_users = db.session.scalars(select(User).order_by(User.username)).all()
    return render_template(
        "admin/users.html", form=form, users=all_users, reset_form=ResetPasswordForm(), toggle_form=ToggleActiveForm()
    ), 400 if form.errors else 200


@bp.route("/users/<int:user_id>/active", methods=["POST"])
def toggle_active(user_id: int):
    user = db.get_or_404(User, user_id)
    if ToggleActiveForm().validate_on_submit():
        if user.id == current_user.id:
            flash("You cannot deactivate your own account.", "error")
        else:
            user.active = not user.active
            if not user.active:
                end_all_access(user)
            record_audit(current_user.username, "user_activated" if user.active else "user_deactivated", user.username)
            db.session.commit()
            flash(f"User {user.username} is now {'active' if user.active else 'deactivated'}.", "info")
    return redirect(url_for("admin.users"), code=303)


@bp.route("/users/<int:user_id>/password", methods=["POST"])
def reset_password(user_id: int):
    user = db.get_or_404(User, user_id)
    form = ResetPasswordForm()
    if user.from_directory:
        flash(f"{user.username} signs in through the staff directory: reset the password there.", "error")
    elif form.validate_on_submit():
        user.set_password(form.password.data)
        user.must_change_password = True
        end_all_access(user)
        record_audit(current_user.username, "password_reset", user.username)
        db.session.commit()
        flash(f"Password of {user.username} reset; they choose their own at their next sign-in.", "info")
    else:
        flash("Password not reset: " + form_errors(form), "error")
    return redirect(url_for("admin.users"), code=303)


@bp.route("/audit")
def audit():
    page = db.paginate(
        select(AuditEvent).order_by(AuditEvent.created_at.desc(), AuditEvent.id.desc()), per_page=50, error_out=False
    )
    return render_template("admin/audit.html", page=page)
