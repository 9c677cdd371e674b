"""accel: a multiprocess chunked download accelerator and model manager.

The public surface is small: ``download``/``adownload`` for one URL, ``ModelManager`` for
model versions from a hub, and the error types. Everything else is internal.
"""

from accel.errors import (
    AccelError,
    AuthError,
    CheckpointError,
    ConfigError,
    DownloadError,
    HTTPStatusError,
    HubError,
    InsufficientDiskSpaceError,
    IntegrityError,
    LockTimeoutError,
    ModelNotAvailableError,
    NotFoundError,
    ProtocolViolationError,
    PublishConflictError,
    RangeNotSupportedError,
    RemoteChangedError,
    StallError,
    UnsafePathError,
    UsageError,
)

__version__ = "0.1.0"

__all__ = [
    "AccelError",
    "AuthError",
    "CheckpointError",
    "ConfigError",
    "DownloadError",
    "HTTPStatusError",
    "HubError",
    "InsufficientDiskSpaceError",
    "IntegrityError",
    "LockTimeoutError",
    "ModelNotAvailableError",
    "NotFoundError",
    "ProtocolViolationError",
    "PublishConflictError",
    "RangeNotSupportedError",
    "RemoteChangedError",
    "StallError",
    "UnsafePathError",
    "UsageError",
]
