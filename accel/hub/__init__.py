"""accel.hub: the model hub server.

Modules: ``app`` (aiohttp routes, auth, error bodies), ``catalog`` (the store in memory,
answers serialized once per change), ``storage`` (safe lookup, validators, Range),
``sendfile`` (zero-copy send that copes with a client hanging up), ``conditional`` (RFC
9110 conditionals and Range) and ``paths`` (pure rules), ``usage`` (SQLite WAL counts and
ranking), ``publish`` (hash and copy a version into the store), ``store`` (layout, atomic
writes), ``demo`` (deterministic demo models), ``page`` (HTML), ``openapi`` (the API
description), ``server`` (run it). The hub never imports the client side (fetch,
manager, node).
"""

from accel.hub.app import create_app

# ``publish`` stays in ``accel.hub.publish`` (re-exporting the function here would shadow
# the module of the same name).
__all__ = ["create_app"]
