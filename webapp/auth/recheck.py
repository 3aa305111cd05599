"""The periodic directory re-check: a leaver's access ends within minutes, not at a next sign-in.

Directory accounts are otherwise asked about only when their owner signs in, so someone taken out
of the groups (or disabled in Active Directory) kept a 12-hour session and API tokens valid for up
to ten years. Every DIRECTORY_RECHECK_MINUTES the job worker asks the directory about each active
directory account that still has access: in neither group, disabled, gone, or the name now another
entry's (another objectGUID / entryUUID: a reused name, another directory) -> sessions and tokens
end (once: `User.directory_access` remembers it); another role -> the role follows and the old
sessions and tokens end, as at sign-in. A directory that cannot be asked changes nothing: an outage
must not sign the whole hospital out.
"""

from __future__ import annotations

import logging

from sqlalchemy import select

from ..extensions import db
from ..jobs.queue import periodic
from ..models import DIRECTORY, User, record_audit
from . import directory
from .sessions import end_all_access, end_directory_access

log = logging.getLogger(__name__)


@periodic("auth.directory_recheck", "DIRECTORY_RECHECK_MINUTES")
def recheck_directory_accounts() -> int:
    """Ask the directory about every directory account with access; returns how many lost it."""
    accounts = db.session.scalars(
        select(User).where(User.source == DIRECTORY, User.active.is_(True), User.directory_access.is_(True))
    ).all()
    if not directory.configured():
        # Not a sign that directory sign-in is off: the worker may just lack the app's LDAP_* settings,
        # and ending every account here would then revoke everyone's tokens after each sign-in. Where
        # it is off, the app refuses these accounts at every use (User.cut_off) and ends them there.
        if accounts:
            log.warning(
                "directory re-check: LDAP_URL is not set for the job worker, so %d directory account(s) are "
                "not re-checked; if directory sign-in is on, give the worker the app's LDAP_* settings",
                len(accounts),
            )
        return 0
    ended = 0
    for user in accounts:
        try:
            answer = directory.lookup(user.username)
        except directory.DirectoryUnavailable as exc:
            log.warning("directory re-check stopped, nobody's access changed: %s", exc)
            db.session.rollback()
            return ended
        if answer.found:
            directory.record_identity(user, answer.identity, "directory re-check")
        someone_else = answer.found and directory.identity_changed(user.directory_entry_id, answer.identity)
        if not answer.found:
            why = "no longer in the directory"
        elif someone_else:  # the name is another person's now: for the account's holder, as good as gone
            why = directory.someone_else(user.directory_entry_id, answer.identity)
        elif answer.role is None:
            why = "in neither group, or disabled"
        else:
            why = None
        if why is None and answer.role != user.role:
            old_role = user.role
            if user.take_role(answer.role):  # else a sign-in took it meanwhile, and ended the old access
                record_audit(
                    directory.ACTOR, "role_changed", user.username, f"directory re-check: {old_role} -> {answer.role}"
                )
                end_all_access(user, reason="role changed in the directory", actor=directory.ACTOR)
        elif why is not None and end_directory_access(user, f"directory re-check: {why}"):
            if someone_else:
                log.warning(
                    "directory re-check ended %r's access: %s; an administrator must resolve it", user.username, why
                )
            ended += 1
        db.session.commit()
    return ended
