import secrets

from flask import Response, current_app, flash, redirect, render_template, request, url_for
from flask_login import current_user
from flask_wtf import FlaskForm
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import selectinload

from ..access import TokenRefused, issue_token, revoke_token
from ..audit_log import AuditFilterForm, done_moments_ago, form_query, newest_event, record_trail_viewed
from ..auth.sessions import end_all_access
from ..extensions import db
from ..history.filters import HistoryFilterForm, filtered_predictions, filters_text
from ..history.routes import render_history
from ..models import (
    RESERVED_ACCOUNT,
    RESERVED_NAME_TAKEN,
    ApiToken,
    AuditEvent,
    Prediction,
    User,
    record_audit,
    reserved_username,
    utcnow,
)
from ..params import MAX_ID, int_arg, page_of
from ..responses import form_errors
from . import bp
from .export import predictions_csv
from .forms import CreateUserForm, IssueTokenForm, ResetPasswordForm, SetActiveForm
from .summary import agreement_per_version, verdicts_per_day


@bp.route("/history")
def history():
    return render_history(None, "Prediction history", "admin.history", show_user=True, audited=True)


@bp.route("/history.csv")
def export_csv():
    form = HistoryFilterForm(request.args)
    if not form.validate():
        flash("The export filters are not valid: " + form_errors(form), "error")
        return redirect(url_for("admin.history"))
    # Each row's reading in one query for all rows, not one query per row (10,000 for 10,000 rows).
    predictions = db.session.scalars(filtered_predictions(form).options(selectinload(Prediction.feedback))).all()
    # The filters the export applied, as the form read them: not the query string, whose other
    # parameters (a misspelt `User=`, any text) would read in the trail as filters that were not applied.
    record_audit(current_user.username, "export", f"CSV, {len(predictions)} rows", filters_text(form))
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
        if not User.name_taken(form.username.data):
            # The administrator knows this password: its owner replaces it at first sign-in.
            user = User(username=form.username.data, role=form.role.data, must_change_password=True)
            user.set_password(form.password.data)
            db.session.add(user)
            record_audit(current_user.username, "user_created", user.username, f"role={user.role}")
            try:
                db.session.commit()
            except IntegrityError:  # the name, in any case, created between the check and here (a double-click)
                db.session.rollback()
            else:
                flash(f"User {user.username} created.", "info")
                return redirect(url_for("admin.users"), code=303)
        if _created_by_this_form(form):
            flash(f"User {form.username.data} created (the form arrived twice: one account was made).", "info")
            return redirect(url_for("admin.users"), code=303)
        form.username.errors.append(
            RESERVED_NAME_TAKEN.format(name=form.username.data)
            if reserved_username(form.username.data)
            else "That username is taken (names differing only in case count as the same)."
        )
    return users_page(form)


def _created_by_this_form(form: CreateUserForm) -> bool:
    """Whether the account named in `form` is the one this same form made moments ago: sent again, it
    was told "That username is taken", and the administrator read that the account was not made.
    Same name, role and password."""
    user = User.by_username(form.username.data)
    if user is None or user.role != form.role.data:
        return False
    return done_moments_ago(current_user.username, "user_created", user.username) and user.check_password(
        form.password.data
    )


def _reset_by_this_form(user: User, form: ResetPasswordForm) -> bool:
    """Whether `user`'s password is the one this same form set moments ago, not yet replaced by them."""
    return (
        user.must_change_password
        and done_moments_ago(current_user.username, "password_reset", user.username)
        and user.check_password(form.password.data)
    )


def users_page(form: CreateUserForm | None = None, new_token: dict | None = None):
    form = form or CreateUserForm(formdata=None)
    all_users = db.session.scalars(select(User).order_by(User.username)).all()
    return render_template(
        "admin/users.html",
        form=form,
        users=all_users,
        reset_form=ResetPasswordForm(),
        token_form=IssueTokenForm(formdata=None),
        new_token=new_token,
        token_form_once=secrets.token_urlsafe(16),
        default_days=current_app.config["API_TOKEN_DAYS"],
    ), 400 if form.errors else 200


