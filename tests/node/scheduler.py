"""The scheduler the node tests talk to: accel's dev scheduler on 127.0.0.1."""

from __future__ import annotations

from accel.node.devscheduler import DevScheduler as Scheduler
from accel.node.devscheduler import free_port

__all__ = ["Scheduler", "free_port"]
