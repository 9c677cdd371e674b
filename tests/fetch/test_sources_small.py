"""Small files (one request each) with several sources, for real: nginx mirrors on
loopback. A version's small files spread over its sources, and a source that fails one
hands it to the next in one request; none may end with wrong bytes, and none may fail
while a source still has the file."""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from pathlib import Path

import pytest

from accel.fetch import Engine
from accel.fetch.types import DownloadResult
from tests.fetch.test_sources_mirrors import expected_for
from tests.support.nginx import Nginx

NAMES = [f"part-{i}.json" for i in range(8)]
SIZE = 64 * 1024


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("small")
    for name in NAMES:
        (root / name).write_bytes(os.urandom(SIZE))
    return root


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def fetch_all(
    url_of: Callable[[str], str], mirror_of: Callable[[str], str], root: Path, out: Path
) -> dict[str, DownloadResult]:
    results = {}
    async with Engine(workers=2, connections=4, backoff_base=0.05, max_attempts=2) as e:
        for name in NAMES:
            data = (root / name).read_bytes()
            results[name] = await e.download(
                url_of(name),
                out / name,
                expected=expected_for(data, block=SIZE // 4),
                mirrors=[mirror_of(name)],
            )
            assert results[name].verified and (out / name).read_bytes() == data
    return results


def served_by(result: DownloadResult) -> list[str]:
    return [s.url for s in result.sources if s.bytes > 0]


async def test_small_files_spread_over_the_sources(
    nginx: Callable[..., Nginx], small: Path, tmp_path: Path
) -> None:
    hub, mirror = nginx(small), nginx(small)
    results = await fetch_all(hub.file_url, mirror.file_url, small, tmp_path)
    for name, r in results.items():
        assert len(served_by(r)) == 1, (name, r.sources)  # one request, one source
    assert hub.bytes_sent() > 0 and mirror.bytes_sent() > 0
    # each file once, near enough (headers), none fetched twice
    assert hub.bytes_sent() + mirror.bytes_sent() < len(NAMES) * (SIZE + 1024)


async def test_a_small_file_goes_to_a_mirror_when_the_url_is_down(
    nginx: Callable[..., Nginx], small: Path, tmp_path: Path
) -> None:
    """Fault: the URL's port has nothing listening; the mirror has every file."""
    mirror = nginx(small)
    dead = f"http://127.0.0.1:{free_port()}"
    results = await fetch_all(lambda n: f"{dead}/{n}", mirror.file_url, small, tmp_path)
    for r in results.values():
        assert served_by(r) == [mirror.file_url(Path(r.path).name)]


async def test_a_small_file_a_mirror_lacks_comes_from_the_url_in_one_request(
    nginx: Callable[..., Nginx], small: Path, tmp_path: Path
) -> None:
    """Fault: the mirror answers 404 for every file (it never got them)."""
    hub, empty = nginx(small), nginx(tmp_path / "nothing")
    (tmp_path / "nothing").mkdir(exist_ok=True)
    out = tmp_path / "out"
    results = await fetch_all(hub.file_url, empty.file_url, small, out)
    asked = [r for r in results.values() if any(s.quarantined for s in r.sources)]
    assert asked, "no file went to the mirror first: nothing was tested"
    for r in results.values():
        assert served_by(r) == [hub.file_url(Path(r.path).name)]
    # one whole-file answer per file from the hub: no probe, no ranges
    assert hub.bytes_sent() < len(NAMES) * (SIZE + 1024)