@bp.route("/users/<int:user_id>/active", methods=["POST"])
def toggle_active(user_id: int):
    user = db.get_or_404(User, user_id)
    form = SetActiveForm()
    if form.validate_on_submit():
        wanted = form.active.data == "1"
        already = f"User {user.username} was already {'active' if wanted else 'deactivated'}."
        if user.id == current_user.id:
            flash("You cannot deactivate your own account.", "error")
        elif wanted == user.active:  # a double-click's second POST, or another administrator's came first
            flash(already, "info")
        elif wanted and user.under_reserved_name:
            flash(RESERVED_ACCOUNT.format(name=user.username), "error")
        elif not user.set_active(wanted):  # ... or came while this one was on its way
            flash(already, "info")
        else:
            if not user.active:
                end_all_access(user)
            record_audit(current_user.username, "user_activated" if user.active else "user_deactivated", user.username)
            db.session.commit()
            flash(f"User {user.username} is now {'active' if user.active else 'deactivated'}.", "info")
    else:
        flash("Nothing was changed: " + form_errors(form), "error")
    return redirect(url_for("admin.users"), code=303)


@bp.route("/users/<int:user_id>/password", methods=["POST"])
def reset_password(user_id: int):
    user = db.get_or_404(User, user_id)
    form = ResetPasswordForm()
    if user.from_directory:
        flash(f"{user.username} signs in through the staff directory: reset the password there.", "error")
    elif not form.validate_on_submit():
        flash("Password not reset: " + form_errors(form), "error")
    elif _reset_by_this_form(user, form):
        # "0 API token(s) revoked" read as if the reset had revoked none: the first had revoked them.
        flash(f"Password of {user.username} was already reset to this one moments ago; nothing was changed.", "info")
    else:
        user.set_password(form.password.data)
        user.must_change_password = True
        revoked = end_all_access(user, reason="password reset")
        record_audit(current_user.username, "password_reset", user.username)
        db.session.commit()
        flash(
            f"Password of {user.username} reset; they choose their own at their next sign-in. "
            f"{revoked} API token(s) revoked.",
            "info",
        )
    return redirect(url_for("admin.users"), code=303)


@bp.route("/audit")
def audit():
    form = AuditFilterForm(request.args)
    valid = form.validate()
    upto = int_arg("upto", 0, 1, MAX_ID) or newest_event()  # the page links carry it (form_query)
    page = page_of(form_query(form if valid else AuditFilterForm(formdata=None), upto), per_page=50)
    actions = db.session.scalars(select(AuditEvent.action).distinct().order_by(AuditEvent.action)).all()
    args = {name: field.data for name, field in form._fields.items() if valid and field.data}
    record_trail_viewed(current_user.username, len(page.items), args, page.page)
    return render_template(
        "admin/audit.html", page=page, form=form, actions=actions, args=args, upto=upto
    ), 200 if valid else 400


ALREADY_ISSUED = (
    "That form was already sent: it issued token {id}, whose secret was shown once, on the page that "
    "answered it (after a double-click the browser shows only the last answer). If the secret was not "
    "copied, revoke token {id} and issue a new one."
)


@bp.route("/users/<int:user_id>/tokens", methods=["POST"])
def issue_user_token(user_id: int):
    user = db.get_or_404(User, user_id)
    form = IssueTokenForm()
    if form.validate_on_submit():
        days = form.days.data or current_app.config["API_TOKEN_DAYS"]
        try:
            # One value is drawn per page, shared by every user's row: the token keeps it with its
            # user, so what was sent is that row's form (ApiToken's unique index).
            token, secret = issue_token(user, form.name.data or "", days, form_once=form.once.data)
            db.session.commit()
        except TokenRefused as exc:
            flash(exc.message, "error")
            return redirect(url_for("admin.users"), code=303)
        except IntegrityError:
            # The form sent again: a reload of the page that showed the secret, or a double-click's
            # other POST, which waited for this one's insert. No second live token whose secret nobody saw.
            db.session.rollback()
            issued = db.session.scalar(select(ApiToken.id).filter_by(user_id=user.id, form_once=form.once.data))
            if issued is None:
                raise
            flash(ALREADY_ISSUED.format(id=issued), "error")
            return redirect(url_for("admin.users"), code=303)
        # Shown once, on the page this POST renders (not in a redirect, not in the session cookie).
        return users_page(new_token={"user": user.username, "id": token.id, "secret": secret})
    flash("Token not issued: " + form_errors(form), "error")
    return redirect(url_for("admin.users"), code=303)


@bp.route("/tokens/<int:token_id>/revoke", methods=["POST"])
def revoke_user_token(token_id: int):
    token = db.get_or_404(ApiToken, token_id)
    if FlaskForm().validate_on_submit():  # the CSRF token only
        if revoke_token(token):
            db.session.commit()
            flash(f"Token {token.id} of {token.user.username} revoked.", "info")
        else:
            flash(f"Token {token.id} was already revoked.", "info")
    return redirect(url_for("admin.users"), code=303)
