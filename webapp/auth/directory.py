"""Sign-in against the hospital's staff directory (LDAP or Active Directory) with ldap3.

A service account finds the person's entry with LDAP_USER_FILTER, the person's own password is checked
by binding as that entry, and the role comes from the groups at every sign-in: members of
LDAP_ADMIN_GROUP_DN are admins, of LDAP_CLINICIAN_GROUP_DN clinicians, anyone else is refused.
Membership is read from the entry's `memberOf` (Active Directory, OpenLDAP's memberof overlay) or,
failing that, from the group's `member` list (groupOfNames), and then up through the groups the
person's groups are in (their own memberOf).
"""

from __future__ import annotations

import logging
import os
import re
import ssl
import uuid
from collections import deque
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cache

from flask import current_app
from ldap3 import BASE, NONE, SUBTREE, Connection, Server, Tls
from ldap3.core.exceptions import LDAPException
from ldap3.utils.conv import escape_filter_chars
from ldap3.utils.dn import safe_dn

from ..extensions import db
from ..models import User, changed_if, directory_configured, folded_username, record_audit

log = logging.getLogger(__name__)


class DirectoryUnavailable(Exception):
    """The directory could not be asked (down, unreachable, refused the service account)."""


@dataclass(frozen=True)
class AccountState:
    """What the directory said about the account when it refused the person's bind."""

    key: str  # credentials.py's name for it, which picks the page's message
    said: str  # the audit trail's words, with the directory's own code
    password_right: bool  # reported only once the password was checked and found right


@dataclass(frozen=True)
class DirectoryAnswer:
    found: bool  # an entry matched the user name
    password_ok: bool = False
    role: str | None = None  # "admin", "clinician", or None when in neither group
    name: str = ""  # the entry's own user name, lower-cased: the key of its local row
    identity: str | None = None  # the entry's stable identity (entry_identity), None if it shows none
    state: AccountState | None = None  # why the directory refused the bind, when it said (account_state)


# The states a directory reports of an account at its bind: the audit trail's words, and whether the
# directory says it only once the password was found right (whoever sees it knows the password).
_STATES = {
    "password_expired": ("password expired", True),
    "must_change_password": ("password must be changed", True),
    "account_expired": ("account expired", True),
    "account_disabled": ("account disabled", True),
    "logon_hours": ("outside its logon hours", True),
    "workstation": ("not permitted from this server", True),
    "locked_out": ("account locked out", False),  # said whatever the password
}
# Active Directory refuses such a bind with invalidCredentials (49) and a diagnostic message such as
# "80090308: LdapErr: DSID-0C09044E, comment: AcceptSecurityContext error, data 532, v4563", the `data`
# code being the Windows error; 52e (wrong password) and 525 (no such user) are no state.
_AD_CODES = {
    "532": "password_expired",
    "773": "must_change_password",
    "701": "account_expired",
    "533": "account_disabled",
    "530": "logon_hours",
    "531": "workstation",
    "775": "locked_out",
}
_AD_DATA = re.compile(r"\bdata ([0-9a-f]{3,4})\b", re.IGNORECASE)
INVALID_CREDENTIALS = 49
# OpenLDAP's ppolicy overlay (and other servers of draft-behera-ldap-password-policy) says it in a
# response control, sent to a client that asks with the request control, non-critical so that a server
# without it (Active Directory) ignores it. A password set by an administrator (changeAfterReset) binds
# successfully, but the directory allows it nothing but its own change: the sign-in is refused too.
PASSWORD_POLICY_OID = "1.3.6.1.4.1.42.2.27.8.5.1"
PASSWORD_POLICY_REQUEST = (PASSWORD_POLICY_OID, False, None)
_POLICY_ERRORS = {0: "passwordExpired", 1: "accountLocked", 2: "changeAfterReset"}
_POLICY_STATES = {
    "passwordExpired": "password_expired",
    "accountLocked": "locked_out",
    "changeAfterReset": "must_change_password",
}


def _state(key: str, source: str) -> AccountState:
    said, password_right = _STATES[key]
    return AccountState(key, f"directory: {said} ({source})", password_right)


def account_state(result: dict) -> AccountState | None:
    """The state a bind's result reports, or None (a wrong password, or a directory that says nothing)."""
    error = _POLICY_ERRORS.get(_policy_error(result))
    if error is not None:
        return _state(_POLICY_STATES[error], f"password policy: {error}")
    if result.get("result") != INVALID_CREDENTIALS:
        return None
    match = _AD_DATA.search(result.get("message") or "")
    if match is None or (key := _AD_CODES.get(match.group(1).lower())) is None:
        return None
    return _state(key, f"Active Directory data {match.group(1).lower()}")


