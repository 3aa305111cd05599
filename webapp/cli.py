"""`flask --app wsgi users ...`: account administration from the server's shell; `audit prune` and
`predictions prune`: retention."""

import re
from datetime import timedelta

import click
from flask import current_app
from sqlalchemy import delete, func, select
from sqlalchemy.exc import IntegrityError

from .access import TokenRefused, issue_token, revoke_token, revoke_tokens
from .auth.sessions import end_all_access, end_sessions
from .auth.throttle import forget_lapsed
from .cli_group import AdminGroup
from .config import MAX_RETENTION_DAYS
from .extensions import db
from .local_time import utc_time
from .models import (
    LOCAL,
    RESERVED_ACCOUNT,
    RESERVED_NAME_TAKEN,
    ROLES,
    USERNAME_PATTERN,
    AuditEvent,
    User,
    record_audit,
    reserved_username,
    utcnow,
)
from .neutral_names import neutralise, sent_names
from .passwords import password_problem
from .retention import count_prune, described, prune_predictions
from .shell_actor import shell_actor

users_cli = AdminGroup("users", help="Create and manage user accounts and API tokens.")
audit_cli = AdminGroup("audit", help="Maintain the audit trail.")
predictions_cli = AdminGroup(
    "predictions", help="Delete predictions past the retention period; neutral names for uploads stored as sent."
)

PASSWORD_OPTION = click.option(
    "--password", prompt=True, hide_input=True, confirmation_prompt=True, help="Prompted for when not given."
)
# Whoever runs the command knows the password, so by default its owner must replace it at first sign-in.
CHANGE_OPTION = click.option(
    "--change-at-sign-in/--no-change-at-sign-in",
    default=True,
    show_default=True,
    help="Make the user choose a new password at their next sign-in (off: service accounts, scripted tests).",
)


def _user_or_fail(name: str) -> User:
    user = User.by_username(name)
    if user is None:
        raise click.ClickException(f"No user named {name!r}.")
    return user


def _check_password(password: str) -> None:
    problem = password_problem(password)
    if problem:
        raise click.ClickException(problem)


def _taken(name: str) -> str:
    """Why User.name_taken refuses `name`: "PACS" said "User 'PACS' already exists", which `users list`
    then did not show."""
    if reserved_username(name):
        return RESERVED_NAME_TAKEN.format(name=name)
    return f"User {name!r} already exists (names differing only in case count as the same)."


@users_cli.command("create")
@click.argument("name")
@click.option("--role", type=click.Choice(ROLES), default="clinician", show_default=True)
@PASSWORD_OPTION
@CHANGE_OPTION
def create(name: str, role: str, password: str, change_at_sign_in: bool) -> None:
    """Create a user NAME with a role."""
    if not re.fullmatch(USERNAME_PATTERN, name):
        raise click.ClickException("A user name is 2 to 64 letters, digits, dots, dashes and underscores.")
    taken = _taken(name)
    if User.name_taken(name):
        raise click.ClickException(taken)
    _check_password(password)
    user = User(username=name, role=role, must_change_password=change_at_sign_in)
    user.set_password(password)
    db.session.add(user)
    record_audit(shell_actor(), "user_created", name, f"role={role}")
    try:
        db.session.commit()
    except IntegrityError:  # the name, in some case, created on the Users page between the check and here
        db.session.rollback()
        raise click.ClickException(taken) from None
    click.echo(f"Created {role} {name}.")


@users_cli.command("token")
@click.argument("name")
@click.option("--name", "token_name", default="", help="A label for the token, e.g. the script that uses it.")
@click.option("--days", type=click.IntRange(1, 3650), default=None, help="Validity in days [default: API_TOKEN_DAYS].")
def token(name: str, token_name: str, days: int | None) -> None:
    """Issue a new API token for NAME (printed once, on the last line)."""
    user = _user_or_fail(name)
    try:
        row, value = issue_token(user, token_name, days or current_app.config["API_TOKEN_DAYS"], actor=shell_actor())
    except TokenRefused as exc:
        raise click.ClickException(exc.message) from None
    db.session.commit()
    click.echo(
        f"New API token {row.id} for {name}, valid until {utc_time(row.expires_at, 'day')} "
        "(store it now; it is not shown again):"
    )
    click.echo(value)


@users_cli.command("tokens")
@click.argument("name")
def list_tokens(name: str) -> None:
    """List NAME's API tokens: id, name, state, expiry, last use."""
    for row in _user_or_fail(name).tokens:
        used = utc_time(row.last_used_at) if row.last_used_at else "never used"
        click.echo(f"{row.id}\t{row.name or '-'}\t{row.state}\texpires {utc_time(row.expires_at, 'day')}\t{used}")


