"""Options shared by the commands that take a hub store (serve, publish, gc)."""

from __future__ import annotations

from typing import Any

from accel._cli._paths import local_path

__all__ = ["add_s3_options", "store_root"]


def store_root(value: str) -> str:
    """An argparse ``type`` for a store: ``s3://BUCKET[/PREFIX]`` or a local directory;
    any other ``scheme://`` is refused at parse time (UnsupportedSchemeError)."""
    if value.startswith("s3://"):
        return value
    return str(local_path(value))


def add_s3_options(p: Any) -> None:
    p.add_argument(
        "--s3-endpoint",
        metavar="URL",
        help="S3 endpoint for s3:// stores (default: AWS_ENDPOINT_URL, else AWS itself); "
        "credentials and region come from the usual AWS environment, config and profiles",
    )
