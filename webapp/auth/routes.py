import logging

from flask import current_app, flash, redirect, render_template, request, session, url_for
from flask_login import current_user, login_required, logout_user

from ..extensions import db
from ..models import User, record_audit
from ..ratelimits import sign_in_per_address
from ..responses import safe_next
from . import bp, credentials, sessions, throttle
from .directory import DirectoryUnavailable
from .forms import ChangePasswordForm, LoginForm

log = logging.getLogger(__name__)

DIRECTORY_DOWN = (
    "The staff directory cannot be reached just now, so directory accounts cannot sign in. "
    "Please try again in a few minutes; if it persists, call the IT service desk."
)
INITIAL_ADMIN_PASSWORD_FILE = "initial_admin_password"


@bp.route("/login", methods=["GET", "POST"])
@sign_in_per_address
def login():
    if current_user.is_authenticated:
        return redirect(url_for("screening.upload"))
    form = LoginForm()
    status, headers = 200, {}
    if form.validate_on_submit():
        username = form.username.data.strip()
        attempt = throttle.claim(username, request.remote_addr or "unknown")
        if not attempt.granted:
            wait = attempt.wait_seconds
            flash(f"Too many failed sign-in attempts. Please wait {wait} seconds and try again.", "error")
            record_audit(_audited_name(username), "sign_in_failed", details="delayed after repeated failures")
            db.session.commit()
            status, headers = 429, {"Retry-After": str(wait)}
        else:
            try:
                outcome = credentials.check(username, form.password.data)
            except DirectoryUnavailable as exc:
                log.warning("directory sign-in unavailable: %s", exc)
                throttle.give_back(attempt)
                flash(DIRECTORY_DOWN, "error")
                record_audit(_audited_name(username), "sign_in_failed", details="directory unreachable")
                db.session.commit()
                return render_template("auth/login.html", form=form), 503
            if outcome.user is not None:
                throttle.succeeded(attempt)
                return _signed_in(outcome.user)
            flash(outcome.refusal, "error")
            record_audit(_audited_name(username), "sign_in_failed", details=outcome.audited)
            db.session.commit()
            status = 401
    elif form.is_submitted():
        status = 400
    return render_template("auth/login.html", form=form), status, headers


def _audited_name(username: str) -> str:
    # Only names of accounts we know reach the audit trail: what was typed for an unknown one may be
    # a password (typed into the wrong field) and must not be kept.
    return username if User.by_username(username) else "(unknown)"


def _signed_in(user):
    sessions.begin(user)
    record_audit(user.username, "sign_in", details=f"source={user.source}")
    db.session.commit()
    if user.is_admin:
        # The quick start's first password was written to disk to be read once; it has been.
        first_password = current_app.config["INSTANCE_DIR"] / INITIAL_ADMIN_PASSWORD_FILE
        try:
            first_password.unlink(missing_ok=True)
        except OSError as exc:  # a read-only instance folder must not stop the sign-in
            log.warning("could not delete %s: %s; delete it by hand", first_password, exc)
    if user.must_change_password:
        flash("Your password was set by an administrator. Choose your own before you continue.", "info")
        return redirect(url_for("auth.change_password"))
    return redirect(safe_next(request.args.get("next")))


@bp.route("/logout", methods=["POST"])
@login_required
def logout():
    user = current_user._get_current_object()
    # Signing out ends this user's sessions everywhere: a copied cookie is worthless from now on.
    sessions.end_sessions(user)
    record_audit(user.username, "sign_out")
    db.session.commit()
    logout_user()
    session.clear()
    flash("You are signed out.", "info")
    return redirect(url_for("auth.login"))


@bp.route("/password", methods=["GET", "POST"])
@login_required
def change_password():
    user = current_user._get_current_object()
    if user.from_directory:
        return render_template("auth/password.html", form=None), 200
    form = ChangePasswordForm()
    if form.validate_on_submit():
        # The current password is guessed no faster here than at sign-in (a session left open is not
        # a way to learn the password and keep the account).
        attempt = throttle.claim(user.username, request.remote_addr or "unknown")
        if not attempt.granted:
            form.current_password.errors.append(f"Too many wrong passwords: wait {attempt.wait_seconds} seconds.")
            _password_change_failed(user, "delayed after repeated failures")
        elif not user.check_password(form.current_password.data):
            form.current_password.errors.append("That is not your current password.")
            _password_change_failed(user, "wrong current password")
        elif form.new_password.data == form.current_password.data:
            throttle.succeeded(attempt)  # the current password was right: no failed guess to count
            form.new_password.errors.append("Choose a password different from the current one.")
        else:
            throttle.succeeded(attempt)
            user.set_password(form.new_password.data)
            user.must_change_password = False
            sessions.end_sessions(user)  # any other session, maybe a stolen one, ends here
            record_audit(user.username, "password_changed", user.username)
            db.session.commit()
            sessions.begin(user)  # ... and this one goes on under the new version
            flash("Password changed. You were signed out everywhere else.", "info")
            return redirect(url_for("screening.upload"), code=303)
    return render_template("auth/password.html", form=form), 400 if form.errors else 200


def _password_change_failed(user: User, reason: str) -> None:
    """A wrong current password is a failed authentication like a wrong one at sign-in (someone at an
    unlocked workstation guessing it), so it is in the trail too; what was typed never is."""
    record_audit(user.username, "password_change_failed", user.username, reason)
    db.session.commit()