@users_cli.command("revoke-token")
@click.argument("name")
@click.argument("token_id", type=int, required=False)
def revoke_token_command(name: str, token_id: int | None) -> None:
    """Revoke NAME's token TOKEN_ID, or all of NAME's tokens when no id is given."""
    user = _user_or_fail(name)
    if token_id is None:
        count = revoke_tokens(user, actor=shell_actor())
        db.session.commit()
        click.echo(f"Revoked {count} token(s) of {name}.")
        return
    row = next((t for t in user.tokens if t.id == token_id), None)
    if row is None:
        raise click.ClickException(f"{name} has no token {token_id}.")
    if not revoke_token(row, actor=shell_actor()):
        raise click.ClickException(f"Token {token_id} of {name} was already revoked.")
    db.session.commit()
    click.echo(f"Revoked token {token_id} of {name}.")


@users_cli.command("deactivate")
@click.argument("name")
def deactivate(name: str) -> None:
    """Block sign-in and API access for NAME (history is kept)."""
    _set_active(name, False)


@users_cli.command("activate")
@click.argument("name")
def activate(name: str) -> None:
    """Allow NAME to sign in again."""
    _set_active(name, True)


def _other_active_admins(user: User) -> int:
    return db.session.scalar(
        select(func.count()).select_from(User).where(User.role == "admin", User.active, User.id != user.id)
    )


def _set_active(name: str, active: bool) -> None:
    user = _user_or_fail(name)
    if active and user.under_reserved_name:
        raise click.ClickException(RESERVED_ACCOUNT.format(name=user.username))
    if not active and user.active and user.is_admin and not _other_active_admins(user):
        # The Users page cannot do this (an administrator may not deactivate their own account).
        raise click.ClickException(
            f"{name} is the only active administrator: nobody could manage accounts or read the audit "
            "trail. Create or activate another administrator first (flask --app wsgi users create NAME --role admin)."
        )
    if not user.set_active(active):  # already so, or made so by someone else a moment ago
        db.session.rollback()
        click.echo(f"{name} was already {'active' if active else 'deactivated'}.")
        return
    if not active:
        end_all_access(user)
    word = "activate" if active else "deactivate"
    record_audit(shell_actor(), f"user_{word}d", name)
    db.session.commit()
    click.echo(f"{word.capitalize()}d {name}.")


@users_cli.command("reset-password")
@click.argument("name")
@PASSWORD_OPTION
@CHANGE_OPTION
def reset_password(name: str, password: str, change_at_sign_in: bool) -> None:
    """Set a new password for NAME; every session NAME has open ends."""
    user = _user_or_fail(name)
    if user.cut_off:
        raise click.ClickException(
            f"{name} is an account from the staff directory, and directory sign-in is switched off: to keep it, "
            f"make it a local account with a password (flask --app wsgi users make-local {name})."
        )
    if user.from_directory:
        raise click.ClickException(f"{name} signs in through the staff directory: reset the password there.")
    _check_password(password)
    user.set_password(password)
    user.must_change_password = change_at_sign_in
    revoked = end_all_access(user, reason="password reset")
    record_audit(shell_actor(), "password_reset", name)
    db.session.commit()
    click.echo(f"Password of {name} reset; {revoked} API token(s) revoked.")


@users_cli.command("make-local")
@click.argument("name")
@PASSWORD_OPTION
@CHANGE_OPTION
def make_local(name: str, password: str, change_at_sign_in: bool) -> None:
    """Keep directory account NAME as a local account with a password (e.g. with directory sign-in
    switched off): the directory no longer decides its sign-in or its role; its history is kept."""
    user = _user_or_fail(name)
    if not user.from_directory:
        raise click.ClickException(f"{name} is already a local account.")
    if user.under_reserved_name:
        raise click.ClickException(RESERVED_ACCOUNT.format(name=user.username))
    _check_password(password)
    user.source = LOCAL
    user.set_password(password)
    user.must_change_password = change_at_sign_in
    user.directory_access = True  # the directory's say over it ends here, its refusal included
    end_sessions(user)  # sessions begun through the directory end: from now on the password signs in
    tokens = sum(token.state == "active" for token in user.tokens)
    record_audit(shell_actor(), "user_made_local", name, f"was a directory account; {tokens} live API token(s) kept")
    db.session.commit()
    click.echo(
        f"{name} is now a local {user.role} account with a password; {tokens} live API token(s) kept "
        f"(flask --app wsgi users revoke-token {name} revokes them; users token {name} issues a new one)."
    )


