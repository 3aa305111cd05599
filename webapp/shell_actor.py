"""The audit trail's actor for what is done from the server's shell (`flask --app wsgi ...`).

Until 5 December every shell command was recorded as plain `cli`: an auditor could see that
someone at the server deleted predictions or reset a password, never who. It is now `cli:NAME`,
NAME being the operating-system account the command ran under, or the account that called sudo
(SUDO_USER), since `sudo -u app flask ...` runs as the service account on behalf of a person.
The name is what the system reports, not a proof: a shared account names that account.
"""

from __future__ import annotations

import getpass
import os
import re

from sqlalchemy import ColumnElement, or_

SHELL = "cli"  # alone: the rows written before 5 December
ACTOR_LENGTH = 64  # the audit_events.actor column
# Characters of a system user name; anything else (an environment variable set to a control
# character or a line break) becomes "?", so the trail and its CSV stay one line per event.
_NOT_A_NAME_CHARACTER = re.compile(r"[^A-Za-z0-9._@$-]")


def shell_actor() -> str:
    """`cli:NAME`, at most ACTOR_LENGTH characters; `cli:uid=N` for an account without a name."""
    name = os.environ.get("SUDO_USER") or _login_name()
    who = _NOT_A_NAME_CHARACTER.sub("?", name) if name else f"uid={os.getuid()}"
    return f"{SHELL}:{who}"[:ACTOR_LENGTH]


def _login_name() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no LOGNAME/USER and a uid without a passwd entry (a container's --user)
        return ""


def actor_is(column: ColumnElement, name: str) -> ColumnElement[bool]:
    """The audit trail's filter by actor: a name matches itself, and `cli` matches every shell
    command, the old `cli` rows and every `cli:NAME`, as it did before names were recorded."""
    if name == SHELL:
        return or_(column == SHELL, column.startswith(f"{SHELL}:", autoescape=True))
    return column == name
