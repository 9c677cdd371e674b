import errno
import inspect
import os
import pickle

import pytest

import accel
from accel import errors

ALL_ERRORS = [
    obj
    for obj in (getattr(errors, name) for name in errors.__all__)
    if inspect.isclass(obj) and issubclass(obj, errors.AccelError)
]


@pytest.mark.parametrize("cls", ALL_ERRORS, ids=lambda c: c.__name__)
def test_every_error_pickles_with_its_facts(cls: type[errors.AccelError]) -> None:
    if cls is errors.ModelNotAvailableError:
        err: errors.AccelError = cls("m", "1.0", "downloading", progress=0.5)
    else:
        err = cls("something failed", hint="do this", path="/x", needed=10)
    back = pickle.loads(pickle.dumps(err))
    assert type(back) is cls
    assert str(back) == str(err)
    assert back.code == err.code
    assert back.facts == err.facts
    assert isinstance(back, errors.AccelError)


def test_codes_are_unique_snake_case() -> None:
    codes = [cls.code for cls in ALL_ERRORS]
    assert len(codes) == len(set(codes))
    for code in codes:
        assert code == code.lower() and " " not in code


def test_model_not_available_carries_reason() -> None:
    err = accel.ModelNotAvailableError("whisper", None, "not_installed")
    assert err.reason == "not_installed"
    assert "accel install whisper" in str(err)
    with pytest.raises(ValueError):
        accel.ModelNotAvailableError("whisper", None, "bogus")


def test_every_error_class_is_drawn_in_the_module_docstring() -> None:
    tree = (errors.__doc__ or "").split("Hierarchy::", 1)[1]
    drawn = {line.strip("│├└─ ").split(" ", 1)[0] for line in tree.splitlines() if line.strip()}
    assert {cls.__name__ for cls in ALL_ERRORS} <= drawn


@pytest.mark.parametrize(
    ("number", "cls", "code"),
    [
        (errno.EACCES, errors.PermissionDeniedError, "permission_denied"),
        (errno.EPERM, errors.PermissionDeniedError, "permission_denied"),
        (errno.EROFS, errors.ReadOnlyError, "read_only"),
        (errno.ENOTDIR, errors.NotADirectoryPathError, "not_a_directory"),
        (errno.EISDIR, errors.IsADirectoryPathError, "is_a_directory"),
        (errno.EEXIST, errors.PathExistsError, "file_exists"),
        (errno.ENOTEMPTY, errors.PathExistsError, "file_exists"),
        (errno.ENOENT, errors.PathNotFoundError, "file_not_found"),
        (errno.ELOOP, errors.SymlinkLoopError, "symlink_loop"),
        (errno.ENAMETOOLONG, errors.NameTooLongError, "name_too_long"),
        (errno.EMFILE, errors.TooManyOpenFilesError, "too_many_open_files"),
        (errno.ENFILE, errors.TooManyOpenFilesError, "too_many_open_files"),
        (errno.EIO, errors.DeviceIOError, "io_error"),
        (errno.ENOSPC, errors.InsufficientDiskSpaceError, "disk_full"),
        (errno.EDQUOT, errors.InsufficientDiskSpaceError, "disk_full"),
        (errno.EXDEV, errors.FilesystemError, "filesystem_error"),
    ],
    ids=lambda v: errno.errorcode.get(v, str(v)) if isinstance(v, int) else None,
)
def test_os_error_maps_by_errno(number: int, cls: type[errors.AccelError], code: str) -> None:
    exc = OSError(number, os.strerror(number), "/data/models/x.bin")
    err = errors.from_os_error(exc, action="write")
    assert type(err) is cls and err.code == code
    assert err.message == f"cannot write /data/models/x.bin: {os.strerror(number).lower()}"
    assert err.hint, "every translated error says what to do"
    assert err.facts["path"] == "/data/models/x.bin"
    back = pickle.loads(pickle.dumps(err))
    assert type(back) is cls and str(back) == str(err) and back.facts == err.facts


def test_os_error_subclasses_map_like_their_errno() -> None:
    # What Python raises (PermissionError, NotADirectoryError, ...) carries the errno.
    try:
        open("/proc/self/status/child", "w")  # noqa: SIM115
    except OSError as exc:
        err = errors.from_os_error(exc, action="create")
    assert isinstance(err, errors.NotADirectoryPathError)
    assert err.facts["path"] == "/proc/self/status/child"
    assert err.facts["errno_name"] == "ENOTDIR"


def test_os_error_path_given_wins_and_missing_path_reads_well() -> None:
    exc = PermissionError(errno.EACCES, "Permission denied", "/tmp/.x.123.tmp")
    err = errors.from_os_error(exc, action="write the archive", path="/tmp/x.tar.gz")
    assert str(err).startswith("cannot write the archive /tmp/x.tar.gz: permission denied (")
    bare = errors.from_os_error(OSError(errno.EIO, "Input/output error"), action="read")
    assert bare.message == "cannot read: input/output error" and bare.facts["path"] is None
    odd = errors.from_os_error(OSError("no errno at all"), action="read", path="/x")
    assert type(odd) is errors.FilesystemError and odd.message.startswith("cannot read /x: ")


def test_unknown_errno_names_it_in_the_hint_and_a_given_hint_wins() -> None:
    err = errors.from_os_error(OSError(errno.EXDEV, "Invalid cross-device link"), action="move")
    assert err.hint.startswith("EXDEV: ")
    mine = errors.from_os_error(IsADirectoryError(errno.EISDIR, "x"), action="write", hint="h")
    assert mine.hint == "h" and mine.code == "is_a_directory"