def _policy_error(result: dict) -> int | None:
    """The `error` of a password policy response control (SEQUENCE { warning [0] OPTIONAL, error [1]
    ENUMERATED OPTIONAL }), or None. Read by hand: ldap3 hands the control's value on undecoded."""
    value = ((result.get("controls") or {}).get(PASSWORD_POLICY_OID) or {}).get("value")
    if not isinstance(value, bytes) or len(value) < 2 or value[0] != 0x30 or value[1] >= 0x80:
        return None
    content, position = value[2 : 2 + value[1]], 0
    while position + 2 <= len(content):  # the response's own parts are a few bytes: short lengths only
        tag, length = content[position], content[position + 1]
        if tag == 0x81 and length >= 1:
            return int.from_bytes(content[position + 2 : position + 2 + length], "big")
        position += 2 + length
    return None


# The attribute LDAP_USER_FILTER matches the typed name against, e.g. uid in (uid={username}).
_NAME_ATTRIBUTE = re.compile(r"\(([A-Za-z][A-Za-z0-9-]*)=\{username\}\)")
MAX_NAME_LENGTH = 64  # the users table's column
# The audit trail's actor for what the directory's answer does to an account (at sign-in or re-check):
# nobody signed in did it, and "cli:NAME" would say someone at the server's shell did.
ACTOR = "directory"


def name_attribute(user_filter: str) -> str | None:
    """The one attribute the filter compares with {username}, or None if it names none or several."""
    names = {name.lower() for name in _NAME_ATTRIBUTE.findall(user_filter)}
    return names.pop() if len(names) == 1 else None


def entry_name(entry, attribute: str | None, typed: str) -> str:
    """The local row's key for a directory entry: the entry's own value of the name attribute.
    The directory's matching rules (case, full-width forms, spaces) decide which entry a typed name
    reaches; keying the row on what was typed would give one person a second account, one that the
    first account's deactivation does not cover. With several values, the smallest, so every
    spelling of one entry reaches the same row."""
    values = entry.entry_attributes_as_dict.get(attribute, []) if attribute else []
    names = sorted(folded_username(str(value)) for value in values if str(value).strip())
    if names and len(names[0]) <= MAX_NAME_LENGTH:
        return names[0]
    return folded_username(typed)


# What identifies an entry for as long as it exists, whatever its name: Active Directory's objectGUID
# (16 bytes), OpenLDAP's entryUUID (RFC 4530, text; operational, so sent only when asked for by name).
# A name alone is not enough: Active Directory gives a leaver's sAMAccountName to the next person, and
# LDAP_URL pointed at another directory (a merger, a test directory) finds another person under it.
IDENTITY_ATTRIBUTES = ("objectGUID", "entryUUID")


def entry_identity(entry) -> str | None:
    """The entry's stable identity as the users table keeps it (users.directory_entry_id): the UUID in
    its canonical text form, lower-case, the same form for both attributes. objectGUID is read from the
    raw bytes (little-endian, as Windows writes GUIDs), since ldap3 without a schema would pass some
    16-byte values through as text. None when the entry shows neither (a directory that hides them)."""
    raw = entry.entry_raw_attributes
    guid = raw.get("objectGUID") or []
    if len(guid) == 1 and len(guid[0]) == 16:
        return str(uuid.UUID(bytes_le=bytes(guid[0])))
    entry_uuid = raw.get("entryUUID") or []
    if len(entry_uuid) == 1:
        try:
            return str(uuid.UUID(bytes(entry_uuid[0]).decode("ascii")))
        except (UnicodeDecodeError, ValueError):
            pass
    _hidden_identity()
    return None


@cache  # once per process: every sign-in and every re-check would say it again
def _hidden_identity() -> None:
    log.warning(
        "the directory shows no objectGUID or entryUUID for its entries: directory accounts are told apart by "
        "name alone, so a name given to someone else reaches the earlier holder's account; let the service "
        "account read one of them (docs/sign-in.md)"
    )


def identity_changed(stored: str | None, seen: str | None) -> bool:
    """Whether the entry now under an account's name is another entry than the one the account was made
    for: someone else holds the name. Unknown on either side (an account from before 0015 not yet
    checked, a directory that hides the attributes) is not a change."""
    return stored is not None and seen is not None and stored != seen


def someone_else(stored: str, seen: str) -> str:
    """The audit trail's and the log's words for identity_changed."""
    return f"the directory entry under this name is another one (entry {seen}; the account's is {stored})"


