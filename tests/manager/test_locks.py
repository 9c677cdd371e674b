"""Task/file locks: holder policy (pure), stale records (dead pid, reused pid, old),
and a waiter that gives up naming a holder that stopped heartbeating."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from accel.errors import LockTimeoutError
from accel.manager.locks import LockBusy, LockSpace, holder_status, process_start_time
from accel.schema import LockRecord

HOST = socket.gethostname()


def _record(
    pid: int, start: float, *, heartbeat: float, host: str = HOST, timeout: float = 60
) -> LockRecord:
    return LockRecord(
        pid=pid,
        hostname=host,
        process_start_time=start,
        model_id="m",
        version="1",
        created_at=heartbeat,
        heartbeat_at=heartbeat,
        timeout_s=timeout,
    )


def test_holder_status_cases() -> None:
    now = 10_000.0
    starts = {1: 500.0}
    look = starts.get
    assert (
        holder_status(_record(1, 500.0, heartbeat=now), now=now, hostname=HOST, start_time_of=look)
        == "alive"
    )
    assert (
        holder_status(_record(2, 500.0, heartbeat=now), now=now, hostname=HOST, start_time_of=look)
        == "dead"
    )
    assert (
        holder_status(_record(1, 100.0, heartbeat=now), now=now, hostname=HOST, start_time_of=look)
        == "reused"
    )
    assert (
        holder_status(
            _record(1, 500.0, heartbeat=now - 3601), now=now, hostname=HOST, start_time_of=look
        )
        == "old"
    )
    assert (
        holder_status(
            _record(1, 500.0, heartbeat=now, host="elsewhere"),
            now=now,
            hostname=HOST,
            start_time_of=look,
        )
        == "unknown"
    )


@given(
    age=st.floats(0, 10_000),
    started=st.one_of(st.none(), st.floats(0, 1_000)),
    recorded=st.floats(0, 1_000),
)
def test_holder_status_only_alive_when_same_process_and_fresh(
    age: float, started: float | None, recorded: float
) -> None:
    now = 20_000.0
    status = holder_status(
        _record(5, recorded, heartbeat=now - age),
        now=now,
        hostname=HOST,
        start_time_of=lambda _p: started,
    )
    if status == "alive":
        assert age <= 3600 and started is not None and abs(started - recorded) <= 1.0
    if age > 3600:
        assert status == "old"


def test_two_spaces_exclude_each_other_and_release(tmp_path: Path) -> None:
    a, b = LockSpace(tmp_path), LockSpace(tmp_path)
    held = a.try_acquire("tasks/m@1", kind="task", model_id="m", version="1", timeout_s=60)
    with pytest.raises(LockBusy) as busy:
        b.try_acquire("tasks/m@1", kind="task", model_id="m", version="1", timeout_s=60)
    assert busy.value.holder is not None and busy.value.holder.pid == os.getpid()
    held.release()
    assert (tmp_path / "tasks" / "m@1.lock").exists()  # lock files stay in place
    assert not (tmp_path / "tasks" / "m@1.json").exists()
    b.try_acquire("tasks/m@1", kind="task", model_id="m", version="1", timeout_s=60).release()


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_cleanup_removes_dead_reused_and_old_records_but_not_live_ones(tmp_path: Path) -> None:
    space = LockSpace(tmp_path)
    now = time.time()
    space.write_record("tasks/dead@1", _record(_dead_pid(), now - 5, heartbeat=now))
    # pid reused: a live pid (ours) but a start time that is not its own
    space.write_record(
        "tasks/reused@1", _record(os.getpid(), space.start_time - 1000, heartbeat=now)
    )
    space.write_record("tasks/old@1", _record(os.getpid(), space.start_time, heartbeat=now - 7200))
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        start = process_start_time(live.pid)
        assert start is not None
        space.write_record("tasks/live@1", _record(live.pid, start, heartbeat=now))
        removed = dict(space.cleanup())
    finally:
        live.kill()
        live.wait()
    assert removed == {"tasks/dead@1": "dead", "tasks/reused@1": "reused", "tasks/old@1": "old"}
    assert space.read_record("tasks/live@1") is not None


_HOLDER = """
import sys, time, json, os, socket, portalocker
lock, rec, start, timeout = sys.argv[1], sys.argv[2], float(sys.argv[3]), float(sys.argv[4])
fh = open(lock, "a")
portalocker.lock(fh, portalocker.LOCK_EX | portalocker.LOCK_NB)
now = time.time()
with open(rec, "w") as f:
    json.dump({"kind": "task", "pid": os.getpid(), "hostname": socket.gethostname(),
               "process_start_time": start, "model_id": "m", "version": "1",
               "created_at": now, "heartbeat_at": now, "timeout_s": timeout}, f)
