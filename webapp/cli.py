"""`flask --app wsgi users ...`: account administration from the server's shell."""

import click
from flask.cli import AppGroup

from .auth.sessions import end_all_access
from .extensions import db
from .models import ROLES, ApiToken, User, record_audit
from .passwords import password_problem

users_cli = AppGroup("users", help="Create and manage user accounts and API tokens.")

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


@users_cli.command("create")
@click.argument("name")
@click.option("--role", type=click.Choice(ROLES), default="clinician", show_default=True)
@PASSWORD_OPTION
@CHANGE_OPTION
def create(name: str, role: str, password: str, change_at_sign_in: bool) -> None:
    """Create a user NAME with a role."""
    if User.by_username(name):
        raise click.ClickException(f"User {name!r} already exists.")
    _check_password(password)
    user = User(username=name, role=role, must_change_password=change_at_sign_in)
    user.set_password(password)
    db.session.add(user)
    record_audit("cli", "user_created", name, f"role={role}")
    db.session.commit()
    click.echo(f"Created {role} {name}.")


@users_cli.command("token")
@click.argument("name")
def token(name: str) -> None:
    """Issue a new API token for NAME (printed once, on the last line)."""
    user = _user_or_fail(name)
    value = ApiToken.issue(user)
    record_audit("cli", "user.token", name)
    db.session.commit()
    click.echo(f"New API token for {name} (store it now; it is not shown again):")
    click.echo(value)


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


def _set_active(name: str, active: bool) -> None:
    user = _user_or_fail(name)
    user.active = active
    if not active:
        end_all_access(user)
    word = "activate" if active else "deactivate"
    record_audit("cli", f"user_{word}d", name)
    db.session.commit()
    click.echo(f"{word.capitalize()}d {name}.")


@users_cli.command("reset-password")
@click.argument("name")
@PASSWORD_OPTION
@CHANGE_OPTION
def reset_password(name: str, password: str, change_at_sign_in: bool) -> None:
    """Set a new password for NAME; every session NAME has open ends."""
    user = _user_or_fail(name)
    if user.from_directory:
        raise click.ClickException(f"{name} signs in through the staff directory: reset the password there.")
    _check_password(password)
    user.set_password(password)
    user.must_change_password = change_at_sign_in
    end_all_access(user)
    record_audit("cli", "password_reset", name)
    db.session.commit()
    click.echo(f"Password of {name} reset.")


@users_cli.command("list")
def list_users() -> None:
    """List accounts with their role and state."""
    for user in db.session.scalars(db.select(User).order_by(User.username)):
        click.echo(f"{user.username}\t{user.role}\t{'active' if user.active else 'deactivated'}\t{user.source}")
