"""Path rules of the hub store: which model ids, versions and file paths are acceptable.

Pure functions, no I/O. Publishing uses them to refuse a path before it reaches the
store; the storage route uses them to refuse a request before any lookup. A path is a
sequence of segments; every segment is checked on its own (no empty, ``.``, ``..``,
NUL, control characters, backslash, slash, drive letter), so that no later join can
climb out of the directory it is joined to.
"""

from __future__ import annotations

import re
from urllib.parse import unquote

from accel.errors import UnsafePathError

__all__ = [
    "check_name",
    "check_relpath",
    "split_raw_path",
]

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,127}$")
_DRIVE_RE = re.compile(r"^[A-Za-z]:")
_MAX_SEGMENT = 255


def check_name(value: str, *, what: str = "model id") -> str:
    """Return ``value`` if it is a valid model id or version, else raise UnsafePathError.

    Ids and versions become one directory name each: letters, digits and ``._+-``,
    starting with a letter or digit (so never ``.`` or ``..``), at most 128 characters.
    """
    if not _NAME_RE.match(value):
        raise UnsafePathError(
            f"{what} {value!r} is not allowed",
            hint=f"a {what} uses letters, digits and . _ + - and starts with a letter or digit",
            path=value,
        )
    return value


def _check_segment(segment: str, whole: str, *, check_length: bool = True) -> None:
    bad = (
        not segment
        or segment in (".", "..")
        or (check_length and len(segment.encode("utf-8", "surrogatepass")) > _MAX_SEGMENT)
        or "/" in segment
        or "\\" in segment
        or any(ord(c) < 0x20 or ord(c) == 0x7F for c in segment)
    )
    if bad:
        raise UnsafePathError(f"file path {whole!r} is not allowed", path=whole)


def check_relpath(path: str) -> tuple[str, ...]:
    """Split a manifest file path (``a/b/c.bin``) into checked segments.

    Refuses absolute paths, drive letters, backslashes, NUL and control characters,
    and empty, ``.`` or ``..`` segments; the result joined with ``/`` equals ``path``.
    """
    if not path or path.startswith("/") or _DRIVE_RE.match(path):
        raise UnsafePathError(f"file path {path!r} is not allowed", path=path)
    segments = tuple(path.split("/"))
    for segment in segments:
        _check_segment(segment, path)
    return segments


def split_raw_path(raw: str) -> tuple[str, ...]:
    """Decode a raw (still percent-encoded) URL path tail exactly once, segment by segment.

    ``raw`` is what follows a route prefix, e.g. ``whisper/1.0/sub%20dir/a.bin``. It is
    split on literal ``/`` first and each segment is decoded afterwards, so an encoded
    ``%2F`` or ``%2e%2e`` becomes a segment that :func:`check_relpath` refuses instead of
    a separator or a parent reference; a double-encoded ``%252e`` decodes to the literal
    text ``%2e``. Raises UnsafePathError for anything that is not a clean relative path.
    Segment length is not checked: a segment too long for a file name is well formed but
    can never be listed, so the caller's lookup answers it (404) like any unlisted path.
    This is exactly what ``FILE_PATH_PATTERN`` in :mod:`accel.hub.openapi` describes.
    """
    raw = raw.split("?", 1)[0].split("#", 1)[0]
    if not raw:
        raise UnsafePathError("empty path", path="")
    try:
        segments = tuple(unquote(s, encoding="utf-8", errors="strict") for s in raw.split("/"))
    except UnicodeDecodeError as exc:
        raise UnsafePathError("path is not valid UTF-8", path=raw) from exc
    joined = "/".join(segments)
    for segment in segments:
        _check_segment(segment, joined, check_length=False)
    return segments
