import logging

from flask import current_app, flash, redirect, render_template, request, session, url_for
from flask_login import current_user, login_required, logout_user
from flask_wtf.csrf import CSRFError
from sqlalchemy import update
from sqlalchemy.orm.attributes import set_committed_value

from ..audit_log import done_moments_ago
from ..extensions import db
from ..models import User, record_audit
from ..passwords import hash_password, verify_password
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
            if outcome.password_right:
                throttle.succeeded(attempt)
            flash(outcome.refusal, "error")
            record_audit(_audited_name(username), "sign_in_failed", details=outcome.audited)
            db.session.commit()
            status = 401
    elif form.is_submitted():
        status = 400
    return render_template("auth/login.html", form=form, directory_off=User.cut_off_accounts_exist()), status, headers


def _audited_name(username: str) -> str:
    # Only names of accounts we know reach the audit trail: what was typed for an unknown one may be
    # a password (typed into the wrong field) and must not be kept. A directory account is named by
    # its own name whichever spelling reached it: the directory takes "ALICE" and a full-width
    # "ａｌｉｃｅ" for alice, and until 5 December the trail said "(unknown)" for those attempts, her
    # deactivated account's right password included.
    user = User.by_username(username) or User.directory_account_named(username)
    return user.username if user else "(unknown)"


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
        # What this request checks and then replaces (_replace_password), as read before the throttle,
        # whose rollback on a lost race reloads the row: a double-click's other request may have changed it.
        seen = (user.password_hash, user.session_version)
        # The current password is guessed no faster here than at sign-in (a session left open is not
        # a way to learn the password and keep the account).
        attempt = throttle.claim(user.username, request.remote_addr or "unknown")
        if not attempt.granted:
            form.current_password.errors.append(f"Too many wrong passwords: wait {attempt.wait_seconds} seconds.")
            _password_change_failed(user, "delayed after repeated failures")
        elif not verify_password(seen[0], form.current_password.data):
            form.current_password.errors.append("That is not your current password.")
            _password_change_failed(user, "wrong current password")
        elif form.new_password.data == form.current_password.data:
            throttle.succeeded(attempt)  # the current password was right: no failed guess to count
            form.new_password.errors.append("Choose a password different from the current one.")
        else:
            throttle.succeeded(attempt)
            if _replace_password(user, seen, form.new_password.data):
                record_audit(user.username, "password_changed", user.username)
                db.session.commit()
            elif not _already_made(user, form.new_password.data):
                logout_user()
                session.clear()
                flash(CHANGED_ELSEWHERE, "error")
                return redirect(url_for("auth.login"), code=303)
            sessions.begin(user)  # ... and this one goes on under the new version
            flash("Password changed. You were signed out everywhere else.", "info")
            return redirect(url_for("screening.upload"), code=303)
    return render_template("auth/password.html", form=form), 400 if form.errors else 200


CHANGED_ALREADY = (
    "Your password was already changed a few moments ago; this form, sent again (a double-click, or the back "
    "button), changed nothing. Your password is the new one."
)


@bp.errorhandler(CSRFError)
def csrf_refused(exc: CSRFError):
    """A password change sent twice, the second POST after the first was done (a double-click, the back
    button): the change began a new session, whose CSRF token is not the page's, and the answer the
    browser shows said "Nothing was saved: this form had expired", read as if the change had failed."""
    if (
        request.endpoint == "auth.change_password"
        and current_user.is_authenticated
        and done_moments_ago(current_user.username, "password_changed", current_user.username)
    ):
        flash(CHANGED_ALREADY, "info")
        return redirect(url_for("screening.upload"), code=303)
    # Imported here: errors.handlers imports security, which imports the API, which imports this package.
    from ..errors.handlers import handle_csrf

    return handle_csrf(exc)


CHANGED_ELSEWHERE = (
    "Your password was not changed: your account changed elsewhere a moment ago (a password reset by "
    "an administrator, a sign-out or a password change in another window). Please sign in again."
)


def _replace_password(user: User, seen: tuple[str, int], new_password: str) -> bool:
    """The user's own password change, as a compare-and-set on the hash the current password was just
    checked against and on this session's version (`seen`): an administrator's reset (or a sign-out,
    another change) saved in between wins and ends this session too. Read, then written, the reset's
    new password was overwritten by this one and the session this change began went on."""
    new_hash = hash_password(new_password)
    seen_hash, seen_version = seen
    version = db.session.scalar(
        update(User)
        .where(User.id == user.id, User.password_hash == seen_hash, User.session_version == seen_version)
        # Every other session, maybe a stolen one, ends here (sessions.end_sessions, in the same statement).
        .values(password_hash=new_hash, must_change_password=False, session_version=User.session_version + 1)
        .returning(User.session_version)
        .execution_options(synchronize_session=False)
    )
    if version is None:
        db.session.rollback()
        return False
    for name, value in (("password_hash", new_hash), ("must_change_password", False), ("session_version", version)):
        set_committed_value(user, name, value)  # what the row now holds, for sessions.begin
    return True


def _already_made(user: User, new_password: str) -> bool:
    """Whether the row, read again, holds this very change: the form sent twice at once (a double-click,
    whose answer the browser shows is the second's), the other request having made it. A reset by an
    administrator holds another password, and asks for a new one at the next sign-in."""
    db.session.refresh(user)
    return not user.must_change_password and user.check_password(new_password)


def _password_change_failed(user: User, reason: str) -> None:
    """A wrong current password is a failed authentication like a wrong one at sign-in (someone at an
    unlocked workstation guessing it), so it is in the trail too; what was typed never is."""
    record_audit(user.username, "password_change_failed", user.username, reason)
    db.session.commit()
