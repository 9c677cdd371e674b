"""Which request headers may follow a redirect to another origin.

Pure rules, standard library only (the worker process imports this): a redirect to
another origin (scheme, host or port differ) drops every header that carries a
credential, as curl and requests do, since the new origin was chosen by the server,
not by the user. The built-in list is :data:`CREDENTIAL_HEADERS`; a caller marks more
with ``secret_headers`` (``accel get --header-secret``).
"""

from __future__ import annotations

from collections.abc import Iterable

__all__ = ["CREDENTIAL_HEADERS", "strip_credentials"]

#: never sent to an origin the user did not name (lower case)
CREDENTIAL_HEADERS = frozenset(
    {
        "authorization",
        "proxy-authorization",
        "cookie",
        "x-api-key",
        "x-auth-token",
        "private-token",
        "x-amz-security-token",
    }
)


def strip_credentials(
    headers: Iterable[tuple[str, str]], secret: Iterable[str] = ()
) -> list[tuple[str, str]]:
    """``headers`` without the credential headers and the caller's ``secret`` ones."""
    drop = CREDENTIAL_HEADERS | {s.lower() for s in secret}
    return [(k, v) for k, v in headers if k.lower() not in drop]
