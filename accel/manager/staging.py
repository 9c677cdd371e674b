"""Staged updates: a ready version's new content is built beside it and swapped in whole.

Owns the staging directories (``.accel/staging/<id>@<version>``, inside the models dir
so the swap is a rename on one filesystem), the registry's ``updates`` table, the swap
itself and its recovery, and the trash (``.accel/trash``: a directory is moved there in
one rename, then deleted, so it disappears from its old path at once).

The swap's order, and why a crash anywhere leaves a usable version: the staged files are
verified and synced first; then the staging dir's inode is recorded (intent); then the
two directories are exchanged by one ``renameat2(RENAME_EXCHANGE)`` (two renames where
the filesystem cannot); then the staged record becomes the version's ``ready`` record;
then the old content, now at the staging path, is deleted. Before the exchange the old
version is at its path; after it the new one is, and :meth:`StagedUpdates.finish_swap`
tells which from the recorded inode. Files an inference service still has open keep
their old bytes: they are unlinked, never overwritten. Never downloads (the manager
runs the staged install) and never takes locks (the caller holds the task lock).
"""

from __future__ import annotations

import logging
import os
import secrets
import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from accel.manager.fsutil import exchange_dirs, fsync_dir
from accel.manager.registry import RegistryStore, install_key
from accel.modelid import model_dir_name
from accel.schema import InstallRecord, Registry

if TYPE_CHECKING:
    from accel.manager.install import VersionInstall

__all__ = ["StagedUpdates"]

log = logging.getLogger("accel.manager")


class StagedUpdates:
    """The staged updates of one models dir."""

    def __init__(self, models_dir: Path, state_dir: Path, registry: RegistryStore) -> None:
        self.models_dir = models_dir
        self.state_dir = state_dir
        self.registry = registry

    def final_dir(self, model_id: str, version: str) -> Path:
        """Where the ready version lives."""
        return self.models_dir / model_dir_name(model_id) / version  # org/name -> org--name

    def staging_dir(self, model_id: str, version: str) -> Path:
        """Where its update is built."""
        return self.state_dir / "staging" / f"{model_id.replace('/', '--')}@{version}"

    def begin(
        self, model_id: str, version: str, checksum: str
    ) -> Path | Literal["in_place", "up_to_date"]:
        """With the task lock held: the staging dir to build ``checksum``'s content in.

        ``"up_to_date"`` when the ready version already has it (another process, or a
        rerun, finished the update); ``"in_place"`` when the version is not ready (any
        more): there is nothing to keep usable, so it is simply installed.
        """
        key = install_key(model_id, version)
        self.finish_swap(key)  # a swap a crash interrupted completes first
        reg = self.registry.read()
        rec = reg.installs.get(key)
        staging = self.staging_dir(model_id, version)
        if rec is None or rec.state != "ready" or not Path(rec.path).is_dir():
            self.drop(key)
            return "in_place"
        if rec.checksum_sha256 == checksum:
            self.drop(key)
            return "up_to_date"
        staged = reg.updates.get(key)
        if staged is None or staged.checksum_sha256 != checksum:
            # A staging dir of an older attempt against other content: start clean, so
            # no file the new manifest does not list can ride along into the swap.
            self.drop(key)
        staging.mkdir(parents=True, exist_ok=True)
        return staging

    def drop(self, key: str) -> None:
        """Forget the staged update of ``key`` and delete its staging dir."""

        def change(reg: Registry) -> InstallRecord | None:
            return reg.updates.pop(key, None)

        if key in self.registry.read().updates:
            self.registry.update(change)
        model_id, _, version = key.rpartition("@")
        staging = self.staging_dir(model_id, version)
        if staging.exists():
            self.trash(staging)

    def swap_in(self, inst: VersionInstall) -> None:
        """Put a verified, synced staging dir in the ready version's place (see above)."""
        assert inst.staging is not None
        key, staging, final = inst.key, inst.staging, inst.final_dir
        ino = os.stat(staging).st_ino

        def intent(reg: Registry) -> None:
            reg.updates[key] = inst.record(reg.updates.get(key), "verifying")
            reg.updates[key].swap_ino = ino

        self.registry.update(intent)
        if exchange_dirs(staging, final):
            fsync_dir(staging.parent)
            fsync_dir(final.parent)
        else:
            os.replace(final, self.trash_dir())
            os.replace(staging, final)
            fsync_dir(final.parent)
            fsync_dir(staging.parent)
        self.commit(key)

    def commit(self, key: str) -> None:
        """The swapped-in update becomes the version's ready record; old content goes."""

        def change(reg: Registry) -> InstallRecord | None:
            staged = reg.updates.pop(key, None)
            if staged is None:
                return None
            now = time.time()
            old = reg.installs.get(key)
            reg.installs[key] = staged.model_copy(
                update={
                    "state": "ready",
                    "path": str(self.final_dir(staged.model_id, staged.version)),
                    "error": None,
                    "swap_ino": None,
                    "owner_pid": None,
                    "owner_start": None,
                    "created_at": old.created_at if old is not None else staged.created_at,
                    "updated_at": now,
                    "installed_at": now,
                }
            )
            return staged

        staged = self.registry.update(change)
        if staged is not None:
            staging = self.staging_dir(staged.model_id, staged.version)
            if staging.exists():  # the old content, after an exchange
                self.trash(staging)
            log.info("updated %s in place (%s)", key, staged.checksum_sha256[:12])

    def finish_swap(self, key: str) -> bool:
        """Complete a swap a crash interrupted (task lock held). Returns whether it did."""
        staged = self.registry.read().updates.get(key)
        if staged is None or staged.swap_ino is None:
            return False
        final = self.final_dir(staged.model_id, staged.version)
        staging = self.staging_dir(staged.model_id, staged.version)
        final_ino = _ino(final)
        if final_ino != staged.swap_ino:
            if final_ino is not None or _ino(staging) != staged.swap_ino:
                return False  # not swapped yet: the update reruns, then swaps
            os.replace(staging, final)  # crashed between the two fallback renames
            fsync_dir(final.parent)
        self.commit(key)
        return True

    def trash_dir(self) -> Path:
        """A fresh name in the trash."""
        trash = self.state_dir / "trash" / secrets.token_hex(8)
        trash.parent.mkdir(parents=True, exist_ok=True)
        return trash

    def trash(self, path: Path) -> None:
        """Move a directory out of sight at once, then delete it."""
        trash = self.trash_dir()
        os.replace(path, trash)
        shutil.rmtree(trash, ignore_errors=True)

    def sweep_trash(self) -> None:
        """Delete what a crash left in the trash (each entry was moved there whole)."""
        for left in (self.state_dir / "trash").glob("*"):
            shutil.rmtree(left, ignore_errors=True)


def _ino(path: Path) -> int | None:
    try:
        return os.stat(path).st_ino
    except FileNotFoundError:
        return None
