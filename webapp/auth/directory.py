"""Sign-in against the hospital's staff directory (LDAP or Active Directory) with ldap3.

A service account finds the person's entry with LDAP_USER_FILTER, the person's own password is checked
by binding as that entry, and the role comes from the groups at every sign-in: members of
LDAP_ADMIN_GROUP_DN are admins, of LDAP_CLINICIAN_GROUP_DN clinicians, anyone else is refused.
Membership is read from the entry's `memberOf` (Active Directory, OpenLDAP's memberof overlay) or,
failing that, from the group's `member` list (groupOfNames), and then through the groups nested in it.
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
class DirectoryAnswer:
    found: bool  # an entry matched the user name
    password_ok: bool = False
    role: str | None = None  # "admin", "clinician", or None when in neither group
    name: str = ""  # the entry's own user name, lower-cased: the key of its local row
    identity: str | None = None  # the entry's stable identity (entry_identity), None if it shows none


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
    # auto_range off: ldap3's own reading of Active Directory's ranged values (member;range=0-1499) ends
    # quietly at a refused range, leaving a shorter member list that reads as "not a member"; _members
    # reads the ranges itself, each through _search. memberOf sent ranged is then absent, and the
    # group's own member list is asked instead (_in_group). No empty attributes added for those not
    # sent: with auto_range off, ldap3 then deletes a "member" the answer to member;range=1500-* lacks
    # (KeyError). Every reader here uses .get().
    conn = Connection(
        server,
        user=dn or None,
        password=password or None,
        receive_timeout=cfg["LDAP_TIMEOUT_SECONDS"],
        read_only=True,
        auto_range=False,
        return_empty_attributes=False,
        # A referral is not followed: ldap3 would bind to whatever host the directory's referral names
        # with this connection's DN and password, without TLS on an ldap:// one, and the walk reads
        # member DNs that anyone who manages a group can set. The app talks to LDAP_URL alone.
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
_ANSWERS = (0, 4)
REFERRAL, NO_SUCH_OBJECT = 10, 32


def _search(service: Connection, base: str, query: str, member: bool = False, **options) -> list:
    """The entries a search found; DirectoryUnavailable when the directory did not answer the question.
    Read as "no entry", a base that does not exist (a typo in LDAP_USER_BASE, an OU renamed) made the
    re-check end every directory account's access as if everyone had left. `member` is for the
    nested-group walk's reads of a group's members alone: one that does not exist (deleted since) or
    that this server does not hold (a referral: another domain of an Active Directory forest) is no
    entry there, not an outage, which would refuse everyone the walk passes it for."""
    service.search(base, query, **options)
    code = service.result.get("result")
    if member and code == REFERRAL:
        log.warning("directory group member %r is held by another directory server (a referral, not followed)", base)
    if member and code in (NO_SUCH_OBJECT, REFERRAL):
        return []
    if code not in _ANSWERS:
        raise DirectoryUnavailable(f"search of {base!r} refused: {service.result.get('description')}")
    return list(service.entries)


def _in_group(service: Connection, user_dn: str, member_of: list[str], group_dn: str) -> bool:
    if not group_dn:
        return False
    if any(_same_dn(dn, group_dn) for dn in member_of):
        return True
    query = f"(member={escape_filter_chars(user_dn)})"
    if _search(service, group_dn, query, search_scope=BASE, attributes=["cn"]):
        return True
    return _in_nested_group(service, user_dn, group_dn)


# The walk down from a configured group through the groups nested in it (docs/sign-in.md): AD's memberOf
# and the group's member list name direct groups only. Bounded, as cycles and deep or wide trees are
# common in Active Directory: groups at most MAX_NESTING levels below the configured one are read, and
# at most MAX_NESTED_READS entries per group checked (one BASE search each; a person among the members
# is read too, as only its entry tells it from a group).
MAX_NESTING = 8
MAX_NESTED_READS = 200


def _in_nested_group(service: Connection, user_dn: str, group_dn: str) -> bool:
    """Whether `user_dn` is in a group nested in `group_dn`, breadth-first. A walk cut short by the bound
    is "not a member", with a warning: the site moves the person up into a shallower group."""
    user = _dn_key(user_dn)
    seen = {_dn_key(group_dn)}
    queue = deque([(group_dn, 0)])
    reads = 0
    cut_short = False
    while queue:
        if reads == MAX_NESTED_READS:
            cut_short = True
            break
        dn, depth = queue.popleft()
        reads += 1
        # The configured group must be there (a missing one is the outage rule of _search); a member
        # deleted since (a dangling member), hidden from the service account or held by another server
        # is skipped.
        for member in _members(service, dn, member=depth > 0):
            key = _dn_key(member)
            if key == user:
                return True
            if key in seen:
                continue
            seen.add(key)
            if depth == MAX_NESTING:
                cut_short = True
            else:
                queue.append((member, depth + 1))
    if cut_short:
        log.warning(
            "directory group %r: nested groups not all read (at most %d levels below it and %d entries read "
            "per check); %r counted as not a member",
            group_dn,
            MAX_NESTING,
            MAX_NESTED_READS,
            user_dn,
        )
    return False


def _members(service: Connection, dn: str, member: bool) -> list[str]:
    """The `member` values of the entry at `dn`: none for a person, or a member no longer there. Active
    Directory sends a large group's values a range at a time (member;range=0-1499, then from 1500 on,
    the last range ending in *); every range is read, and a range refused is an outage, not an end."""
    wanted, start = "member", 0
    members: list[str] = []
    while True:
        entries = _search(service, dn, "(objectClass=*)", member=member, search_scope=BASE, attributes=[wanted])
        if not entries:
            return members
        values = {name.lower(): value for name, value in entries[0].entry_attributes_as_dict.items()}
        ranged = [name for name in values if name.startswith("member;range=")]
        if not ranged:
            return members + [str(value) for value in values.get("member", [])]
        members += [str(value) for value in values[ranged[0]]]
        last = ranged[0].rpartition("-")[2]
        if last == "*":
            return members
        if not last.isdigit() or int(last) < start:  # a range that does not move on would loop
            raise DirectoryUnavailable(f"search of {dn!r} sent the range {ranged[0]!r}")
        start = int(last) + 1
        wanted = f"member;range={start}-*"


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
    if len(entries) != 1:  # nobody, or an ambiguous filter: no one whose password to check
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
    member_of = [str(dn) for dn in attributes.get("memberOf", [])]
    if _in_group(service, entry.entry_dn, member_of, cfg["LDAP_ADMIN_GROUP_DN"]):
        return "admin"
    if _in_group(service, entry.entry_dn, member_of, cfg["LDAP_CLINICIAN_GROUP_DN"]):
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
        if not person.bind():
            return DirectoryAnswer(found=True)
    finally:
        person.unbind()
    return DirectoryAnswer(
        found=True, password_ok=True, role=_role(service, entry), name=name, identity=entry_identity(entry)
    )
