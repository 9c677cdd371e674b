"""Local path options of the CLI: a ``scheme://`` value is refused, never made a folder.

``Path("s3://bucket/x")`` is the relative path ``s3:/bucket/x``: without this check,
``accel publish --root s3://bucket/x`` silently creates a folder named ``s3:`` and copies
the model there. Every option that takes a local root, store, models dir or destination
uses :func:`local_path` as its argparse ``type``, so the check runs at parse time (on
environment defaults too) before anything is created. Pure: no filesystem access.
"""

from __future__ import annotations

import re
from pathlib import Path

from accel.errors import UnsupportedSchemeError

__all__ = ["local_path", "local_path_str", "reject_scheme"]

# RFC 3986 scheme, then "://": "C:\\x" and "a:b" stay local paths.
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")


def reject_scheme(value: str, *, what: str = "a local path") -> str:
    """``value`` itself, or :class:`UnsupportedSchemeError` if it is a ``scheme://`` URL."""
    m = _SCHEME.match(value)
    if m is not None:
        raise UnsupportedSchemeError(
            f"{value!r}: the {m.group(1).lower()}:// scheme is not supported here, expected {what}",
            value=value,
            scheme=m.group(1).lower(),
        )
    return value


def local_path(value: str) -> Path:
    """An argparse ``type`` for local paths: ``Path(value)``, or UnsupportedSchemeError.

    argparse turns only ``ValueError``/``TypeError`` into a usage message; this error
    passes through ``parse_args`` to ``accel.cli.main``, which prints its one line.
    """
    return Path(reject_scheme(value))


def local_path_str(value: str) -> str:
    """Like :func:`local_path` for options kept as text (an empty value stays "unset")."""
    return reject_scheme(value)
