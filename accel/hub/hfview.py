"""The catalog as the Hugging Face Hub API shows it: revisions, commit shas, siblings, trees.

Pure functions over :class:`~accel.schema.ModelInfo` values, no I/O. The mapping:

- repo id = model id; revision = version;
- a missing revision and ``main`` = the model's ``default_version``;
- a version's "commit sha" = the first 40 hex of its ``checksum_sha256``, so it changes
  when the content does; that sha is accepted as a revision wherever a version name is;
- every file is an LFS file: ``lfs.sha256`` is the file's sha256 and ``blobId`` is the
  git blob id of the LFS pointer file git would store (computable from sha256 and size,
  so no file is read to answer).

:mod:`accel.hub.hfapi` turns these values into HTTP answers; nothing here knows HTTP.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Any

from accel.schema import FileEntry, ModelInfo, VersionInfo

__all__ = [
    "DEFAULT_REVISION",
    "TREE_PAGE_SIZE",
    "TreePage",
    "commit_sha",
    "lfs_blob_id",
    "lfs_pointer",
    "repo_info",
    "resolve_revision",
    "sibling",
    "tree_page",
]

DEFAULT_REVISION = "main"
#: entries per ``/tree`` page, as huggingface.co answers (the client follows ``Link: next``)
TREE_PAGE_SIZE = 1000
_SHA_RE = re.compile(r"^[0-9a-f]{40}$")


def commit_sha(version: VersionInfo) -> str:
    """The version's commit sha: it changes exactly when the content does."""
    return version.checksum_sha256[:40]


def resolve_revision(info: ModelInfo, revision: str | None) -> VersionInfo | None:
    """The version a revision names: ``None``/``main`` = default, a version name, or its sha."""
    if revision is None or revision == DEFAULT_REVISION:
        revision = info.default_version
        if revision is None:
            return None
    for v in info.versions:
        if v.version == revision:
            return v
    if _SHA_RE.match(revision):
        for v in info.versions:
            if commit_sha(v) == revision:
                return v
    return None


def lfs_pointer(sha256: str, size: int) -> bytes:
    """The git-lfs pointer file git stores in place of a file of that sha256 and size."""
    return (
        f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n".encode()
    )


def lfs_blob_id(sha256: str, size: int) -> str:
    """The git blob id (sha1 of ``blob <len>\\0<pointer>``) of that file's LFS pointer."""
    pointer = lfs_pointer(sha256, size)
    return hashlib.sha1(b"blob %d\0" % len(pointer) + pointer).hexdigest()


def sibling(f: FileEntry) -> dict[str, Any]:
    """One ``siblings`` entry of a revision-info answer."""
    pointer_size = len(lfs_pointer(f.sha256, f.size_bytes))
    return {
        "rfilename": f.path,
        "size": f.size_bytes,
        "blobId": lfs_blob_id(f.sha256, f.size_bytes),
        "lfs": {"sha256": f.sha256, "size": f.size_bytes, "pointerSize": pointer_size},
    }


def repo_info(info: ModelInfo, version: VersionInfo | None) -> dict[str, Any]:
    """The answer of ``/api/models/{repo}[/revision/{rev}]``: the seed's fields and HF's.

    The seed's ``ModelInfo`` fields stay as they are (our own clients read them); HF's
    ``id`` is the same model id, and ``sha``/``siblings`` describe ``version``.
    """
    out: dict[str, Any] = info.model_dump(mode="json")
    out.update(
        {
            "modelId": info.id,
            "author": info.id.split("/", 1)[0] if "/" in info.id else None,
            "private": False,
            "gated": False,
            "disabled": False,
            "tags": [],
            "pipeline_tag": info.task,
            "downloads": 0,
            "likes": 0,
        }
    )
    if version is not None:
        out["sha"] = commit_sha(version)
        out["lastModified"] = version.updated_at
        out["siblings"] = [sibling(f) for f in version.files]
    else:
        out["sha"] = None
        out["siblings"] = []
    return out


def _tree_file(f: FileEntry) -> dict[str, Any]:
    s = sibling(f)
    return {
        "type": "file",
        "oid": s["blobId"],
        "size": f.size_bytes,
        "path": f.path,
        "lfs": {"oid": f.sha256, "size": f.size_bytes, "pointerSize": s["lfs"]["pointerSize"]},
    }


def _tree_dir(path: str) -> dict[str, Any]:
    return {
        "type": "directory",
        "oid": hashlib.sha1(path.encode()).hexdigest(),
        "size": 0,
        "path": path,
    }


@dataclass(frozen=True)
class TreePage:
    """One page of a ``/tree`` listing and where the next one starts (None: last page)."""

    entries: list[dict[str, Any]]
    next_cursor: int | None


def tree_page(
    version: VersionInfo,
    path: str,
    *,
    recursive: bool,
    cursor: int = 0,
    page_size: int = TREE_PAGE_SIZE,
) -> TreePage | None:
    """The entries under ``path`` ("" = the root), from ``cursor`` on; None if no such dir.

    Sorted as git lists a tree (directories and files by path); non-recursive lists the
    direct children, directories included; recursive lists every file and directory below.
    """
    prefix = path.strip("/") + "/" if path.strip("/") else ""
    entries: dict[str, dict[str, Any]] = {}
    found = not prefix
    for f in version.files:
        if not f.path.startswith(prefix):
            continue
        found = True
        rest = f.path[len(prefix) :].split("/")
        for depth in range(1, len(rest)):
            if not recursive and depth > 1:
                break
            d = prefix + "/".join(rest[:depth])
            entries.setdefault(d, _tree_dir(d))
        if recursive or len(rest) == 1:
            entries[f.path] = _tree_file(f)
    if not found:
        return None
    ordered = [entries[k] for k in sorted(entries)]
    chunk = ordered[cursor : cursor + page_size]
    nxt = cursor + page_size if cursor + page_size < len(ordered) else None
    return TreePage(chunk, nxt)
