"""CXR Screen, the web app. `create_app` lives in `webapp.app`.

Importing this package imports nothing else, so that `webapp.inference` (shared with
`training/`) can be imported without Flask installed.
"""

from __future__ import annotations


def create_app(*args, **kwargs):
    from .app import create_app as factory

    return factory(*args, **kwargs)
