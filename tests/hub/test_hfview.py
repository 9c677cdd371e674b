"""The HF view of the catalog (pure): revision mapping, LFS blob ids, tree pages."""

from __future__ import annotations

import hashlib
import subprocess

from hypothesis import given
from hypothesis import strategies as st

from accel.hub.hfview import (
    commit_sha,
    lfs_blob_id,
    lfs_pointer,
    resolve_revision,
    tree_page,
)
from accel.schema import FileEntry, ModelInfo, VersionInfo, version_checksum


def _version(name: str, paths: list[str]) -> VersionInfo:
    files = [
        FileEntry(path=p, size_bytes=len(p), sha256=hashlib.sha256(p.encode()).hexdigest())
        for p in paths
    ]
    return VersionInfo(
        version=name,
        size_bytes=sum(f.size_bytes for f in files),
        files=files,
        checksum_sha256=version_checksum(files),
        updated_at="2026-01-01T00:00:00Z",
    )


def _model(*versions: VersionInfo, default: str | None = None) -> ModelInfo:
    return ModelInfo(id="m", name="m", versions=list(versions), default_version=default)


def test_main_and_none_are_the_default_and_a_sha_names_its_version() -> None:
    a, b = _version("1.0", ["x"]), _version("2.0", ["y"])
    info = _model(a, b, default="1.0")
    assert resolve_revision(info, None) is a and resolve_revision(info, "main") is a
    assert resolve_revision(info, "2.0") is b
    assert resolve_revision(info, commit_sha(b)) is b
    assert resolve_revision(info, commit_sha(b).upper()) is None
    assert resolve_revision(info, "0" * 40) is None
    assert resolve_revision(_model(a, default=None), "main") is None


def test_lfs_blob_id_is_what_git_computes_for_the_pointer(tmp_path) -> None:  # type: ignore[no-untyped-def]
    sha = hashlib.sha256(b"hello").hexdigest()
    pointer = tmp_path / "p"
    pointer.write_bytes(lfs_pointer(sha, 5))
    got = subprocess.run(["git", "hash-object", str(pointer)], capture_output=True, text=True)
    assert got.returncode == 0
    assert lfs_blob_id(sha, 5) == got.stdout.strip()


_paths = st.lists(
    st.lists(st.sampled_from(["a", "b", "c.bin", "d"]), min_size=1, max_size=4).map("/".join),
    min_size=1,
    max_size=40,
    unique=True,
).filter(lambda ps: not any(p != q and q.startswith(p + "/") for p in ps for q in ps))


@given(_paths, st.integers(1, 7))
def test_pages_chained_by_cursor_list_every_file_once(paths: list[str], size: int) -> None:
    v = _version("1", paths)
    seen: list[str] = []
    cursor: int | None = 0
    while cursor is not None:
        page = tree_page(v, "", recursive=True, cursor=cursor, page_size=size)
        assert page is not None and len(page.entries) <= size
        seen += [e["path"] for e in page.entries if e["type"] == "file"]
        cursor = page.next_cursor
    assert sorted(seen) == sorted(paths)


@given(_paths)
def test_non_recursive_lists_direct_children_only(paths: list[str]) -> None:
    page = tree_page(_version("1", paths), "", recursive=False, page_size=10_000)
    assert page is not None
    names = {e["path"] for e in page.entries}
    assert names == {p.split("/")[0] for p in paths}
    assert all("/" not in n for n in names)
