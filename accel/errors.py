"""The one exception tree of accel.

Every error a user can meet is an :class:`AccelError`. Each carries a stable ``code``
(snake_case, used in JSON bodies, NDJSON events and logs) and a ``hint`` that says what
to do. Foreign exceptions (aiohttp, OSError) are translated in exactly one place per seam
and chained with ``raise ... from``. Errors cross process boundaries (worker ->
supervisor), so every class pickles: ``__reduce__`` rebuilds it from its keyword facts.

An :class:`OSError` becomes one of these through :func:`from_os_error` (the errno table
lives there, once): the caller names the path and what it was doing, and raises the
result ``from`` the OSError.

Hierarchy::

    AccelError
    ├── UsageError                  bad option or argument value (CLI exit 2)
    ├── ConfigError                 bad configuration (token file, models dir)
    ├── HubError                    the hub answered, but not with what we asked for
    │   ├── NotFoundError           404: unknown model, version or file
    │   ├── AuthError               401/403: missing or wrong token
    │   ├── BadManifestError        an answer that is not JSON or does not match the schema
    │   └── PublishConflictError    publishing a version that exists with other content
    ├── StoreError                  the hub's object store cannot be used
    │   ├── StoreCredentialsError   missing, wrong or refused S3 credentials
    │   ├── StoreBucketError        the bucket does not exist
    │   └── StoreUnreachableError   the S3 endpoint does not answer
    ├── UsageDbError                the hub's usage database (SQLite, PostgreSQL) cannot be used
    ├── UnsafePathError             a path that would leave its root (traversal, symlink)
    ├── UnsupportedSchemeError      a root or path given as ``scheme://...`` with no backend yet
    ├── FilesystemError             a local file operation failed (facts: path, action, errno)
    │   ├── PermissionDeniedError   EACCES, EPERM (mode bits, an immutable dir, a sandbox)
    │   ├── ReadOnlyError           EROFS: the filesystem is mounted read-only
    │   ├── NotADirectoryPathError  ENOTDIR: a parent in the path is a regular file
    │   ├── IsADirectoryPathError   EISDIR: a file was expected, a directory is there
    │   ├── PathExistsError         EEXIST, ENOTEMPTY: something is in the way
    │   ├── PathNotFoundError       ENOENT: the path or one of its parents does not exist
    │   ├── SymlinkLoopError        ELOOP: too many levels of symbolic links
    │   ├── NameTooLongError        ENAMETOOLONG: a name or the whole path is too long
    │   ├── TooManyOpenFilesError   EMFILE, ENFILE: the open-file limit is reached
    │   └── DeviceIOError           EIO: the device failed the read or write
    ├── DownloadError               a transfer failed after its retry budget
    │   ├── HTTPStatusError         an unexpected status (carries status, url)
    │   ├── RangeNotSupportedError  the origin ignores Range (informational fallback)
    │   ├── RemoteChangedError      ETag / Last-Modified / size changed mid-download
    │   ├── ProtocolViolationError  wrong Content-Range, short body, length mismatch
    │   ├── StallError              no bytes (or too few) for the stall timeout
    │   └── IntegrityError          bytes do not match the expected digest or size
    │       └── SizeMismatchError   the server's file is not the size expected (before any byte)
    ├── InsufficientDiskSpaceError  not enough free space (needed vs free), or ENOSPC/EDQUOT
    ├── LockTimeoutError            a lock holder stopped heartbeating
    ├── ModelNotAvailableError      get_model_path for a model that is not ready
    ├── CheckpointError             a resume checkpoint that cannot be used
    ├── DeliveryError               a report could not be delivered to the scheduler (retried)
    └── InternalError               a bug: an exception accel did not expect (kept as __cause__)
"""

from __future__ import annotations

import errno as _errno
import os
from typing import Any, ClassVar

