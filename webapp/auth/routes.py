from urllib.parse import urlsplit

from flask import current_app, flash, redirect, render_template, request, session, url_for
from flask_login import current_user, login_required, login_user, logout_user

from ..extensions import db
from ..models import User, record_audit
from . import bp, throttle
from .forms import LoginForm


def _safe_next(target: str | None) -> str:
    # Only same-site paths: an open redirect after sign-in is a phishing tool.
    if target and target.startswith("/") and not target.startswith("//") and not urlsplit(target).netloc:
        return target
    return url_for("screening.upload")


def audit_failure(user: User | None, reason: str) -> None:
    # Only names of real accounts are recorded: what was typed for an unknown one may be a password.
    record_audit(user.username if user else "(unknown)", "sign_in_failed", details=reason)
    db.session.commit()


@bp.route("/login", methods=["GET", "POST"])
def login():
    if current_user.is_authenticated:
        return redirect(url_for("screening.upload"))
    form = LoginForm()
    status = 200
    if form.validate_on_submit():
        username = form.username.data.strip()
        address = request.remote_addr or "unknown"
        minutes = current_app.config["LOGIN_WINDOW_MINUTES"]
        if throttle.locked_out(username, address):
            flash(
                f"Too many failed sign-in attempts. Sign-in is paused for up to {minutes} minutes; "
                "ask an administrator if you are locked out.",
                "error",
            )
            status = 429
            audit_failure(User.by_username(username), "throttled")
        else:
            user = User.by_username(username)
            if user and user.active and user.check_password(form.password.data):
                throttle.clear_failures(username)
                login_user(user)
                record_audit(user.username, "sign_in")
                db.session.commit()
                return redirect(_safe_next(request.args.get("next")))
            throttle.record_failure(username, address)
            audit_failure(
                user, "unknown user" if not user else "wrong password" if user.active else "deactivated account"
            )
            flash("Unknown username or wrong password.", "error")
            status = 401
    elif form.is_submitted():
        status = 400
    return render_template("auth/login.html", form=form), status


@bp.route("/logout", methods=["POST"])
@login_required
def logout():
    record_audit(current_user.username, "sign_out")
    db.session.commit()
    logout_user()
    session.clear()
    flash("You are signed out.", "info")
    return redirect(url_for("auth.login"))
