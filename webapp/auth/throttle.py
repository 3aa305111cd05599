"""Sign-in throttling by progressive delays, with counters that parallel attempts cannot overrun.

Failures are counted per account *and address* pair, and per address. After the free allowance, each
further try on a key must wait twice as long as the one before (15 s, 30 s, 60 s ... up to a cap), so
guessing slows to a crawl while nobody can lock an account out from elsewhere: wrong passwords sent
for "admin" from one machine do not delay the admin signing in at another.

An attempt *claims* its try before the password is checked, by compare-and-set on the counter rows
(UPDATE ... WHERE failures = <the value read>), and a correct password gives the claim back. Forty
parallel attempts therefore get exactly the allowance of password checks, never more.
"""

from __future__ import annotations

import math
import unicodedata
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from flask import current_app
from sqlalchemy import delete, insert, select, update
from sqlalchemy.exc import IntegrityError, OperationalError

from ..extensions import db
from ..models import SignInCounter, folded_username, utcnow
from ..pseudonyms import keyed_hash

FIRST_DELAY_SECONDS = 15
# Compare-and-set rounds lost to a concurrent attempt before this one gives up and asks to retry.
MAX_ROUNDS = 8


@dataclass(frozen=True)
class Claim:
    keys: tuple[str, ...]
    wait_seconds: int = 0  # >0: refused, try again after this long

    @property
    def granted(self) -> bool:
        return self.wait_seconds == 0


def _keys(username: str, address: str) -> dict[str, int]:
    cfg = current_app.config
    address = address[:64]
    # The name as typed may be a password typed into the wrong field: the counter keeps only its keyed
    # hash (the audit trail keeps no unknown name at all), never the text, of its spelling-free form.
    name = keyed_hash(counted_name(username), "sign-in-name")
    return {
        f"pair:{name}|{address}": cfg["LOGIN_MAX_FAILURES_PER_ACCOUNT"],
        f"addr:{address}": cfg["LOGIN_MAX_FAILURES_PER_ADDRESS"],
    }


def counted_name(username: str) -> str:
    """The name a pair's counter is kept for: every spelling a directory may take for one name gives the
    same. OpenLDAP takes "ａｌｉｃｅ" (full-width) and "ALİCE" (lower-cased: i and a combining dot) for
    alice, and a counter per spelling gave her account a fresh allowance for each (32 for a five-letter
    name). Folded as account names are, then without combining marks and invisible format characters:
    merging more names than a directory does only makes them share a counter."""
    decomposed = unicodedata.normalize("NFKD", folded_username(username))
    return "".join(ch for ch in decomposed if unicodedata.category(ch) not in ("Mn", "Cf"))


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)  # SQLite hands back naive times


def delay_seconds(failures: int, allowance: int) -> int:
    """How long after the last failure the next try may come."""
    if failures < allowance:
        return 0
    return min(FIRST_DELAY_SECONDS * 2 ** (failures - allowance), current_app.config["LOGIN_MAX_DELAY_SECONDS"])


def claim(username: str, address: str) -> Claim:
    """Reserve one password check for this user name from this address, or say how long to wait."""
    keys = _keys(username, address)
    for _ in range(MAX_ROUNDS):
        try:
            wait = _try_claim(keys)
        except (IntegrityError, OperationalError):
            # Another attempt created the row first, or held the SQLite write lock too long: read again.
            db.session.rollback()
            continue
        if wait is not None:
            return Claim(tuple(keys), wait)
    return Claim(tuple(keys), 1)


def _try_claim(keys: dict[str, int]) -> int | None:
    """0 when every counter was advanced, the wait when one forbids a try now, None when a race was lost."""
    now = utcnow()
    window = timedelta(minutes=current_app.config["LOGIN_WINDOW_MINUTES"])
    # Plain rows, not ORM objects: an object kept from an earlier read would show stale counts.
    query = select(SignInCounter.key, SignInCounter.failures, SignInCounter.last_failure_at).where(
        SignInCounter.key.in_(keys)
    )
    rows = {row.key: row for row in db.session.execute(query)}
    waits = []
    for key, allowance in keys.items():
        row = rows.get(key)
        # Only a counter past its allowance delays. Its time may lie ahead of `now` (a parallel attempt
        # that read the clock later but committed first, a replica whose clock runs ahead): read as a
        # wait, that told a double-click's second post "wait 1 seconds" with no failure behind it.
        delay = delay_seconds(row.failures, allowance) if row else 0
        if delay and now - _aware(row.last_failure_at) < window:
            ready_at = _aware(row.last_failure_at) + timedelta(seconds=delay)
            waits.append((ready_at - now).total_seconds())
    if waits and max(waits) > 0:
        db.session.rollback()
        return max(1, math.ceil(max(waits)))  # never shorter than the wait: a client that obeys it gets in
    for key in keys:
        row = rows.get(key)
        if row is None:
            db.session.execute(insert(SignInCounter).values(key=key, failures=1, last_failure_at=now))
            continue
        fresh = now - _aware(row.last_failure_at) < window
        result = db.session.execute(
            update(SignInCounter)
            .where(SignInCounter.key == key, SignInCounter.failures == row.failures)
            .values(failures=row.failures + 1 if fresh else 1, last_failure_at=now)
        )
        if result.rowcount != 1:
            db.session.rollback()
            return None
    forget_lapsed(now)
    db.session.commit()
    return 0


def forget_lapsed(now: datetime) -> int:
    """Delete the counters quiet for a whole window: they are no longer evidence of anything, and each
    holds a client address. Done at each granted try, and by `flask audit prune` for the counters
    left after the last try (a quiet night, a site that signs in through the directory rarely)."""
    window = timedelta(minutes=current_app.config["LOGIN_WINDOW_MINUTES"])
    return db.session.execute(delete(SignInCounter).where(SignInCounter.last_failure_at < now - window)).rowcount


def succeeded(claim_: Claim) -> None:
    """A correct password: the pair's counter starts again, and the address's claim is given back (a
    ward workstation where many people sign in all day must not collect failures)."""
    db.session.execute(delete(SignInCounter).where(SignInCounter.key == claim_.keys[0]))
    _decrement(claim_.keys[1:])


def give_back(claim_: Claim) -> None:
    """The try never reached a password check (the directory was down): it does not count."""
    _decrement(claim_.keys)


def _decrement(keys) -> None:
    db.session.execute(
        update(SignInCounter)
        .where(SignInCounter.key.in_(keys), SignInCounter.failures > 0)
        .values(failures=SignInCounter.failures - 1)
    )
    db.session.commit()