__all__ = [
    "AccelError",
    "AuthError",
    "BadManifestError",
    "CheckpointError",
    "ConfigError",
    "DeliveryError",
    "DeviceIOError",
    "DownloadError",
    "FilesystemError",
    "HTTPStatusError",
    "HubError",
    "InsufficientDiskSpaceError",
    "IntegrityError",
    "InternalError",
    "IsADirectoryPathError",
    "LockTimeoutError",
    "ModelNotAvailableError",
    "NameTooLongError",
    "NotADirectoryPathError",
    "NotFoundError",
    "PathExistsError",
    "PathNotFoundError",
    "PermissionDeniedError",
    "ProtocolViolationError",
    "PublishConflictError",
    "RangeNotSupportedError",
    "ReadOnlyError",
    "RemoteChangedError",
    "SizeMismatchError",
    "StallError",
    "StoreBucketError",
    "StoreCredentialsError",
    "StoreError",
    "StoreUnreachableError",
    "SymlinkLoopError",
    "TooManyOpenFilesError",
    "UnsafePathError",
    "UnsupportedSchemeError",
    "UsageDbError",
    "UsageError",
    "from_os_error",
]


class AccelError(Exception):
    """Base of every accel error: a message, a stable ``code`` and a ``hint``.

    Subclasses declare ``code`` and a default ``hint``; the facts a user needs are kept
    as attributes (and in ``facts``) so that the CLI, JSON events and the scheduler
    report can show them without parsing the message.
    """

    code: ClassVar[str] = "accel_error"
    default_hint: ClassVar[str] = ""

    def __init__(self, message: str, *, hint: str | None = None, **facts: Any) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint if hint is not None else self.default_hint
        self.facts: dict[str, Any] = facts
        for key, value in facts.items():
            setattr(self, key, value)

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild, (type(self), self.message, self.hint, self.facts))

    def __str__(self) -> str:
        if self.hint:
            return f"{self.message} ({self.hint})"
        return self.message

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready description: code, message, hint and the facts."""
        out: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.hint:
            out["hint"] = self.hint
        for key, value in self.facts.items():
            if isinstance(value, str | int | float | bool | type(None) | list | dict):
                out[key] = value
        return out


def _rebuild(cls: type[AccelError], message: str, hint: str, facts: dict[str, Any]) -> AccelError:
    err = cls.__new__(cls)
    AccelError.__init__(err, message, hint=hint, **facts)
    return err


class UsageError(AccelError):
    """A bad option or argument value; the CLI exits 2."""

    code = "usage_error"


class ConfigError(AccelError):
    """Configuration that cannot be used (missing token file, unusable directory)."""

    code = "config_error"


class HubError(AccelError):
    """The hub answered with an error or with something that is not what we asked for."""

    code = "hub_error"
    default_hint = "check the hub URL and that `accel serve` is running"


class NotFoundError(HubError):
    """The hub has no such model, version or file."""

    code = "not_found"
    default_hint = "see what the hub has with `accel search`"


class AuthError(HubError):
    """The hub refused our credentials (401/403)."""

    code = "unauthorized"
    default_hint = "pass the hub's token with --token or ACCEL_TOKEN"


class BadManifestError(HubError):
    """The hub's answer is not JSON, or does not match the API's schema (facts: model_id,
    version, field: where it first goes wrong, e.g. ``files[0].size_bytes``)."""

    code = "bad_manifest"
    default_hint = (
        "the hub serves a broken answer: republish the version on the hub, or ask its "
        "owner; nothing of it was installed"
    )


class PublishConflictError(HubError):
    """A version exists already with different content; versions are immutable."""

    code = "publish_conflict"
    default_hint = "publish under a new version number"


class StoreError(AccelError):
    """The hub's object store (an S3 bucket) refused or failed a request."""

    code = "store_error"
    default_hint = "check the bucket, the endpoint and the credentials"


class StoreCredentialsError(StoreError):
    """No S3 credentials were found, or the store refused them."""

    code = "store_credentials"
    default_hint = (
        "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or AWS_PROFILE) to a key the store knows"
    )