print("held", flush=True)
time.sleep(60)   # holds the lock but never heartbeats: a hung holder
"""


async def test_waiter_gives_up_naming_a_holder_that_stopped_heartbeating(tmp_path: Path) -> None:
    space = LockSpace(tmp_path)
    (tmp_path / "tasks").mkdir()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            _HOLDER,
            str(tmp_path / "tasks" / "m@1.lock"),
            str(tmp_path / "tasks" / "m@1.json"),
            "0",
            "1.0",
        ],
        stdout=subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == b"held"
        t0 = time.monotonic()
        with pytest.raises(LockTimeoutError) as err:
            await space.acquire("tasks/m@1", kind="task", model_id="m", version="1", timeout_s=60)
        waited = time.monotonic() - t0
        assert 0.5 < waited < 5
        assert f"pid {proc.pid}" in str(err.value) and err.value.holder_pid == proc.pid
        # cleanup does not steal a lock whose (hung) holder still holds it
        assert "tasks/m@1" not in dict(space.cleanup())
    finally:
        proc.kill()
        proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()
    # the holder died: the OS released its lock, the waiter gets it at once
    held = await asyncio.wait_for(
        space.acquire("tasks/m@1", kind="task", model_id="m", version="1", timeout_s=60), 5
    )
    held.release()


async def test_waiter_waits_while_the_holder_heartbeats(tmp_path: Path) -> None:
    a, b = LockSpace(tmp_path), LockSpace(tmp_path)
    held = a.try_acquire("files/abc", kind="file", model_id="m", version="1", timeout_s=0.5)

    async def beat_then_release() -> None:
        for _ in range(8):
            await asyncio.sleep(0.15)
            a.heartbeat_all()
        held.release()

    beater = asyncio.create_task(beat_then_release())
    got = await b.acquire("files/abc", kind="file", model_id="m", version="1", timeout_s=0.5)
    await beater
    assert got.record.pid == os.getpid()
    got.release()


def test_a_lock_taken_without_record_gets_it_late_and_drops_a_dead_holders(
    tmp_path: Path,
) -> None:
    a = LockSpace(tmp_path)
    stale = LockRecord(
        kind="file",
        pid=2**22 + 7,  # no such pid
        hostname=a.hostname,
        process_start_time=1.0,
        model_id="old",
        version="1",
        created_at=1.0,
        heartbeat_at=1.0,
        timeout_s=1.0,
    )
    a.write_record("files/abc", stale)
    held = a.try_acquire(
        "files/abc", kind="file", model_id="m", version="1", timeout_s=60, record=False
    )
    assert a.read_record("files/abc") is None  # the dead holder's record does not speak for us
    held.ensure_recorded()
    rec = a.read_record("files/abc")
    assert rec is not None and rec.pid == os.getpid() and rec.model_id == "m"
    held.release()
    assert a.read_record("files/abc") is None
    again = a.try_acquire(
        "files/abc", kind="file", model_id="m", version="1", timeout_s=60, record=False
    )
    again.release()
    again.ensure_recorded()  # released: writes nothing
    assert a.read_record("files/abc") is None


async def test_waiter_gives_up_on_a_busy_lock_that_never_gets_a_record(tmp_path: Path) -> None:
    a, b = LockSpace(tmp_path), LockSpace(tmp_path)
    held = a.try_acquire(
        "files/abc", kind="file", model_id="m", version="1", timeout_s=0.3, record=False
    )
    t0 = time.monotonic()
    with pytest.raises(LockTimeoutError) as err:
        await b.acquire("files/abc", kind="file", model_id="m", version="1", timeout_s=0.3)
    assert 0.3 < time.monotonic() - t0 < 5
    assert "no lock record" in str(err.value)
    held.release()


async def test_waiter_on_an_unrecorded_lock_waits_while_its_record_heartbeats(
    tmp_path: Path,
) -> None:
    a, b = LockSpace(tmp_path), LockSpace(tmp_path)
    held = a.try_acquire(
        "files/abc", kind="file", model_id="m", version="1", timeout_s=0.4, record=False
    )

    async def record_late_then_beat() -> None:
        await asyncio.sleep(0.2)
        held.ensure_recorded()
        for _ in range(6):
            await asyncio.sleep(0.15)
            a.heartbeat_all()
        held.release()

    beater = asyncio.create_task(record_late_then_beat())
    got = await b.acquire("files/abc", kind="file", model_id="m", version="1", timeout_s=0.4)
    await beater
    assert got.record.model_id == "m"
    got.release()


_FILE_HOLDER = """
import sys
from pathlib import Path
from accel.manager.locks import LockSpace
space = LockSpace(Path(sys.argv[1]))
held = space.try_acquire(sys.argv[2], kind="file", model_id="m", version="1", timeout_s=60)
print("held", flush=True)
sys.stdin.readline()
"""


def test_file_locks_exclude_other_processes_and_a_crash_frees_them(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-c", _FILE_HOLDER, str(tmp_path), "files/aa"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    space = LockSpace(tmp_path)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == b"held"
        with pytest.raises(LockBusy):
            space.try_acquire("files/aa", kind="file", model_id="m", version="1", timeout_s=5)
        # another content's lock is free meanwhile
        space.try_acquire("files/bb", kind="file", model_id="m", version="1", timeout_s=5).release()
        assert "files/aa" not in dict(space.cleanup())  # held: cleanup leaves it
    finally:
        proc.kill()  # no release: the kernel's drops the lock with the process
        proc.wait()
    space.try_acquire("files/aa", kind="file", model_id="m", version="1", timeout_s=5).release()


def test_two_holders_in_one_process_exclude_each_other(tmp_path: Path) -> None:
    a, b = LockSpace(tmp_path), LockSpace(tmp_path)
    held = a.try_acquire("files/aa", kind="file", model_id="m", version="1", timeout_s=5)
    with pytest.raises(LockBusy):
        b.try_acquire("files/aa", kind="file", model_id="m", version="1", timeout_s=5)
    held.release()
    b.try_acquire("files/aa", kind="file", model_id="m", version="1", timeout_s=5).release()


def test_file_locks_leave_no_file_per_content(tmp_path: Path) -> None:
    # a version of many files takes one lock per file: creating a file for each cost
    # the install a create per file and left them all behind
    space = LockSpace(tmp_path)
    held = [
        space.try_acquire(
            f"files/{i:064x}", kind="file", model_id="m", version="1", timeout_s=5, record=False
        )
        for i in range(200)
    ]
    for h in held:
        h.release()
    left = [p.relative_to(tmp_path) for p in tmp_path.rglob("*") if p.is_file()]
    assert len(left) <= 1, left[:5]


_OPENS: list[str] | None = None


def _audit(event: str, args: tuple[object, ...]) -> None:
    if event == "open" and _OPENS is not None:
        _OPENS.append(str(args[0]))


sys.addaudithook(_audit)  # (no way to remove one: inert unless a test collects)


def test_file_locks_reuse_their_descriptors_and_still_exclude(tmp_path: Path) -> None:
    """10,000 file locks opened the ranges file 10,000 times (a text-file object
    each). A released lock's descriptor is unlocked and taken by the next lock; a
    reused one locks its own byte and nothing else."""
    global _OPENS
    space, other = LockSpace(tmp_path), LockSpace(tmp_path)
    _OPENS = []
    try:
        for i in range(300):
            space.try_acquire(
                f"files/{i:064x}", kind="file", model_id="m", version="1", timeout_s=5,
                record=False,
            ).release()  # fmt: skip
        opens = [p for p in _OPENS if p.endswith("files.ranges")]
    finally:
        _OPENS = None
    assert len(opens) <= 1, len(opens)  # before: 300
    a = space.try_acquire("files/aa", kind="file", model_id="m", version="1", timeout_s=5)
    a.release()
    b = space.try_acquire("files/bb", kind="file", model_id="m", version="1", timeout_s=5)
    try:  # b holds the descriptor a had: aa is free, bb busy, for another holder
        other.try_acquire("files/aa", kind="file", model_id="m", version="1", timeout_s=5).release()
        with pytest.raises(LockBusy):
            other.try_acquire("files/bb", kind="file", model_id="m", version="1", timeout_s=5)
    finally:
        b.release()
    other.try_acquire("files/bb", kind="file", model_id="m", version="1", timeout_s=5).release()
