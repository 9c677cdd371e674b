"""Hub stores behind one interface (:class:`~accel.hub.stores.base.ModelStore`): a local
directory (the embedded default) or an S3-compatible bucket.

``open_store("DIR")`` or ``open_store("s3://BUCKET/PREFIX", ...)`` is the one place that
picks the implementation; everything else (catalog, ``/storage``, publish, gc) calls
the interface.
"""

from __future__ import annotations

import os
from pathlib import Path

from accel.errors import UnsupportedSchemeError, UsageError
from accel.hub.stores.base import GcReport, ModelStore, PublishRequest, Sender, StoredModel
from accel.hub.stores.directory import DirectoryStore
from accel.hub.stores.s3client import is_s3_url, parse_s3_url

__all__ = [
    "DirectoryStore",
    "GcReport",
    "ModelStore",
    "PublishRequest",
    "Sender",
    "StoredModel",
    "default_state_dir",
    "is_s3_url",
    "open_store",
]


def default_state_dir() -> Path:
    """``$XDG_STATE_HOME/accel/hub`` (``~/.local/state/accel/hub``)."""
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "accel" / "hub"


def open_store(
    spec: str | Path,
    *,
    s3_endpoint: str | None = None,
    state_dir: Path | None = None,
    presign_ttl: int = 3600,
    storage_mode: str = "redirect",
    poll_s: float = 2.0,
) -> ModelStore:
    """The store ``spec`` names: ``s3://BUCKET[/PREFIX]`` or a directory path.

    Other ``scheme://`` values are refused (a typo must not become a local directory).
    """
    text = str(spec)
    if is_s3_url(text):
        from accel.hub.stores.s3 import STORAGE_MODES, S3Store

        if storage_mode not in STORAGE_MODES:
            raise UsageError(f"--storage-mode {storage_mode!r} is not one of {STORAGE_MODES}")
        if presign_ttl < 1:
            raise UsageError(f"--presign-ttl {presign_ttl} must be at least 1 second")
        return S3Store(
            parse_s3_url(text),
            endpoint=s3_endpoint,
            state_dir=state_dir or default_state_dir(),
            presign_ttl=presign_ttl,
            storage_mode=storage_mode,
            poll_s=poll_s,
        )
    if "://" in text:
        scheme = text.split("://", 1)[0].lower()
        raise UnsupportedSchemeError(
            f"{text!r}: the {scheme}:// scheme is not supported here, expected a directory "
            "or s3://BUCKET[/PREFIX]",
            value=text,
            scheme=scheme,
        )
    return DirectoryStore(Path(text))
