"""The node side: install model versions from a hub into a models dir, safely.

``ModelManager`` is the public entry point; the modules below it each own one concept:
``registry`` (registry.json), ``locks`` (task/file locks and their records), ``states``
(the pure state machine), ``queue`` (priority slots), ``hubclient`` (hub API + manifest
cache), ``hubanswers`` (what a hub answer must be, pure), ``jobs`` (the job runner: a
job's life and outcome), ``steps`` (an install job's steps), ``install`` (one version's
files), ``staging`` (staged updates), ``progress``, ``disk``, ``events`` and ``logs``.
"""

from accel.manager.events import Event, Subscription
from accel.manager.manager import ModelManager

__all__ = ["Event", "ModelManager", "Subscription"]
