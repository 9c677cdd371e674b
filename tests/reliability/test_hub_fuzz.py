"""Hostile input to the hub: the storage path fuzzed with hypothesis against the real hub.

The store is seeded with bait: a secret file at the store root and outside it, an
unlisted file and a symlink to the outside secret inside a version's ``files`` dir, and a
listed file replaced by a symlink leaving the store. Every generated request (traversal
segments, percent-encoded and double-encoded variants, backslashes, NUL, empty segments,
real names in the wrong places, random Range headers, GET and HEAD) must satisfy:

- a 2xx answer names, decoded once, exactly ``/storage/models/<id>/<version>/<listed path>``
  and its body is a slice of that very file;
- no answer ever contains bait bytes or the store's real path.

Default suite: 1,000 paths; ``ACCEL_SOAK=1``: 20,000.
"""

from __future__ import annotations

import http.client
import os
import socket
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import unquote

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.reliability.figures import record_figure
from tests.support.hub import RunningHub, expected_bytes, publish_model, running_hub

SOAK = os.environ.get("ACCEL_SOAK") == "1"
EXAMPLES = 20_000 if SOAK else 1_000
MODEL, VERSION = "fuzz-model", "1.0"
SPEC = {"model.bin": 200_000, "config.json": 3000, "sub/vocab.txt": 5000, "sub/deep/x.bin": 777}
BAIT = b"BAIT-DO-NOT-SERVE-"


class Target:
    """The running hub, what it may serve, and a raw keep-alive connection to it."""

    def __init__(self, hub: RunningHub, files: dict[str, bytes], outside: Path) -> None:
        self.hub = hub
        self.files = files
        self.outside = outside
        self.sock: socket.socket | None = None
        self.statuses: Counter[int] = Counter()

    def request(self, method: str, path: str, range_hdr: str | None) -> tuple[int, bytes]:
        head = f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        if range_hdr is not None:
            head += f"Range: {range_hdr}\r\n"
        raw = (head + "\r\n").encode("utf-8", "surrogateescape")
        for attempt in range(2):
            if self.sock is None:
                self.sock = socket.create_connection(("127.0.0.1", self.hub.port), timeout=10)
            try:
                self.sock.sendall(raw)
                resp = http.client.HTTPResponse(self.sock, method=method)
                resp.begin()
                body = resp.read()
                if resp.will_close:
                    self.close()
                return resp.status, body
            except (ConnectionError, http.client.RemoteDisconnected, http.client.BadStatusLine):
                self.close()
                if attempt:
                    raise
        raise AssertionError("unreachable")

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None


@pytest.fixture(scope="module")
def target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    base = tmp_path_factory.mktemp("fuzz")
    root = base / "store"
    root.mkdir()
    publish_model(root, MODEL, VERSION, SPEC, block_size=65536)
    publish_model(root, "other-model", "2.0", {"model.bin": 1000}, block_size=65536)
    outside = base / "outside-secret.txt"
    outside.write_bytes(BAIT + b"outside")
    (root / "secret.txt").write_bytes(BAIT + b"root")
    files_dir = root / "models" / MODEL / VERSION / "files"
    (files_dir / "unlisted.bin").write_bytes(BAIT + b"unlisted")
    (files_dir / "link.bin").symlink_to(outside)
    # A listed file replaced by a symlink that leaves the store.
    deep = files_dir / "sub" / "deep" / "x.bin"
    deep.unlink()
    deep.symlink_to(outside)
    files = {rel: expected_bytes(rel, size) for rel, size in SPEC.items()}
    with running_hub(root) as hub:
        t = Target(hub, files, outside)
        yield t
        t.close()


