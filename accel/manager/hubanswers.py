"""What a hub answer must be before the manager acts on it (pure: bytes and values in,
typed values or :class:`~accel.errors.BadManifestError` out).

Owns the one translation of the hub's JSON answers (a manifest, a catalog entry, the
usage ranking) into the schema's models: JSON decoding, the pydantic schema, and the
rules a schema cannot state, which otherwise surface late and far away (an
``UnsafePathError`` in planning, an ``IntegrityError`` after the whole download, an
``OSError`` from a rename, a file of another model overwritten):

- a manifest is of the model and version asked for;
- its file paths are safe relative paths (no ``..``, absolute, backslash, NUL, empty or
  ``.`` segment), each segment short enough for its ``.part.json`` to fit ``NAME_MAX``,
  listed once, and no file sits where another needs a directory or its temp files;
- every sha256 and block digest is 64 hex digits and a file has either no block digests
  or one per block.

Every failure names the model, the version and the first offending field
(``files[0].size_bytes``), so an install ends at once with one clear line and nothing
written. Never does I/O (the hub client does, in ``hubclient.py``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

from pydantic import ValidationError

from accel.errors import BadManifestError, UnsafePathError
from accel.manager.fsutil import safe_relpath, safe_segment
from accel.schema import ModelInfo, RankingEntry, VersionManifest

__all__ = [
    "decode",
    "field_name",
    "parse_catalog",
    "parse_manifest",
    "parse_model_info",
    "parse_ranking",
]

_HEX64 = re.compile(r"[0-9a-f]{64}")

#: ``NAME_MAX`` (255) less the longest suffix the engine adds beside a file (``.part.json``)
_MAX_SEGMENT_BYTES = 255 - len(".part.json")

#: suffixes of the files the engine writes beside a file while fetching it
_TEMP_SUFFIXES = (".part", ".part.json")


def field_name(loc: Sequence[int | str]) -> str:
    """A pydantic location as a reader writes it: ``("files", 0, "path")`` -> ``files[0].path``."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _bad(
    what: str, problem: str, *, model_id: str | None, version: str | None, field: str, **facts: Any
) -> BadManifestError:
    where = f"field {field!r}: " if field else ""
    message = f"the hub's {what} is not valid: {where}{problem}".replace("\n", " ")
    return BadManifestError(message, model_id=model_id, version=version, field=field, **facts)


def decode(raw: bytes, what: str, *, model_id: str | None, version: str | None = None) -> Any:
    """The JSON value of an answer's body, or :class:`BadManifestError` ("not JSON")."""
    try:
        return json.loads(raw)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError, bad UTF-8, 5000-digit ints
        start = raw[:40].decode("utf-8", "replace")
        shown = f"it starts {start!r}" if raw.strip() else "the body is empty"
        err = _bad(what, f"not JSON ({shown})", model_id=model_id, version=version, field="")
        # JSON nested thousands deep: the depth is the whole story, and a RecursionError
        # kept as the cause only trips whoever renders it (pytest did, on Python 3.11).
        raise err from (None if isinstance(exc, RecursionError) else exc)


def _validate(
    model: Any, body: Any, what: str, *, model_id: str | None, version: str | None
) -> Any:
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        errors = exc.errors(include_url=False, include_input=False)
        first = errors[0]
        field = field_name(first["loc"])
        problem = str(first["msg"]) if field else f"{first['msg']} (the whole answer)"
        if len(errors) > 1:
            problem += f" (and {len(errors) - 1} more problems)"
        raise _bad(
            what,
            problem,
            model_id=model_id,
            version=version,
            field=field,
            fields=[field_name(e["loc"]) for e in errors[:10]],
        ) from exc


