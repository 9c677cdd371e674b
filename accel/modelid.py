"""Model ids: ``name`` or ``org/name`` (Hugging Face's shape), and their directory names.

Pure, no I/O; shared by the hub (store, routes) and the node (models dir), which is why
it sits at the bottom of the package. Every segment is what a version name may be
(letters, digits, ``._+-``, starting with a letter or digit, at most 128 characters)
and never contains ``--`` (Hugging Face refuses it too). On disk an id is one directory
named as Hugging Face's cache names repos: ``org/name`` -> ``org--name``. Because no
segment holds ``--`` and none starts with ``-``, the directory name maps back to exactly
one id (``a-/b`` is ``a---b``: only the split ``a-`` + ``b`` gives two valid segments).
"""

from __future__ import annotations

import re

from accel.errors import UnsafePathError

__all__ = [
    "MODEL_ID_PATTERN",
    "MODEL_ID_SEGMENT_MAX",
    "MODEL_ID_SEGMENT_PATTERN",
    "check_model_id",
    "model_dir_name",
    "model_id_from_dir",
]

_SEGMENT = r"(?!.*--)[A-Za-z0-9][A-Za-z0-9._+-]{0,127}"
_SEGMENT_RE = re.compile(rf"^{_SEGMENT}$")
#: the JSON Schema pattern of a model id (one or two segments), as check_model_id rules
MODEL_ID_PATTERN = (
    r"^(?!.*--)[A-Za-z0-9][A-Za-z0-9._+-]{0,127}(?:/[A-Za-z0-9][A-Za-z0-9._+-]{0,127})?$"
)
#: one segment of an id (``name``, or ``org`` / ``name`` of ``org/name``) as a JSON Schema
#: pattern without lookaround (generators of schema-valid data need none): every ``-``
#: but a last one is followed by another character, so ``--`` cannot occur; the length
#: is :data:`MODEL_ID_SEGMENT_MAX` (``maxLength``, not in the pattern)
MODEL_ID_SEGMENT_PATTERN = r"^[A-Za-z0-9](?:-?[A-Za-z0-9._+])*-?$"
MODEL_ID_SEGMENT_MAX = 128
_HINT = (
    "a model id is NAME or ORG/NAME; each part uses letters, digits and . _ + -, "
    "starts with a letter or digit and has no '--'"
)


def _segment_ok(segment: str) -> bool:
    return bool(_SEGMENT_RE.fullmatch(segment))  # fullmatch: "$" would let "a\n" through


def check_model_id(value: str) -> str:
    """Return ``value`` if it is a valid ``name`` or ``org/name``, else raise UnsafePathError."""
    parts = value.split("/")
    if len(parts) > 2 or not all(_segment_ok(p) for p in parts):
        raise UnsafePathError(f"model id {value!r} is not allowed", hint=_HINT, path=value)
    return value


def model_dir_name(model_id: str) -> str:
    """The one directory name of a model id: ``org/name`` -> ``org--name``."""
    return check_model_id(model_id).replace("/", "--")


def model_id_from_dir(name: str) -> str:
    """The model id a directory name stands for (the inverse of :func:`model_dir_name`)."""
    if _segment_ok(name):
        return name
    start = 0
    while (i := name.find("--", start)) != -1:
        org, rest = name[:i], name[i + 2 :]
        if _segment_ok(org) and _segment_ok(rest):
            return f"{org}/{rest}"
        start = i + 1
    raise UnsafePathError(f"directory {name!r} is not a model id", hint=_HINT, path=name)
