"""Typed settings from the environment, and the one way a bad one stops a process.

A value a process cannot run with must stop it at start-up with one line naming the variable:
never a traceback for an administrator to decode, never a silent fallback (a mistyped `ture`
read as false turned rate limits off; a negative retention made `audit prune` delete the whole
audit trail). Unset or empty means the default, as docker compose passes `${VAR:-}` as empty.

Imports nothing from the app: config.py, gunicorn's master and the entrypoint's database probe
read their settings through it before anything else is loaded.
"""

from __future__ import annotations

import math
import os
import sys
from contextlib import contextmanager
from datetime import UTC, tzinfo
from zoneinfo import ZoneInfo, available_timezones

TRUE_WORDS = frozenset({"1", "true", "yes", "on"})
FALSE_WORDS = frozenset({"0", "false", "no", "off"})
# gunicorn's arbiter stops (instead of respawning the worker in a loop) when a worker exits with
# this status ("App failed to load"); the flask CLI, the job worker and the DICOM node exit with it too.
CONFIG_ERROR_EXIT = 4


# Upper bounds of periods: far beyond any sensible setting, and below what date arithmetic and
# timed waits can hold (a SESSION_MAX_HOURS of 10**8 ended in an OverflowError traceback).
SECONDS_A_DAY, HOURS_A_YEAR, MINUTES_A_YEAR = 86400, 8760, 525600


class ConfigError(RuntimeError):
    """A setting the app cannot run with; the message names the variable and what it takes."""


def _raw(name: str) -> str:
    return os.environ.get(name, "").strip()


def env_str(name: str, default: str) -> str:
    """The variable as set, blanks stripped; unset or empty is `default`."""
    return _raw(name) or default


def env_int(name: str, default: int, minimum: int = 0, maximum: int | None = None) -> int:
    value = _raw(name)
    if not value:
        return default
    try:
        number = int(value)
    except ValueError:
        raise ConfigError(f"{name} must be a whole number, not {value!r}") from None
    if number < minimum or (maximum is not None and number > maximum):
        allowed = f"from {minimum} to {maximum}" if maximum is not None else f"at least {minimum}"
        raise ConfigError(f"{name} must be {allowed}, not {number}")
    return number


def env_float(name: str, default: float, minimum: float = 0.0, maximum: float | None = None) -> float:
    value = _raw(name)
    if not value:
        return default
    try:
        number = float(value)
    except ValueError:
        raise ConfigError(f"{name} must be a number, not {value!r}") from None
    if not math.isfinite(number) or number < minimum or (maximum is not None and number > maximum):
        allowed = f"from {minimum:g} to {maximum:g}" if maximum is not None else f"of at least {minimum:g}"
        raise ConfigError(f"{name} must be a number {allowed}, not {value!r}")
    return number


def env_bool(name: str, default: bool) -> bool:
    value = _raw(name).lower()
    if not value:
        return default
    if value in TRUE_WORDS:
        return True
    if value in FALSE_WORDS:
        return False
    raise ConfigError(f"{name} must be true or false (also 1/0, yes/no, on/off), not {_raw(name)!r}")


def zone_named(name: str, value: str) -> tzinfo:
    """The IANA time zone `value` (Europe/Berlin), set as `name`. UTC needs no zone data; any other
    name needs the system's tz database or the `tzdata` package (requirements.txt), and a name that
    is in neither ("Berlin", "CET+1", a folder such as "Europe") stops the process."""
    if value == "UTC":
        return UTC
    if value not in available_timezones():
        raise ConfigError(
            f"{name} must be an IANA time zone name such as Europe/Berlin or America/New_York, not {value!r}"
        )
    return ZoneInfo(value)


def env_zone(name: str, default: str) -> str:
    """The zone's name as set (checked by zone_named), unset or empty is `default`."""
    value = env_str(name, default)
    zone_named(name, value)
    return value


@contextmanager
def exit_on_config_error(program: str):
    """Turn a ConfigError raised inside into one line on stderr and exit status CONFIG_ERROR_EXIT."""
    try:
        yield
    except ConfigError as exc:
        print(f"{program}: configuration error: {exc}", file=sys.stderr, flush=True)
        sys.exit(CONFIG_ERROR_EXIT)