class StoreBucketError(StoreError):
    """The bucket named by ``s3://BUCKET`` does not exist on that endpoint."""

    code = "store_no_bucket"
    default_hint = "create the bucket first (aws s3 mb s3://BUCKET) or fix the name"


class StoreUnreachableError(StoreError):
    """Nothing answers at the S3 endpoint."""

    code = "store_unreachable"
    default_hint = "check --s3-endpoint / AWS_ENDPOINT_URL and that the store is running"


class UsageDbError(AccelError):
    """The usage database refused or failed (facts: url, with any password removed).

    A hub answers 503 with this code when it cannot count a report or read the ranking:
    a report answered 503 was not counted, so sending it again counts it once."""

    code = "usage_db_unavailable"
    default_hint = "check --usage-db (postgresql://USER@HOST:PORT/DB) and that the database is up"


class UnsafePathError(AccelError):
    """A path that would escape its root: traversal, absolute, NUL, backslash, symlink."""

    code = "unsafe_path"
    default_hint = "file paths must be relative, without '..', backslashes or NUL"


class UnsupportedSchemeError(AccelError):
    """A root or path given as ``scheme://...`` (facts: value, scheme) that no backend serves.

    Without this check ``Path("s3://bucket/x")`` is the local folder ``s3:/bucket/x``:
    a user who meant an object store would get a silent local copy instead.
    """

    code = "unsupported_scheme"
    default_hint = "give a local directory path; object-store roots are not supported yet"


class FilesystemError(AccelError):
    """A local file operation failed (facts: path, action, errno, errno_name).

    The subclasses name the common causes; this class itself is the fallback for an
    errno without one. Built by :func:`from_os_error`, never from a bare OSError message.
    """

    code = "filesystem_error"
    default_hint = "check the path and its parent directory, then rerun"


class PermissionDeniedError(FilesystemError):
    """EACCES or EPERM: mode bits, an immutable (``chattr +i``) directory, a sandbox."""

    code = "permission_denied"
    default_hint = "check the owner, mode and attributes with `ls -ld` and `lsattr -d`"


class ReadOnlyError(FilesystemError):
    """EROFS: the filesystem holding the path is mounted read-only."""

    code = "read_only"
    default_hint = "the filesystem is mounted read-only: choose a path on a writable one"


class NotADirectoryPathError(FilesystemError):
    """ENOTDIR: a component of the path that should be a directory is a regular file."""

    code = "not_a_directory"
    default_hint = "a parent in the path is a file, not a directory: choose another path"


class IsADirectoryPathError(FilesystemError):
    """EISDIR: a file was to be read or written where a directory is."""

    code = "is_a_directory"
    default_hint = "a directory is in the way: name a file path, or remove the directory"


class PathExistsError(FilesystemError):
    """EEXIST or ENOTEMPTY: something is already where the operation would create one."""

    code = "file_exists"
    default_hint = "remove it or choose another name"


class PathNotFoundError(FilesystemError):
    """ENOENT: the path, or one of its parent directories, does not exist."""

    code = "file_not_found"
    default_hint = "check that the path and its parent directories exist"


class SymlinkLoopError(FilesystemError):
    """ELOOP: resolving the path met too many symbolic links (a link pointing at itself)."""

    code = "symlink_loop"
    default_hint = "a symbolic link in the path loops: fix or remove it, see `ls -l`"


class NameTooLongError(FilesystemError):
    """ENAMETOOLONG: a name (255 bytes on most filesystems) or the whole path is too long."""

    code = "name_too_long"
    default_hint = "choose a shorter file name or a shallower directory"


class TooManyOpenFilesError(FilesystemError):
    """EMFILE or ENFILE: the process's (or the system's) open-file limit is reached."""

    code = "too_many_open_files"
    default_hint = "raise the limit with `ulimit -n` or run fewer downloads at once"


