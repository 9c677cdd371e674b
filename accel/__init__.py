"""accel: a multiprocess chunked download accelerator and model manager.

The public surface is small: ``download``/``adownload`` for one URL, ``ModelManager`` for
model versions from a hub, and the error types. Everything else is internal.
"""

import typing as _typing

from accel.errors import (
    AccelError,
    AuthError,
    BadManifestError,
    CheckpointError,
    ConfigError,
    DownloadError,
    FilesystemError,
    HTTPStatusError,
    HubError,
    InsufficientDiskSpaceError,
    IntegrityError,
    InternalError,
    LockTimeoutError,
    ModelNotAvailableError,
    NotFoundError,
    ProtocolViolationError,
    PublishConflictError,
    RangeNotSupportedError,
    RemoteChangedError,
    StallError,
    UnsafePathError,
    UnsupportedSchemeError,
    UsageError,
)

__version__ = "0.1.0"

if _typing.TYPE_CHECKING:
    from accel.fetch.engine import adownload, download
    from accel.manager import ModelManager

__all__ = [
    "AccelError",
    "AuthError",
    "BadManifestError",
    "CheckpointError",
    "ConfigError",
    "DownloadError",
    "FilesystemError",
    "HTTPStatusError",
    "HubError",
    "InsufficientDiskSpaceError",
    "IntegrityError",
    "InternalError",
    "LockTimeoutError",
    "ModelManager",
    "ModelNotAvailableError",
    "NotFoundError",
    "ProtocolViolationError",
    "PublishConflictError",
    "RangeNotSupportedError",
    "RemoteChangedError",
    "StallError",
    "UnsafePathError",
    "UnsupportedSchemeError",
    "UsageError",
    "adownload",
    "download",
]


def __getattr__(name: str) -> _typing.Any:
    # Imported on first use: worker processes import ``accel`` when they spawn and must
    # not pay for the manager's imports (aiohttp, pydantic, portalocker).
    if name == "ModelManager":
        from accel.manager import ModelManager

        return ModelManager
    if name in ("adownload", "download"):
        from accel.fetch import engine

        return getattr(engine, name)
    raise AttributeError(f"module 'accel' has no attribute {name!r}")
