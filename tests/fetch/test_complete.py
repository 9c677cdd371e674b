"""A rerun on a file that is already there (accel/fetch/complete.py), against real nginx.

Counted at the origin (nginx's access log: requests and ``$bytes_sent``): a verified file
is trusted with no request at all; a changed one is re-hashed and, with the manifest's
blocks, only the block that differs is fetched; ``--check`` re-hashes even a file whose
record matches; a file replaced under the same name (same size and mtime, another
inode, even with the record copied along) is not trusted.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from accel.fetch import Expected, download
from accel.fetch.complete import XATTR, Verified, read_record, sidecar_path
from tests.fetch.conftest import sha256_of
from tests.support.nginx import Nginx

ACCEL = [sys.executable, "-m", "accel"]
MiB = 1024 * 1024
BLOCK = MiB
SIZE = 24 * MiB  # big.bin of the www fixture


def get(origin: Nginx, dest: Path, *args: str) -> subprocess.CompletedProcess[str]:
    cmd = [*ACCEL, "get", origin.file_url("big.bin"), "-o", str(dest), *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60)


def requests(origin: Nginx) -> int:
    return len(origin.statuses())


def manifest_args(www: Path, tmp_path: Path) -> list[str]:
    """``--manifest M --file big.bin``: its SHA256 and 1 MiB blake3 blocks."""
    import blake3

    data = (www / "big.bin").read_bytes()
    digests = [blake3.blake3(data[i : i + BLOCK]).hexdigest() for i in range(0, len(data), BLOCK)]
    entry = {
        "path": "big.bin",
        "size_bytes": len(data),
        "sha256": sha256_of(www / "big.bin"),
        "chunks": {"algo": "blake3", "size": BLOCK, "digests": digests},
    }
    manifest = {
        "model_id": "m",
        "version": "1",
        "size_bytes": len(data),
        "checksum_sha256": "0" * 64,
        "updated_at": "2026-01-01T00:00:00Z",
        "files": [entry],
    }
    path = tmp_path / "manifest.json"
    path.write_text(json.dumps(manifest))
    return ["--manifest", str(path), "--file", "big.bin"]


def flip_byte(path: Path, offset: int, *, keep_mtime: bool = False) -> None:
    st = path.stat()
    with open(path, "r+b") as f:
        f.seek(offset)
        b = f.read(1)
        f.seek(offset)
        f.write(bytes([b[0] ^ 0xFF]))
    mtime = st.st_mtime_ns if keep_mtime else st.st_mtime_ns + 2_000_000_000
    os.utime(path, ns=(st.st_atime_ns, mtime))


def test_rerun_of_a_verified_file_sends_no_request(
    origin: Nginx, www: Path, tmp_path: Path
) -> None:
    want = sha256_of(www / "big.bin")
    dest = tmp_path / "big.bin"
    assert get(origin, dest, "--sha256", want).returncode == 0
    before = requests(origin)
    r = get(origin, dest, "--sha256", want)
    assert r.returncode == 0, r.stderr
    assert "already complete, verified" in r.stdout
    j = get(origin, dest, "--sha256", want, "--json")
    events = [json.loads(line) for line in j.stdout.splitlines()]
    assert "already_complete" in [e["event"] for e in events]
    assert events[-1]["bytes_fetched"] == 0 and events[-1]["sha256"] == want
    assert requests(origin) == before, "a verified file was fetched again"
    assert sha256_of(dest) == want


@pytest.mark.parametrize("how", ["new_mtime", "check"])
def test_a_changed_byte_is_found_by_rehash_and_only_its_block_fetched(
    origin: Nginx, www: Path, tmp_path: Path, how: str
) -> None:
    """A flipped byte with a new mtime is re-hashed on its own; one that kept its mtime
    fools the quick check (as rsync's), and ``--check`` finds it."""
    args = manifest_args(www, tmp_path)
    dest = tmp_path / "big.bin"
    assert get(origin, dest, *args).returncode == 0
    flip_byte(dest, 5 * MiB + 123, keep_mtime=how == "check")
    if how == "check":
        before = requests(origin)
        quick = get(origin, dest, *args)
        assert quick.returncode == 0 and "already complete" in quick.stdout
        assert requests(origin) == before
        args.append("--check")
    sent = origin.bytes_sent()
    r = get(origin, dest, *args, "--json")
    assert r.returncode == 0, r.stderr
    done = json.loads(r.stdout.splitlines()[-1])
    assert sha256_of(dest) == sha256_of(www / "big.bin")
    # The one block that differs (and headers), not the 24 MiB file.
    assert origin.bytes_sent() - sent <= BLOCK + 16 * 1024
    assert done["resumed_bytes"] == SIZE - BLOCK


def test_sha256_only_mismatch_downloads_again(origin: Nginx, www: Path, tmp_path: Path) -> None:
    """Without blocks nothing says which bytes are wrong: the whole file comes again."""
    want = sha256_of(www / "big.bin")
    dest = tmp_path / "big.bin"
    assert get(origin, dest, "--sha256", want).returncode == 0
    flip_byte(dest, 123)
    sent = origin.bytes_sent()
    r = get(origin, dest, "--sha256", want)
    assert r.returncode == 0, r.stderr
    assert "already complete" not in r.stdout
    assert sha256_of(dest) == want
    assert origin.bytes_sent() - sent >= SIZE


def test_a_replaced_file_is_not_trusted_even_with_its_record(
    origin: Nginx, www: Path, tmp_path: Path
) -> None:
    """Same name, size and mtime, the record copied along (``cp -a``), another inode."""
    args = manifest_args(www, tmp_path)
    dest = tmp_path / "big.bin"
    assert get(origin, dest, *args).returncode == 0
    copy = tmp_path / "copy.bin"
    shutil.copy2(dest, copy)  # copies the xattr and the mtime too
    flip_byte(copy, 7 * MiB, keep_mtime=True)
    os.replace(copy, dest)
    assert os.getxattr(dest, XATTR), "the record should have been copied along"
    sent = origin.bytes_sent()
    r = get(origin, dest, *args)
    assert r.returncode == 0, r.stderr
    assert "already complete" not in r.stdout
    assert sha256_of(dest) == sha256_of(www / "big.bin")
    assert origin.bytes_sent() - sent <= BLOCK + 16 * 1024


def test_no_expected_digest_downloads_again_and_claims_nothing(
    origin: Nginx, tmp_path: Path
) -> None:
    dest = tmp_path / "big.bin"
    assert get(origin, dest).returncode == 0
    assert read_record(dest) is None, "nothing verified these bytes"
    before = requests(origin)
    r = get(origin, dest)
    assert r.returncode == 0 and "already complete" not in r.stdout
    assert requests(origin) > before
    bad = get(origin, dest, "--check")
    assert bad.returncode == 2 and "--check" in bad.stderr


def test_sidecar_where_the_filesystem_refuses_xattrs(
    origin: Nginx, www: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The fake: setxattr fails as on a filesystem without user xattrs."""

    def refuse(*_args: object, **_kw: object) -> None:
        raise OSError(errno.ENOTSUP, "Operation not supported")

    monkeypatch.setattr(os, "setxattr", refuse)
    want = sha256_of(www / "big.bin")
    dest = tmp_path / "big.bin"
    expected = Expected(size=SIZE, sha256=want)
    first = download(origin.file_url("big.bin"), dest, expected=expected, workers=1)
    assert not first.already_complete
    record = Verified.from_bytes(sidecar_path(dest).read_bytes())
    assert record is not None and record.sha256 == want and record.describes(dest.stat())
    before = requests(origin)
    again = download(origin.file_url("big.bin"), dest, expected=expected, workers=1)
    assert again.already_complete and again.bytes_fetched == 0
    assert requests(origin) == before


def test_record_parsing_rejects_what_is_not_ours() -> None:
    good = Verified(size=3, mtime_ns=4, ino=5, sha256="ab", blocks=None)
    assert Verified.from_bytes(good.to_bytes()) == good
    for raw in [b"", b"{", b"[]", b'{"v":2}', b'{"v":1,"size":"3"}', b'{"v":1,"size":true}']:
        assert Verified.from_bytes(raw) is None
    assert good.vouches_for(Expected(sha256="AB"))
    assert not good.vouches_for(Expected(sha256="cd"))
    assert not good.vouches_for(Expected())