def shown(identity: str | None) -> str:
    """An identity as the audit trail's details add it."""
    return f", directory entry {identity}" if identity else ""


def record_identity(user: User, identity: str | None, when: str) -> None:
    """Keep the identity of the entry under the name of `user`, an account made before 0015 (the caller
    commits). Conditional: of two requests at once one records it, and the other reads what the row
    holds then, to compare with identity_changed."""
    if user.directory_entry_id is not None or identity is None:
        return
    if changed_if(user, User.directory_entry_id.is_(None), directory_entry_id=identity):
        record_audit(ACTOR, "directory_identity_recorded", user.username, f"{when}{shown(identity)}")
    else:
        db.session.refresh(user)


configured = directory_configured  # LDAP_URL set: directory sign-in is on


def settings_problem(config) -> str | None:
    """What is wrong with the directory settings, checked at start-up so that a typo stops the app with
    a message instead of failing every sign-in; None when they are usable (or directory sign-in is off)."""
    # Checked with the directory off too: the job worker's schedule is built from it either way.
    if not 0 <= config["DIRECTORY_RECHECK_MINUTES"] <= 59:
        return "DIRECTORY_RECHECK_MINUTES must be a whole number of minutes from 1 to 59, or 0 for never."
    url = config["LDAP_URL"]
    if not url:
        return None
    if not url.startswith(("ldap://", "ldaps://")):
        return f"LDAP_URL must start with ldap:// or ldaps://, not {url!r}."
    if url.startswith("ldaps://") and config["LDAP_STARTTLS"]:
        return "LDAP_STARTTLS applies to ldap:// URLs; an ldaps:// connection is encrypted from the start."
    user_filter = config["LDAP_USER_FILTER"]
    if "{username}" not in user_filter:
        return f"LDAP_USER_FILTER must contain {{username}}, e.g. (uid={{username}}); it is {user_filter!r}."
    try:
        user_filter.format(username="x")
    except (KeyError, IndexError, ValueError):
        return "LDAP_USER_FILTER may contain no braces other than {username}."
    if not config["LDAP_USER_BASE"]:
        return "Directory sign-in needs LDAP_USER_BASE, where people are searched."
    if not (config["LDAP_ADMIN_GROUP_DN"] or config["LDAP_CLINICIAN_GROUP_DN"]):
        return "Directory sign-in needs LDAP_ADMIN_GROUP_DN or LDAP_CLINICIAN_GROUP_DN: the groups give the roles."
    if config["LDAP_CA_FILE"] and not os.path.isfile(config["LDAP_CA_FILE"]):
        return f"LDAP_CA_FILE {config['LDAP_CA_FILE']!r} is not a file."
    return None


def _server() -> Server:
    cfg = current_app.config
    url = cfg["LDAP_URL"]
    tls = None
    if url.startswith("ldaps://") or cfg["LDAP_STARTTLS"]:
        # The directory's certificate is always verified: against LDAP_CA_FILE, else the system's CAs.
        tls = Tls(validate=ssl.CERT_REQUIRED, ca_certs_file=cfg["LDAP_CA_FILE"] or None)
    # No schema read (get_info=NONE): the search names Active Directory's userAccountControl, which
    # OpenLDAP's schema lacks and ldap3 would refuse against it; a server ignores an attribute it
    # does not know.
    return Server(url, connect_timeout=cfg["LDAP_TIMEOUT_SECONDS"], tls=tls, get_info=NONE)


def _connection(server: Server, dn: str, password: str) -> Connection:
    cfg = current_app.config
    # auto_range off: ldap3's own reading of Active Directory's ranged values (memberOf;range=0-1499 for
    # an entry in over 1,500 groups) ends quietly at a refused range; the first range is used and the
    # rest counted as past the nested-group walk's bound (_ranged).
    conn = Connection(
        server,
        user=dn or None,
        password=password or None,
        receive_timeout=cfg["LDAP_TIMEOUT_SECONDS"],
        read_only=True,
        auto_range=False,
        # A referral is not followed: ldap3 would bind to whatever host the directory's referral names
        # with this connection's DN and password, without TLS on an ldap:// one, and the nested-group
        # walk reads the DNs in memberOf, which whoever manages a group sets. The app talks to LDAP_URL alone.
        auto_referrals=False,
    )
    conn.open()
    # A refused StartTLS must stop here: binding anyway would send the password in clear text.
    if cfg["LDAP_STARTTLS"] and not conn.start_tls():
        raise DirectoryUnavailable(f"StartTLS refused: {conn.result.get('description')}")
    return conn


