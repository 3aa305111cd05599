"""`flask --app wsgi validation delete RUN_ID`: delete a validation run from the server's shell."""

from __future__ import annotations

import click

from ..cli_group import AdminGroup
from ..models import ValidationRun
from ..params import row_by_id
from ..shell_actor import shell_actor
from .deletion import DeletionRefused, delete_run

validation_cli = AdminGroup("validation", help="Validation runs on the site's own labelled films.")


@validation_cli.command("delete")
@click.argument("run_id", type=click.IntRange(min=1))
@click.option("--yes", is_flag=True, help="Do not ask for confirmation (scripts).")
def delete(run_id: int, yes: bool) -> None:
    """Delete the ended run RUN_ID: its films' names, review copies, figures and archive (audited)."""
    run = row_by_id(ValidationRun, run_id)
    if run is None:
        raise click.ClickException(f"No validation run {run_id}.")
    # A mistyped id deletes another run for good: say which one, unless a script said --yes.
    question = f"Delete validation run {run.id} ({run.archive_name}, {run.status}, uploaded {run.created_at:%Y-%m-%d})?"
    if not yes and not click.confirm(question):
        raise click.ClickException("Nothing was deleted.")
    try:
        films = delete_run(run_id, shell_actor())
    except DeletionRefused as exc:
        raise click.ClickException(exc.message) from None
    click.echo(f"Deleted validation run {run_id} with its {films} films.")