def parse_manifest(
    body: Any, model_id: str, version: str, *, need_blocks: bool = True
) -> VersionManifest:
    """``GET .../versions/{version}/manifest`` as a manifest that is safe to install.

    ``need_blocks=False``: a manifest built from an HF endpoint's siblings (no blake3 blocks),
    held to every other rule.
    """
    what = f"manifest of {model_id}@{version}"

    def bad(field: str, problem: str) -> BadManifestError:
        return _bad(what, problem, model_id=model_id, version=version, field=field)

    manifest: VersionManifest = _validate(
        VersionManifest, body, what, model_id=model_id, version=version
    )
    if manifest.model_id != model_id:
        raise bad("model_id", f"names model {manifest.model_id!r}, not {model_id!r}")
    if manifest.version != version:
        raise bad("version", f"names version {manifest.version!r}, not {version!r}")
    seen: dict[str, int] = {}
    for i, f in enumerate(manifest.files):
        field = f"files[{i}]"
        try:
            rel = safe_relpath(f.path)
        except UnsafePathError as exc:
            raise bad(f"{field}.path", exc.message) from exc
        if any(len(p.encode()) > _MAX_SEGMENT_BYTES for p in rel.parts):
            raise bad(
                f"{field}.path", f"a segment of {f.path!r} is over {_MAX_SEGMENT_BYTES} bytes"
            )
        if f.path in seen:
            raise bad(f"{field}.path", f"{f.path!r} is listed twice (also files[{seen[f.path]}])")
        seen[f.path] = i
        if not _HEX64.fullmatch(f.sha256):
            raise bad(f"{field}.sha256", "not a SHA256 (64 lowercase hex digits)")
        if f.chunks is None:
            if need_blocks:
                raise bad(f"{field}.chunks", "missing (a hub manifest has block digests)")
            continue
        digests = f.chunks.digests
        for j, d in enumerate(digests):
            if not _HEX64.fullmatch(d):
                raise bad(f"{field}.chunks.digests[{j}]", "not a blake3 digest (64 hex digits)")
        blocks = -(-f.size_bytes // f.chunks.size)
        if digests and len(digests) != blocks:
            raise bad(
                f"{field}.chunks.digests",
                f"{len(digests)} block digests for {f.size_bytes} bytes in blocks of "
                f"{f.chunks.size} (needs {blocks}, or none)",
            )
    for i, base in enumerate(manifest.mirrors):
        u = urlsplit(base)
        if u.scheme not in ("http", "https") or not u.netloc or u.query or u.fragment:
            raise bad(f"mirrors[{i}]", f"{base!r} is not an http(s) base URL")
    for path, i in seen.items():
        parts = path.split("/")
        for n in range(1, len(parts)):
            parent = "/".join(parts[:n])
            if parent in seen:
                raise bad(f"files[{i}].path", f"{path!r} needs {parent!r} to be a directory")
        for suffix in _TEMP_SUFFIXES:
            if path.endswith(suffix) and path[: -len(suffix)] in seen:
                raise bad(
                    f"files[{i}].path", f"{path!r} is the temp file of {path[: -len(suffix)]!r}"
                )
    return manifest


def parse_model_info(body: Any, model_id: str) -> ModelInfo:
    """``GET /api/models/{model_id}`` as a catalog entry of that model."""
    what = f"catalog entry of {model_id}"
    info: ModelInfo = _validate(ModelInfo, body, what, model_id=model_id, version=None)
    if info.id != model_id:
        raise _bad(
            what,
            f"names model {info.id!r}, not {model_id!r}",
            model_id=model_id,
            version=None,
            field="id",
        )
    if info.default_version is not None:
        try:
            safe_segment(info.default_version, "version")
        except UnsafePathError as exc:
            raise _bad(
                what, exc.message, model_id=model_id, version=None, field="default_version"
            ) from exc
    return info


def parse_catalog(body: Any) -> list[ModelInfo]:
    """``GET /api/models``: a list of catalog entries."""
    if not isinstance(body, list):
        raise _bad("model catalog", "is not a list", model_id=None, version=None, field="")
    return [
        _validate(ModelInfo, item, "model catalog", model_id=None, version=None) for item in body
    ]


def parse_ranking(body: Any) -> list[RankingEntry]:
    """``GET /api/model-usage/ranking`` as its rows."""
    what = "usage ranking"
    if not isinstance(body, list):
        raise _bad(what, "not a JSON list", model_id=None, version=None, field="")
    return [
        _validate(RankingEntry, item, f"{what} (row {i})", model_id=None, version=None)
        for i, item in enumerate(body)
    ]