@users_cli.command("rename")
@click.argument("name")
@click.argument("new_name")
def rename(name: str, new_name: str) -> None:
    """Give account NAME the name NEW_NAME, its history kept: e.g. a directory name now held by someone
    else (docs/sign-in.md), whose first sign-in then makes them an account of their own under it."""
    user = _user_or_fail(name)
    if not re.fullmatch(USERNAME_PATTERN, new_name):
        raise click.ClickException("A user name is 2 to 64 letters, digits, dots, dashes and underscores.")
    taken = _taken(new_name)
    if User.name_taken(new_name):
        raise click.ClickException(taken)
    user.username = new_name
    ended = ""
    if user.from_directory:
        # Its sign-in and role came from the entry under the old name, which no longer reaches this row:
        # nothing begun under that name goes on (a sign-in under the new name, if the directory has the
        # same entry under it, restores the access).
        revoked = end_all_access(user, reason=f"renamed from {name}")
        ended = f"; its sessions ended and {revoked} API token(s) revoked"
    record_audit(shell_actor(), "user_renamed", new_name, f"was {name}")
    try:
        db.session.commit()
    except IntegrityError:  # the name, in some case, created elsewhere between the check and here
        db.session.rollback()
        raise click.ClickException(taken) from None
    click.echo(f"Renamed {name} to {new_name}{ended}.")


@users_cli.command("list")
def list_users() -> None:
    """List accounts with their role and state."""
    for user in db.session.scalars(db.select(User).order_by(User.username)):
        click.echo(f"{user.username}\t{user.role}\t{user.state}\t{user.source}")


def _days_option(setting: str):
    return click.option(
        "--days",
        type=click.IntRange(1, MAX_RETENTION_DAYS),
        default=None,
        help=f"Keep this many days [default: {setting}].",
    )


@audit_cli.command("prune")
@_days_option("AUDIT_RETENTION_DAYS")
def prune(days: int | None) -> None:
    """Delete audit events older than the retention period (itself an audited event), and lapsed
    sign-in counters."""
    days = days or current_app.config["AUDIT_RETENTION_DAYS"]
    now = utcnow()
    cutoff = now - timedelta(days=days)
    count = db.session.scalar(select(func.count()).select_from(AuditEvent).where(AuditEvent.created_at < cutoff))
    db.session.execute(delete(AuditEvent).where(AuditEvent.created_at < cutoff))
    record_audit(shell_actor(), "audit_pruned", f"{count} events", f"older than {days} days (before {cutoff:%Y-%m-%d})")
    counters = forget_lapsed(now)
    db.session.commit()
    click.echo(f"Deleted {count} audit event(s) older than {days} days and {counters} lapsed sign-in counter(s).")


@predictions_cli.command("prune")
@_days_option("PREDICTION_RETENTION_DAYS")
@click.option("--dry-run", is_flag=True, help="Count what would be deleted; delete nothing, record nothing.")
def prune_predictions_command(days: int | None, dry_run: bool) -> None:
    """Delete predictions older than the retention period with their readings, worklist reads, DICOM
    receipts and results (rows and files); an audited event per batch of 500. A film whose result is still on its
    way to the PACS is kept until a later run."""
    days = days or current_app.config["PREDICTION_RETENTION_DAYS"]
    if days is None:
        raise click.ClickException(
            "No retention period for predictions: set PREDICTION_RETENTION_DAYS or give --days N "
            "(without either, predictions are kept for ever)."
        )
    cutoff = utcnow() - timedelta(days=days)
    period = f"older than {days} days (before {cutoff:%Y-%m-%d})"
    pruned = count_prune(cutoff) if dry_run else prune_predictions(cutoff, period)
    kept = f"; {pruned.kept_in_use} kept: a result still on its way to the PACS" if pruned.kept_in_use else ""
    belonging = described(pruned.rows, pruned.files)
    done = "Would delete (dry run: nothing was deleted)" if dry_run else "Deleted"
    click.echo(f"{done} {pruned.rows['predictions']} prediction(s) older than {days} days {belonging}{kept}.")


@predictions_cli.command("neutral-names")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation (scripts).")
def neutral_names_command(yes: bool) -> None:
    """Store every upload kept under the name it was sent with (before 2 December, or while
    STORE_ORIGINAL_FILENAMES was set) under its neutral name, upload-<id>-<n>.<ext> (audited)."""
    if current_app.config["STORE_ORIGINAL_FILENAMES"]:
        raise click.ClickException(
            "STORE_ORIGINAL_FILENAMES is set: this site keeps the names as sent. Unset it first, or the next "
            "uploads keep theirs."
        )
    count = len(sent_names())
    if not count:
        click.echo("Every upload is already stored under a neutral name.")
        return
    if not yes and not click.confirm(f"Replace the stored names of {count} upload(s)? The names as sent are not kept"):
        raise click.ClickException("Nothing was changed.")
    click.echo(f"{neutralise(shell_actor())} upload(s) are now stored under a neutral name.")