def _dn_key(dn: str) -> str:
    """A DN in the one form DNs are compared in."""
    try:
        return safe_dn(dn).lower()
    except LDAPException:
        return dn.strip().lower()


def _same_dn(a: str, b: str) -> bool:
    return _dn_key(a) == _dn_key(b)


# A search's result codes that are answers: success, and sizeLimitExceeded (more than one entry matched,
# an ambiguous name: nobody). Anything else (noSuchObject: LDAP_USER_BASE or a group's DN missing, a
# referral, refused rights) says nothing about the person.
SIZE_LIMIT_EXCEEDED = 4
_ANSWERS = (0, SIZE_LIMIT_EXCEEDED)
REFERRAL, NO_SUCH_OBJECT = 10, 32


def _search(service: Connection, base: str, query: str, walk: bool = False, **options) -> list:
    """The entries a search found; DirectoryUnavailable when the directory did not answer the question.
    Read as "no entry", a base that does not exist (a typo in LDAP_USER_BASE, an OU renamed) made the
    re-check end every directory account's access as if everyone had left. `walk` is for the
    nested-group walk's reads of the groups a memberOf names alone: one that does not exist (deleted
    since) or that this server does not hold (a referral: another domain of an Active Directory forest)
    is no entry there, not an outage, which would refuse everyone the walk passes it for."""
    service.search(base, query, **options)
    code = service.result.get("result")
    if walk and code == REFERRAL:
        log.warning("directory group %r is held by another directory server (a referral, not followed)", base)
    if walk and code in (NO_SUCH_OBJECT, REFERRAL):
        return []
    if code not in _ANSWERS:
        raise DirectoryUnavailable(f"search of {base!r} refused: {service.result.get('description')}")
    return list(service.entries)


def _in_group(service: Connection, user_dn: str, member_of: list[str], group_dn: str) -> bool:
    """Directly in the group: by the person's memberOf, else by the group's member list (groupOfNames
    without the memberof overlay, whose members have no memberOf)."""
    if not group_dn:
        return False
    if any(_same_dn(dn, group_dn) for dn in member_of):
        return True
    query = f"(member={escape_filter_chars(user_dn)})"
    return bool(_search(service, group_dn, query, search_scope=BASE, attributes=["cn"]))


# The walk up from the person's groups through the groups they are in (docs/sign-in.md, "Nested
# groups"): memberOf names direct groups only, but Active Directory and OpenLDAP's memberof overlay keep
# it on group entries too. One BASE search per group entry read, never a person's entry or a member
# list. Bounded, as cycles and deep or wide trees are common in Active Directory: groups at most
# MAX_NESTING levels above the person's own are read, and at most MAX_GROUP_READS group entries per check.
MAX_NESTING = 8
MAX_GROUP_READS = 200


def _groups_above(service: Connection, entry, member_of: list[str], goal: str) -> set[str]:
    """The groups the person is in (_dn_key form): `member_of`, the entry's own, and breadth-first the
    groups those are in, until `goal` turns up (the admins' group, as admin beats clinician; or the only group
    configured). A walk cut short by the bound leaves out the groups past it, with a warning: the site
    moves the person up into a shallower group."""
    found = {_dn_key(dn) for dn in member_of}
    queue = deque((dn, 1) for dn in member_of)
    goal_key, reads, cut_short = _dn_key(goal), 0, _ranged(entry)
    while queue and goal_key not in found:
        dn, level = queue.popleft()
        if level > MAX_NESTING or reads == MAX_GROUP_READS:
            cut_short = True
            break
        reads += 1
        # A group deleted since (a dangling memberOf), hidden from the service account or held by another
        # server is skipped; any other refusal is the outage rule of _search.
        for group in _search(service, dn, "(objectClass=*)", walk=True, search_scope=BASE, attributes=["memberOf"]):
            cut_short |= _ranged(group)
            for above in _member_of(group):
                if _dn_key(above) not in found:
                    found.add(_dn_key(above))
                    queue.append((above, level + 1))
    if cut_short and goal_key not in found:
        log.warning(
            "directory entry %r: its groups not all read (at most %d levels up and %d group entries read per "
            "check); groups past them give no role",
            entry.entry_dn,
            MAX_NESTING,
            MAX_GROUP_READS,
        )
    return found


def _member_of(entry) -> list[str]:
    """The entry's memberOf values, or the first range of them (_ranged)."""
    return [
        str(dn)
        for name, values in entry.entry_attributes_as_dict.items()
        if name.lower() == "memberof" or name.lower().startswith("memberof;range=")
        for dn in values
    ]


