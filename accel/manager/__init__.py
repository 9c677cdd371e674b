"""The node side: install model versions from a hub into a models dir, safely.

``ModelManager`` is the public entry point; the modules below it each own one concept:
``registry`` (registry.json), ``locks`` (task/file locks and their records), ``states``
(the pure state machine), ``queue`` (priority slots), ``hubclient`` (hub API + manifest
cache), ``install`` (one version's install), ``disk``, ``events`` and ``logs``.
"""

from accel.manager.events import Event, Subscription
from accel.manager.manager import ModelManager

__all__ = ["Event", "ModelManager", "Subscription"]
