"""``export_logs`` (accel/manager/logs.py): its one OSError seam and its temp file.

Real filesystems only: a destination that is a directory, a file where a parent
directory should be, and an immutable (``chattr +i``) archive that the final rename
cannot replace, which is the case that used to leave ``.NAME.PID.tmp`` behind.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from accel.errors import IsADirectoryPathError, NotADirectoryPathError, PermissionDeniedError
from accel.manager.logs import export_logs


@pytest.fixture
def models(tmp_path: Path) -> Path:
    d = tmp_path / "models"
    (d / ".accel" / "logs").mkdir(parents=True)
    (d / ".accel" / "logs" / "accel.log").write_text('{"message": "hello"}\n')
    return d


def _names(d: Path) -> set[str]:
    return {p.name for p in d.iterdir()}


def test_a_directory_destination_is_refused_before_any_byte(models: Path, tmp_path: Path) -> None:
    dest = tmp_path / "out"
    dest.mkdir()
    with pytest.raises(IsADirectoryPathError) as info:
        export_logs(models, dest)
    assert info.value.facts["path"] == str(dest)
    assert str(dest / "accel-report.tar.gz") in info.value.hint
    assert _names(tmp_path) == {"models", "out"} and _names(dest) == set()


def test_a_file_in_place_of_a_parent_is_not_a_directory(models: Path, tmp_path: Path) -> None:
    (tmp_path / "f").write_text("a file")
    with pytest.raises(NotADirectoryPathError) as info:
        export_logs(models, tmp_path / "f" / "report.tar.gz")
    assert info.value.facts["path"] == str(tmp_path / "f" / "report.tar.gz")
    assert isinstance(info.value.__cause__, OSError)


@pytest.fixture
def immutable_archive(tmp_path: Path) -> Iterator[Path]:
    dest = tmp_path / "out" / "report.tar.gz"
    dest.parent.mkdir()
    dest.write_bytes(b"an earlier report")
    r = subprocess.run(["chattr", "+i", str(dest)], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"chattr +i is not supported here (needs root on ext4/xfs): {r.stderr}")
    try:
        yield dest
    finally:
        subprocess.run(["chattr", "-i", str(dest)], check=False)


def test_a_failed_rename_removes_the_temp_file(models: Path, immutable_archive: Path) -> None:
    with pytest.raises(PermissionDeniedError) as info:
        export_logs(models, immutable_archive)
    assert info.value.message.startswith(f"cannot write the log archive {immutable_archive}: ")
    assert _names(immutable_archive.parent) == {"report.tar.gz"}
    assert immutable_archive.read_bytes() == b"an earlier report"
