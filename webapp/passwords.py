"""Password hashing with Argon2id (argon2-cffi's defaults follow RFC 9106)."""

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from flask import current_app, has_app_context

MIN_LENGTH = 10
MAX_LENGTH = 256


def password_problem(password: str) -> str | None:
    """Why `password` may not be set, in words for the person choosing it; None if it may."""
    if len(password) < MIN_LENGTH:
        return f"Passwords need at least {MIN_LENGTH} characters."
    if len(password) > MAX_LENGTH:
        return f"Passwords may have at most {MAX_LENGTH} characters."
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
