"""Password rules and hashing with Argon2id (argon2-cffi's defaults follow RFC 9106)."""

from functools import cache

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from flask import current_app, has_app_context
from zxcvbn.frequency_lists import FREQUENCY_LISTS

MIN_LENGTH = 12
MAX_LENGTH = 256


@cache
def _common_passwords() -> frozenset[str]:
    # zxcvbn ships the 30,000 most common passwords of real leaks; it is maintained, offline, and
    # spares us a hand-typed list. Compared case-insensitively: "Qwerty123456" is no better.
    return frozenset(FREQUENCY_LISTS["passwords"])


def password_problem(password: str) -> str | None:
    """Why `password` may not be set, in words for the person choosing it; None if it may."""
    if len(password) < MIN_LENGTH:
        return f"Passwords need at least {MIN_LENGTH} characters."
    if len(password) > MAX_LENGTH:
        return f"Passwords may have at most {MAX_LENGTH} characters."
    if password.lower() in _common_passwords():
        return "That password is on a list of commonly used passwords; choose another."
    return None


_strong = PasswordHasher()
_fast = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)


def _hasher() -> PasswordHasher:
    if has_app_context() and current_app.config.get("ARGON2_FAST"):
        return _fast
    return _strong


def hash_password(password: str) -> str:
    return _hasher().hash(password)


def verify_password(password_hash: str, password: str) -> bool:
    try:
        return _hasher().verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


@cache
def _dummy_hash(hasher: PasswordHasher) -> str:
    return hasher.hash("no account has this password")


def verify_nothing(password: str) -> bool:
    """The same Argon2 work as a real check, for a user name with no local password: answering an
    unknown name faster than a known one would tell an attacker which names exist. Always False."""
    verify_password(_dummy_hash(_hasher()), password)
    return False
