"""Who is signing in: a local account's password, else the staff directory, else nobody.

Local accounts are checked first and win over a directory entry of the same name, so a break-glass
administrator can always sign in, the directory down or not. Every path does comparable work for a
known and an unknown name: every name costs exactly one Argon2 verification, local or not.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from sqlalchemy.exc import IntegrityError

from ..extensions import db
from ..models import (
    DIRECTORY,
    NO_LOCAL_PASSWORD,
    PACS_SUBMITTER,
    User,
    folded_username,
    record_audit,
    reserved_username,
)
from ..passwords import verify_nothing
from . import directory
from .sessions import DIRECTORY_OFF_REASON, end_all_access, end_directory_access

log = logging.getLogger(__name__)

WRONG = "Unknown username or wrong password."
RESERVED_NAME = (
    f"The account name {PACS_SUBMITTER} is reserved in CXR Screen for films received from the PACS, so a "
    "directory account of that name cannot sign in. Ask your IT service desk for an account with another name."
)
NOT_IN_GROUP = (
    "Your directory account is not in a group that may use CXR Screen. "
    "Ask your IT service desk to add you to the clinicians' or administrators' group."
)

NAME_TAKEN = (
    "Your directory account's name is already used here by another account, so it cannot sign in. "
    "Ask your IT service desk."
)

# Said to a person whose directory entry is another entry than the one the account under that name was
# made for. Like NAME_TAKEN, it says no more about the earlier account than that the name is in use.
NAME_OF_EARLIER_ACCOUNT = (
    "Your directory account's name belongs to an earlier account here, held by another directory entry, so "
    "it cannot sign in until an administrator resolves this. Ask your IT service desk."
)

# What the person is told when the directory refused their bind and said why (directory.account_state).
# Only for states the directory reports once the password was found right: whoever sees one knows the
# password already. A lockout, which Active Directory reports whatever the password, is told WRONG like
# a wrong password (the audit trail says it), or the page would show anyone which names are locked out.
CHANGE_IT = (
    "Change it as you change your Windows password (or ask your IT service desk), then sign in here with the new one."
)
ACCOUNT_STATES = {
    "password_expired": f"Your directory password has expired. {CHANGE_IT}",
    "must_change_password": (
        f"Your directory password must be changed before it can be used (it was set or reset for you). {CHANGE_IT}"
    ),
    "account_expired": "Your directory account has expired. Ask your IT service desk to extend it.",
    "account_disabled": "Your directory account is disabled. Ask your IT service desk.",
    "logon_hours": (
        "Your directory account may not sign in at this time of day (its logon hours). "
        "Ask your IT service desk if you need to sign in now."
    ),
    "workstation": (
        "Your directory account is limited to certain computers, and CXR Screen's server is not one of them. "
        "Ask your IT service desk."
    ),
}


def deactivated(password_right: bool) -> str:
    """Why a deactivated account's sign-in failed, for the audit trail only: the person is told WRONG,
    as for any other name, so that the page does not say which accounts exist or are deactivated."""
    return f"account deactivated (password {'right' if password_right else 'wrong'})"


@dataclass(frozen=True)
class Outcome:
    user: User | None
    refusal: str = WRONG  # what the person is shown
    reason: str | None = None  # what the audit trail says instead, when that is more than the refusal
    # Refused although the password was right (an expired one, say): not a guess, so the sign-in
    # throttle counts no failure for it, or a person retrying an expired password met its delays.
    password_right: bool = False

    @property
    def audited(self) -> str:
        return self.reason or self.refusal


def check(username: str, password: str) -> Outcome:
    """Raises directory.DirectoryUnavailable when only the directory could answer and it cannot."""
    user = User.by_username(username)
    if user is not None and not user.from_directory:
        password_right = user.check_password(password)
        if not user.active:
            return Outcome(None, reason=deactivated(password_right))
        return Outcome(user) if password_right else Outcome(None)
    # Local names cost an Argon2 check; so does every other name, or its timing would tell local
    # accounts (the break-glass admin first) from directory ones and from names that do not exist.
    verify_nothing(password)
    if not directory.configured():
        if user is None:
            return Outcome(None)
        # A directory account, and nothing to check its password with: refused (the page says, for every
        # name, that directory accounts cannot sign in now). Its access is not ended here: anyone may type
        # a name, and until 5 December one sign-in attempt with any password revoked that account's API
        # tokens for good. Its own session or token ends it (sessions.end_cut_off); both are refused now.
        return Outcome(None, reason=DIRECTORY_OFF_REASON)
    answer = directory.authenticate(username, password)
    if not answer.password_ok:
        if answer.state is None:
            return Outcome(None)
        refusal = ACCOUNT_STATES[answer.state.key] if answer.state.password_right else WRONG
        return Outcome(None, refusal, reason=answer.state.said, password_right=answer.state.password_right)
    # One local row per directory entry, keyed on the entry's own name (directory.entry_name):
    # "ALICE" and a full-width "ａｌｉｃｅ" reach alice's row, and her deactivation.
    name = answer.name or folded_username(username)
    if reserved_username(name):
        log.warning("directory sign-in refused for %r: the name is reserved for films from the PACS", name)
        return Outcome(None, RESERVED_NAME)
    user = User.by_username(name)
    if user is not None and not user.from_directory:
        return Outcome(None)  # "Admin" in the directory never becomes the local "admin"
    if user is None and User.name_taken(name):
        # A new row must not look like an existing one ("Dr.Lee" local, "dr.lee" from the directory):
        # the rule the Users page and the CLI apply to every new name.
        return Outcome(None, NAME_TAKEN)
    if user is not None and (refused := _someone_else(user, answer.identity)):
        return refused
    if (other := User.deactivated_account_of_entry(answer.identity, user)) is not None:
        # The entry's deactivated account under another of its names: a filter comparing two attributes
        # names a first sign-in as typed (alice by her cn made a second, active account), and a name
        # changed in the directory reaches a new row. Until 5 December either got past the deactivation.
        log.warning("directory sign-in refused for %r: the entry's account %r is deactivated", name, other.username)
        return Outcome(None, reason=f"{deactivated(password_right=True)}: {other.username}, under another name")
    if answer.role is None:
        if user is not None:
            # Taken out of both groups: whatever session and token are left end too, and the trail says so
            # as the re-check would have (which from now on passes this account by), once.
            end_directory_access(user, "directory at sign-in: in neither group, or disabled")
            db.session.commit()
        return Outcome(None, NOT_IN_GROUP)
    try:
        user = _sync(user, name, answer.role, answer.identity)
    except IntegrityError:
        # The person's first sign-in sent twice at once (a double-click, two tabs): the other request
        # made the row between our look and our insert; this one signs in to it, as the next would.
        db.session.rollback()
        user = User.by_username(name)
        if user is None:  # not that name: a local one differing only in case, saved at the same moment
            return Outcome(None, NAME_TAKEN)
        if not user.from_directory:
            return Outcome(None)
        if refused := _someone_else(user, answer.identity):
            return refused
        user = _sync(user, name, answer.role, answer.identity)
    return Outcome(user) if user.active else Outcome(None, reason=deactivated(password_right=True))


def _someone_else(user: User, identity: str | None) -> Outcome | None:
    """Refused when the directory's entry under `user`'s name is another entry than the account's
    (directory.identity_changed), else None (its identity recorded here if the row had none yet). The
    earlier holder's access then ends as a leaver's does, since the directory no longer vouches for them
    under that name; their row and history stay for an administrator to resolve (`users rename`)."""
    directory.record_identity(user, identity, "directory at sign-in")
    if not directory.identity_changed(user.directory_entry_id, identity):
        db.session.commit()
        return None
    why = directory.someone_else(user.directory_entry_id, identity)
    log.warning(
        "directory sign-in refused for %r: %s; an administrator must resolve it (docs/sign-in.md)", user.username, why
    )
    end_directory_access(user, f"directory at sign-in: {why}")
    db.session.commit()
    return Outcome(None, NAME_OF_EARLIER_ACCOUNT, reason=why)


def _sync(user: User | None, username: str, role: str, identity: str | None) -> User:
    """The local row behind a directory account, with the role its groups give today (and, new, the
    identity of its entry)."""
    if user is None:
        user = User(
            username=username, role=role, source=DIRECTORY, password_hash=NO_LOCAL_PASSWORD, directory_entry_id=identity
        )
        db.session.add(user)
        record_audit(username, "user_created", username, f"from the directory, role={role}{directory.shown(identity)}")
        db.session.commit()
        return user
    if user.role != role:
        old_role = user.role
        if user.take_role(role):
            record_audit(username, "role_changed", username, f"from the directory: {old_role} -> {role}")
            # Tokens too: a script's token issued to a clinician must not become an administrator's.
            end_all_access(user, reason="role changed in the directory", actor=directory.ACTOR)
    user.directory_access = True
    db.session.commit()
    return user
