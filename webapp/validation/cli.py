"""`flask --app wsgi validation delete|redact RUN_ID`: delete a validation run, or remove its films' names and
pictures, from the server's shell."""

from __future__ import annotations

import click

from ..cli_group import AdminGroup
from ..local_time import utc_time
from ..models import ValidationRun
from ..params import row_by_id
from ..shell_actor import shell_actor
from .deletion import DeletionRefused, delete_run
from .redaction import RedactionRefused, redact_run

validation_cli = AdminGroup("validation", help="Validation runs on the site's own labelled films.")


@validation_cli.command("delete")
@click.argument("run_id", type=click.IntRange(min=1))
@click.option("--yes", is_flag=True, help="Do not ask for confirmation (scripts).")
def delete(run_id: int, yes: bool) -> None:
    """Delete the ended run RUN_ID: its films' names, review copies, figures and archive (audited)."""
    _confirm("Delete", run_id, yes, "Nothing was deleted.")
    try:
        films = delete_run(run_id, shell_actor())
    except DeletionRefused as exc:
        raise click.ClickException(exc.message) from None
    click.echo(f"Deleted validation run {run_id} with its {films} films.")


@validation_cli.command("redact")
@click.argument("run_id", type=click.IntRange(min=1))
@click.option("--yes", is_flag=True, help="Do not ask for confirmation (scripts).")
def redact(run_id: int, yes: bool) -> None:
    """Replace the names of the ended run RUN_ID's films with 'film <id>' and delete their review copies and heat
    maps; the figures stay (audited)."""
    _confirm("Remove the films' names and pictures from", run_id, yes, "Nothing was changed.")
    try:
        films = redact_run(run_id, shell_actor())
    except RedactionRefused as exc:
        raise click.ClickException(exc.message) from None
    if films:
        click.echo(f"Removed the names, review copies and heat maps of {films} films of validation run {run_id}.")
    else:
        click.echo(f"Validation run {run_id} had no names or pictures left to remove.")


def _confirm(action: str, run_id: int, yes: bool, declined: str) -> None:
    """Stop unless the run exists and the person confirms (a mistyped id would change another run for good:
    the question names the run), or a script said --yes."""
    run = row_by_id(ValidationRun, run_id)
    if run is None:
        raise click.ClickException(f"No validation run {run_id}.")
    which = f"validation run {run.id} ({run.archive_name}, {run.status}, uploaded {utc_time(run.created_at, 'day')})"
    if not yes and not click.confirm(f"{action} {which}?"):
        raise click.ClickException(declined)