class DeviceIOError(FilesystemError):
    """EIO: the device failed the read or write (a bad disk, a lost network mount)."""

    code = "io_error"
    default_hint = "the device reported an I/O error: check it with `dmesg`, then rerun"


class DownloadError(AccelError):
    """A transfer failed after its retry budget was spent."""

    code = "download_failed"
    default_hint = "rerun the same command: finished chunks are kept and only the rest is fetched"


class HTTPStatusError(DownloadError):
    """The origin answered with a status we cannot use (facts: status, url)."""

    code = "http_status"


class RangeNotSupportedError(DownloadError):
    """The origin ignores Range requests; a single stream is used instead."""

    code = "range_not_supported"


class RemoteChangedError(DownloadError):
    """The remote file changed (ETag, Last-Modified or size) during the download."""

    code = "remote_changed"
    default_hint = "rerun: chunks of the old version are discarded and the new one is fetched"


class ProtocolViolationError(DownloadError):
    """The origin broke HTTP's promises: wrong Content-Range, short body, bad length."""

    code = "protocol_violation"


class StallError(DownloadError):
    """A connection delivered no bytes (or too few) for the stall timeout."""

    code = "stalled"


class IntegrityError(DownloadError):
    """Bytes do not match the expected SHA256, blake3 block digest or size."""

    code = "checksum_mismatch"
    default_hint = (
        "the source is corrupt or changed; rerun to refetch, or report it to the hub owner"
    )


class SizeMismatchError(IntegrityError):
    """The server's file has another size than expected, known before fetching a byte.

    Not a corrupt transfer (a rerun gets the same answer): the expected size is wrong
    (``--size``), or the file behind the URL is another one than the manifest describes.
    """

    code = "size_mismatch"
    default_hint = (
        "the expected size (--size, or the manifest's) is not the server's: check it, "
        "or that the URL names the file you mean; a rerun gets the same answer"
    )


class InsufficientDiskSpaceError(AccelError):
    """Not enough free space (facts: path, needed, free); also raised on ENOSPC."""

    code = "disk_full"
    default_hint = "free disk space, then rerun: the download resumes where it stopped"


class LockTimeoutError(AccelError):
    """A lock's holder stopped heartbeating for longer than its timeout (facts: holder)."""

    code = "lock_timeout"
    default_hint = "if the holder is gone, run `accel locks --clean`"


class ModelNotAvailableError(AccelError):
    """``get_model_path`` for a model version that is not ready.

    ``reason`` is one of ``not_installed``, ``queued``, ``downloading``, ``paused``,
    ``verifying``, ``error``.
    """

    code = "model_not_available"
    REASONS: ClassVar[tuple[str, ...]] = (
        "not_installed",
        "queued",
        "downloading",
        "paused",
        "verifying",
        "error",
    )
    model_id: str
    version: str | None
    reason: str

    def __init__(
        self,
        model_id: str,
        version: str | None = None,
        reason: str = "not_installed",
        *,
        message: str | None = None,
        hint: str | None = None,
        **facts: Any,
    ) -> None:
        if reason not in self.REASONS:
            raise ValueError(f"unknown reason {reason!r}")
        shown = f"{model_id}@{version}" if version else model_id
        if hint is None:
            hint = {
                "not_installed": f"install it with `accel install {shown}`",
                "error": f"see `accel status {shown}`, then `accel install {shown}` to retry",
                "paused": f"resume it with `accel install {shown}`",
            }.get(reason, "wait for the install to finish")
        super().__init__(
            message or f"model {shown} is not available: {reason}",
            hint=hint,
            model_id=model_id,
            version=version,
            reason=reason,
            **facts,
        )

    def __reduce__(self) -> tuple[Any, ...]:
        facts = dict(self.facts)
        return (
            _rebuild_mna,
            (
                facts.pop("model_id"),
                facts.pop("version"),
                facts.pop("reason"),
                self.message,
                self.hint,
                facts,
            ),
        )


