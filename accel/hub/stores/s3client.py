"""Reaching an S3-compatible bucket: ``s3://BUCKET[/PREFIX]``, the boto3 client, and the
one place where botocore's exceptions become accel errors.

Endpoint, region and credentials come from the standard AWS chain (``AWS_ENDPOINT_URL``,
``AWS_ACCESS_KEY_ID``..., ``~/.aws/config``, ``AWS_PROFILE``) through boto3; an explicit
``--s3-endpoint`` wins. Nothing is signed by hand. Never knows about models.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from accel.errors import (
    StoreBucketError,
    StoreCredentialsError,
    StoreError,
    StoreUnreachableError,
    UsageError,
)

__all__ = ["S3Location", "is_s3_url", "make_client", "parse_s3_url", "translate"]

_CREDENTIAL_CODES = frozenset(
    {
        "InvalidAccessKeyId",
        "SignatureDoesNotMatch",
        "AccessDenied",
        "ExpiredToken",
        "InvalidToken",
        "InvalidClientTokenId",
        "AuthorizationHeaderMalformed",
        "403",
    }
)
_BUCKET_CODES = frozenset({"NoSuchBucket", "404"})


@dataclass(frozen=True)
class S3Location:
    """A bucket and a key prefix ('' or ending in '/'); ``key()`` joins under it."""

    bucket: str
    prefix: str = ""

    @property
    def url(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}".rstrip("/")

    def key(self, *parts: str) -> str:
        return self.prefix + "/".join(parts)


def is_s3_url(value: str) -> bool:
    return value.startswith("s3://")


def parse_s3_url(value: str) -> S3Location:
    """``s3://BUCKET[/PREFIX]`` -> S3Location; anything else is a UsageError."""
    if not is_s3_url(value):
        raise UsageError(f"{value!r} is not an s3:// URL", hint="write s3://BUCKET[/PREFIX]")
    bucket, _, prefix = value[len("s3://") :].partition("/")
    if not bucket or "?" in value or "#" in value:
        raise UsageError(f"{value!r} names no bucket", hint="write s3://BUCKET[/PREFIX]")
    prefix = prefix.strip("/")
    if any(seg in ("", ".", "..") for seg in prefix.split("/")) and prefix:
        raise UsageError(f"{value!r} has an unclean prefix", hint="write s3://BUCKET[/PREFIX]")
    return S3Location(bucket, prefix + "/" if prefix else "")


def endpoint_from_env() -> str | None:
    return os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or None


def make_client(endpoint: str | None = None, *, pool: int = 32) -> Any:
    """A boto3 S3 client from the standard chain; ``endpoint`` overrides AWS_ENDPOINT_URL.

    A custom endpoint (SeaweedFS, MinIO, Ceph) gets path-style addressing: such stores
    rarely have a wildcard DNS name for virtual-hosted buckets.
    """
    import boto3
    from botocore.config import Config

    endpoint = endpoint or endpoint_from_env()
    session = boto3.session.Session()
    config = Config(
        signature_version="s3v4",
        retries={"max_attempts": 3, "mode": "standard"},
        connect_timeout=5,
        read_timeout=60,
        max_pool_connections=pool,
        s3={"addressing_style": "path"} if endpoint else {},
    )
    return session.client(
        "s3",
        endpoint_url=endpoint,
        region_name=session.region_name or "us-east-1",
        config=config,
    )


def translate(exc: BaseException, loc: S3Location, endpoint: str | None) -> StoreError:
    """The one translation of botocore's exceptions into accel's (chain it with ``from``)."""
    from botocore import exceptions as bx

    where = endpoint or endpoint_from_env() or "AWS"
    if isinstance(exc, bx.NoCredentialsError | bx.PartialCredentialsError):
        return StoreCredentialsError(f"no S3 credentials found for {loc.url}", url=loc.url)
    if isinstance(
        exc,
        bx.EndpointConnectionError
        | bx.ConnectTimeoutError
        | bx.ReadTimeoutError
        | bx.ConnectionClosedError,
    ):
        return StoreUnreachableError(
            f"the S3 endpoint {where} does not answer ({type(exc).__name__})", endpoint=where
        )
    if isinstance(exc, bx.ClientError):
        err = exc.response.get("Error", {})
        code = str(err.get("Code", ""))
        if code in _BUCKET_CODES and "Key" not in err:
            return StoreBucketError(
                f"bucket {loc.bucket!r} does not exist at {where}", bucket=loc.bucket
            )
        if code in _CREDENTIAL_CODES:
            return StoreCredentialsError(
                f"the S3 store at {where} refused the credentials for {loc.url} ({code})",
                url=loc.url,
                s3_code=code,
            )
        return StoreError(f"S3 request on {loc.url} failed: {code} {err.get('Message', '')}")
    if isinstance(exc, bx.BotoCoreError):
        return StoreError(f"S3 request on {loc.url} failed: {exc}")
    return StoreError(f"S3 request on {loc.url} failed: {exc!r}")
