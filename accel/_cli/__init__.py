"""Subcommand modules of the ``accel`` CLI; each defines ``register(subparsers)``."""