_SEGMENTS = [
    MODEL,
    VERSION,
    "other-model",
    "2.0",
    "models",
    "storage",
    "files",
    "sub",
    "deep",
    "model.bin",
    "config.json",
    "vocab.txt",
    "x.bin",
    "unlisted.bin",
    "link.bin",
    "secret.txt",
    "manifest.json",
    "model.json",
    "..",
    ".",
    "",
    "%2e%2e",
    "%2E%2E",
    "%2e",
    ".%2e",
    "%2e.",
    "..%2f",
    "%2f",
    "%2F",
    "%5c",
    "..%5c",
    "\\",
    "..\\..",
    "%00",
    "%2500",
    "%252e%252e",
    "%252f",
    "sub%2fvocab.txt",
    "sub%2Fdeep%2Fx.bin",
    "..%2f..%2fsecret.txt",
    "%2e%2e%2f%2e%2e%2fsecret.txt",
    "C:",
    "c:%5cwindows",
    "~",
    "%c0%ae%c0%ae",
    "%u002e",
    "model.bin%00.txt",
    "model.bin;x",
    "model.bin.gz",
    "model.bin.br",
    "..;",
    "%20",
    "files%2f..%2f..%2fsecret.txt",
    "%ff",
    "%",
    "%%32%65",
]
segment = st.one_of(
    st.sampled_from(_SEGMENTS),
    st.text(alphabet=st.sampled_from("abcxyz019._-~%2eEfF5cC/\\:;@!$&'()*+,="), max_size=10),
)
prefix = st.sampled_from(
    [
        f"/storage/models/{MODEL}/{VERSION}/",
        f"/storage/models/{MODEL}/",
        "/storage/models/",
        "/storage/",
        "/",
        f"/storage/models/{MODEL}/{VERSION}/files/",
        f"//storage/models/{MODEL}/{VERSION}/",
        f"/storage/models/{MODEL}/%2e%2e/{MODEL}/{VERSION}/",
    ]
)
suffix = st.sampled_from(["", "", "", "?x=1", "?", "#frag", "?../../secret.txt"])
range_header = st.one_of(
    st.none(),
    st.builds(lambda a, b: f"bytes={a}-{b}", st.integers(0, 300_000), st.integers(0, 300_000)),
    st.builds(lambda a: f"bytes={a}-", st.integers(0, 300_000)),
    st.builds(lambda a: f"bytes=-{a}", st.integers(0, 300_000)),
    st.sampled_from(["bytes=-0", "bytes=0-0,5-9", "bytes=x-y", "items=0-1", "bytes=99999999999-"]),
)


def _allowed(path: str) -> str | None:
    """The listed file a request path names, decoded once; None if it names none."""
    path = path.split("?", 1)[0].split("#", 1)[0]
    pre = f"/storage/models/{MODEL}/{VERSION}/"
    decoded = "/".join(unquote(s) for s in path.split("/"))
    if not decoded.startswith(pre):
        return None
    rel = decoded[len(pre) :]
    return rel if rel in SPEC else None


@pytest.mark.timeout(1200 if SOAK else 120)
def test_storage_path_fuzz_never_leaks(target: Target) -> None:
    root_text = str(target.hub.root).encode()
    seen = {"n": 0, "served": 0}

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(
        method=st.sampled_from(["GET", "GET", "GET", "HEAD"]),
        pre=prefix,
        segs=st.one_of(
            st.lists(segment, min_size=0, max_size=6),
            st.sampled_from([rel.split("/") for rel in SPEC]),  # real names, right place
        ),
        tail=suffix,
        rng=range_header,
    )
    def check(method: str, pre: str, segs: list[str], tail: str, rng: str | None) -> None:
        path = pre + "/".join(segs) + tail
        status, body = target.request(method, path, rng)
        seen["n"] += 1
        target.statuses[status] += 1
        assert BAIT not in body, (path, status)
        assert root_text not in body, (path, status)
        # Outside /storage (the page, the API) only the leak checks above apply.
        if 200 <= status < 300 and "storage" in unquote(path):
            seen["served"] += 1
            rel = _allowed(path)
            assert rel is not None, f"served {status} for {path!r}"
            assert rel != "sub/deep/x.bin", f"followed a symlink out of the store: {path!r}"
            if method == "GET":
                assert body in target.files[rel], (path, rng)

    check()
    text = f"{seen['n']} storage paths: statuses {dict(target.statuses)}; 0 leaks"
    print(f"fuzzed {text}")
    record_figure("hub_path_fuzz", "hypothesis over raw request paths + Range, real hub", text)
    assert seen["n"] >= EXAMPLES * 0.9
    assert seen["served"] > 0  # the property was checked on real answers too


def test_listed_symlink_and_bait_are_refused_alike(target: Target) -> None:
    """Outside, unlisted and missing all give the same 404: no existence oracle."""
    pre = f"/storage/models/{MODEL}/{VERSION}/"
    answers = {
        name: target.request("GET", pre + name, None)
        for name in ("sub/deep/x.bin", "link.bin", "unlisted.bin", "no-such-file.bin")
    }
    assert {s for s, _ in answers.values()} == {404}
    bodies = {b.replace(name.encode(), b"") for name, (_, b) in answers.items()}
    assert len(bodies) == 1, bodies
    status, body = target.request("GET", pre + "model.bin", "bytes=10-19")
    assert status == 206 and body == target.files["model.bin"][10:20]