def _ranged(entry) -> bool:
    """Whether Active Directory sent only the first 1,500 of the entry's memberOf values (memberOf;range=0-1499:
    an entry in more groups than that). The rest are not asked for: that is past MAX_GROUP_READS anyway,
    and the configured groups' member lists still show a direct member (_in_group)."""
    return any(name.lower().startswith("memberof;range=") for name in entry.entry_attributes_as_dict)


@contextmanager
def _service_account():
    """A connection bound as the service account; DirectoryUnavailable when the directory cannot be asked."""
    cfg = current_app.config
    try:
        server = _server()
        service = _connection(server, cfg["LDAP_BIND_DN"], cfg["LDAP_BIND_PASSWORD"])
        try:
            if not service.bind():
                raise DirectoryUnavailable(f"service account bind refused: {service.result.get('description')}")
            yield server, service
        finally:
            service.unbind()
    except LDAPException as exc:
        raise DirectoryUnavailable(f"{type(exc).__name__}: {exc}") from exc


def authenticate(username: str, password: str) -> DirectoryAnswer:
    """Ask the directory about `username`; raises DirectoryUnavailable when it cannot be asked."""
    with _service_account() as (server, service):
        return _check(server, service, username, password)


def lookup(username: str) -> DirectoryAnswer:
    """What the directory says of `username` today, without a password (the periodic re-check):
    found or not, and the role its groups give (None in neither group, or disabled in Active
    Directory). Raises DirectoryUnavailable when it cannot be asked."""
    with _service_account() as (_, service):
        entry, name = _find(service, username)
        if entry is None:
            return DirectoryAnswer(found=False)
        return DirectoryAnswer(found=True, role=_role(service, entry), name=name, identity=entry_identity(entry))


def _find(service: Connection, username: str):
    """The one entry `username` reaches and its local name, or (None, "")."""
    cfg = current_app.config
    query = cfg["LDAP_USER_FILTER"].format(username=escape_filter_chars(username))
    attribute = name_attribute(cfg["LDAP_USER_FILTER"])
    wanted = ["memberOf", "userAccountControl", *IDENTITY_ATTRIBUTES, *([attribute] if attribute else [])]
    entries = _search(service, cfg["LDAP_USER_BASE"], query, search_scope=SUBTREE, attributes=wanted, size_limit=2)
    # Nobody, or an ambiguous filter: no one whose password to check. More entries than were sent is
    # ambiguous too: a server whose own size limit is 1 (olcSizeLimit, an AD MaxPageSize) sent the first
    # of two entries the name matched, and that one's password signed in under the name.
    if len(entries) != 1 or service.result.get("result") == SIZE_LIMIT_EXCEEDED:
        return None, ""
    entry = entries[0]
    return entry, entry_name(entry, attribute, username)


# Active Directory's userAccountControl flag for a disabled account (the usual end of a leaver's account).
ACCOUNT_DISABLED = 0x2


def _role(service: Connection, entry) -> str | None:
    cfg = current_app.config
    attributes = entry.entry_attributes_as_dict
    control = attributes.get("userAccountControl", [])
    if control and str(control[0]).isdigit() and int(str(control[0])) & ACCOUNT_DISABLED:
        return None
    admins, clinicians = cfg["LDAP_ADMIN_GROUP_DN"], cfg["LDAP_CLINICIAN_GROUP_DN"]
    member_of = _member_of(entry)
    if _in_group(service, entry.entry_dn, member_of, admins):
        return "admin"
    # Not directly an admin: the person's groups, read once for both roles, nesting included. Someone
    # with no memberOf (or whose groups are in no others) costs no search here.
    groups = _groups_above(service, entry, member_of, admins or clinicians)
    if admins and _dn_key(admins) in groups:
        return "admin"
    if clinicians and _dn_key(clinicians) in groups:
        return "clinician"
    if _in_group(service, entry.entry_dn, [], clinicians):  # memberOf already compared, in `groups`
        return "clinician"
    return None


def _check(server: Server, service: Connection, username: str, password: str) -> DirectoryAnswer:
    entry, name = _find(service, username)
    if entry is None:
        return DirectoryAnswer(found=False)
    # An empty password makes an "unauthenticated" simple bind, which servers accept: never ask with one.
    if not password:
        return DirectoryAnswer(found=True)
    person = _connection(server, entry.entry_dn, password)
    try:
        bound = person.bind(controls=[PASSWORD_POLICY_REQUEST])
        state = account_state(person.result)
    finally:
        person.unbind()
    if not bound or state is not None:
        return DirectoryAnswer(found=True, state=state)
    return DirectoryAnswer(
        found=True, password_ok=True, role=_role(service, entry), name=name, identity=entry_identity(entry)
    )