def _rebuild_mna(
    model_id: str, version: str | None, reason: str, message: str, hint: str, facts: dict[str, Any]
) -> ModelNotAvailableError:
    return ModelNotAvailableError(model_id, version, reason, message=message, hint=hint, **facts)


class CheckpointError(AccelError):
    """A resume checkpoint that is torn, from another file, or otherwise unusable."""

    code = "checkpoint_invalid"
    default_hint = "the download restarts from zero for the affected chunks"


class DeliveryError(AccelError):
    """One attempt to deliver a report to the scheduler failed (facts: url, status).

    The node's reporter keeps the report and retries it in the background; this error is
    never raised to the code that asked for the report.
    """

    code = "scheduler_unreachable"
    default_hint = "the node keeps the report and retries; check the scheduler URL"


class InternalError(AccelError):
    """An exception accel did not expect (a bug); the original is chained as ``__cause__``.

    The job runner turns whatever escapes an install into this, so the install still ends
    in ``error`` with a ``failed`` event and its waiter wakes, instead of hanging.
    """

    code = "internal"
    default_hint = (
        "this is a bug in accel: rerun to resume, and report it with the output of "
        "`accel logs export`"
    )


# One errno -> one class. Anything not listed is a plain FilesystemError naming its errno.
_BY_ERRNO: dict[int, type[FilesystemError]] = {
    _errno.EACCES: PermissionDeniedError,
    _errno.EPERM: PermissionDeniedError,
    _errno.EROFS: ReadOnlyError,
    _errno.ENOTDIR: NotADirectoryPathError,
    _errno.EISDIR: IsADirectoryPathError,
    _errno.EEXIST: PathExistsError,
    _errno.ENOTEMPTY: PathExistsError,
    _errno.ENOENT: PathNotFoundError,
    _errno.ELOOP: SymlinkLoopError,
    _errno.ENAMETOOLONG: NameTooLongError,
    _errno.EMFILE: TooManyOpenFilesError,
    _errno.ENFILE: TooManyOpenFilesError,
    _errno.EIO: DeviceIOError,
}
_NO_SPACE = frozenset({_errno.ENOSPC, _errno.EDQUOT})


def from_os_error(
    exc: OSError,
    *,
    action: str,
    path: str | os.PathLike[str] | None = None,
    hint: str | None = None,
) -> AccelError:
    """The accel error for ``exc``, raised by an attempt to ``action`` ``path``.

    ``action`` is a verb phrase that reads after "cannot": ``"write"``, ``"create the
    directory"``, ``"read the registry"``. ``path`` defaults to the OSError's own
    ``filename``; ``hint`` replaces the class's default when the caller knows better
    (``"name a file inside it"``). The caller chains: ``raise from_os_error(exc, action="write", path=p)
    from exc``. ENOSPC and EDQUOT become :class:`InsufficientDiskSpaceError` (needed and
    free unknown here: measuring them is I/O, and this module does none). Pure: looks
    only at ``exc.errno``, so a fake OSError in a unit test maps like a real one.
    """
    where = path if path is not None else exc.filename
    shown = os.fsdecode(where) if where is not None else None
    code = exc.errno
    reason = (exc.strerror or (os.strerror(code) if code else type(exc).__name__)).lower()
    target = f" {shown}" if shown else ""
    message = f"cannot {action}{target}: {reason}"
    name = _errno.errorcode.get(code, "") if code is not None else ""
    if code in _NO_SPACE:
        return InsufficientDiskSpaceError(
            message, hint=hint, path=shown, needed=None, free=None, action=action, errno=code
        )
    cls = _BY_ERRNO.get(code, FilesystemError) if code is not None else FilesystemError
    if hint is None and cls is FilesystemError and name:
        hint = f"{name}: {FilesystemError.default_hint}"
    return cls(message, hint=hint, path=shown, action=action, errno=code, errno_name=name)
