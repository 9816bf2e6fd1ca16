"""A thin S3 layer: a client built from the usual AWS settings, listing, and downloads.

Credentials, profile and region come from boto3's standard chain (``AWS_ACCESS_KEY_ID``,
``AWS_PROFILE``, ``~/.aws/config``, instance roles...). S3-compatible stores (MinIO, Ceph,
moto) are reached with an explicit ``endpoint_url`` or boto3's own ``AWS_ENDPOINT_URL_S3`` /
``AWS_ENDPOINT_URL``; those use path-style addressing, which every such store accepts.
Every botocore failure is turned into a DatasetError that names the object and the fix.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

from automl.errors import DatasetError

_CHUNK = 1024 * 1024


@dataclass(frozen=True)
class ObjectInfo:
    """One S3 object's identity: its ETag changes whenever its bytes do."""

    bucket: str
    key: str
    etag: str
    size: int

    @property
    def uri(self) -> str:
        return f"s3://{self.bucket}/{self.key}"


def make_client(endpoint_url: str | None = None, region: str | None = None, profile: str | None = None) -> Any:
    """A boto3 S3 client; explicit arguments win over the environment."""
    import boto3
    from botocore.config import Config

    endpoint_url = endpoint_url or os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    region = region or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    try:
        session = boto3.session.Session(profile_name=profile) if profile else boto3.session.Session()
    except Exception as exc:  # botocore.exceptions.ProfileNotFound and friends
        raise DatasetError(f"AWS profile {profile!r}: {exc}; check AWS_PROFILE / ~/.aws/config") from exc
    config = Config(
        retries={"max_attempts": 5, "mode": "standard"},
        s3={"addressing_style": "path"} if endpoint_url else {},
    )
    return session.client("s3", endpoint_url=endpoint_url, region_name=region or "us-east-1", config=config)


def endpoint_of(client: Any) -> str:
    return str(getattr(client.meta, "endpoint_url", ""))


@contextlib.contextmanager
def s3_errors(what: str) -> Iterator[None]:
    """Translate botocore failures during ``what`` into a DatasetError with a fix."""
    from botocore.exceptions import BotoCoreError, ClientError, EndpointConnectionError, NoCredentialsError

    try:
        yield
    except ClientError as exc:
        err = exc.response.get("Error", {})
        code = str(err.get("Code", ""))
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if code in ("NoSuchBucket",):
            fix = "check the bucket name, and the endpoint/region it lives in (AWS_ENDPOINT_URL, AWS_REGION)"
        elif code in ("404", "NoSuchKey", "NotFound"):
            fix = "check the URI; list it with `aws s3 ls`"
        elif code in ("403", "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch"):
            fix = "check the credentials (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY / AWS_PROFILE) and the bucket policy"
        elif code in ("412", "PreconditionFailed"):
            fix = "the object changed while it was being staged; run again"
        else:
            fix = "check the URI, credentials and endpoint"
        raise DatasetError(f"S3 {what}: {code or status} {err.get('Message', '')}".rstrip() + f"; {fix}") from exc
    except NoCredentialsError as exc:
        raise DatasetError(
            f"S3 {what}: no AWS credentials found; set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY or AWS_PROFILE"
        ) from exc
    except EndpointConnectionError as exc:
        raise DatasetError(f"S3 {what}: cannot reach {exc.kwargs.get('endpoint_url')}; check AWS_ENDPOINT_URL and the network") from exc
    except BotoCoreError as exc:
        raise DatasetError(f"S3 {what}: {exc}") from exc


def _etag(raw: str) -> str:
    return raw.strip('"')


def head(client: Any, bucket: str, key: str) -> ObjectInfo | None:
    """The object's identity, or None when it does not exist."""
    from botocore.exceptions import ClientError

    with s3_errors(f"HEAD s3://{bucket}/{key}"):
        try:
            resp = client.head_object(Bucket=bucket, Key=key)
        except ClientError as exc:
            if str(exc.response.get("Error", {}).get("Code")) in ("404", "NoSuchKey", "NotFound"):
                return None
            raise
    return ObjectInfo(bucket, key, _etag(resp["ETag"]), int(resp["ContentLength"]))


def list_objects(client: Any, bucket: str, prefix: str, delimiter: str | None = None) -> tuple[list[ObjectInfo], list[str]]:
    """Objects under ``prefix`` and, with a delimiter, the sub-prefixes ("folders") found."""
    objects: list[ObjectInfo] = []
    folders: list[str] = []
    kwargs: dict[str, Any] = {"Bucket": bucket, "Prefix": prefix}
    if delimiter:
        kwargs["Delimiter"] = delimiter
    with s3_errors(f"LIST s3://{bucket}/{prefix}"):
        for page in client.get_paginator("list_objects_v2").paginate(**kwargs):
            for obj in page.get("Contents", []):
                objects.append(ObjectInfo(bucket, obj["Key"], _etag(obj["ETag"]), int(obj["Size"])))
            folders.extend(p["Prefix"] for p in page.get("CommonPrefixes", []))
    return objects, folders


def download(client: Any, obj: ObjectInfo, dest: Path, on_bytes: Callable[[int], None] | None = None) -> None:
    """Download exactly the version ``obj`` names to ``dest``.

    One GET with If-Match on the ETag the cache key was made from: if the object was
    replaced since it was listed, the store answers 412 and nothing stale is cached.
    """
    dest.parent.mkdir(parents=True, exist_ok=True)
    with s3_errors(f"download {obj.uri}"):
        resp = client.get_object(Bucket=obj.bucket, Key=obj.key, IfMatch=f'"{obj.etag}"')
        body = resp["Body"]
        try:
            with open(dest, "wb") as out:
                for chunk in body.iter_chunks(_CHUNK):
                    out.write(chunk)
                    if on_bytes is not None:
                        on_bytes(len(chunk))
        finally:
            body.close()
    got = dest.stat().st_size
    if got != obj.size:
        raise DatasetError(f"S3 download {obj.uri}: got {got} bytes, expected {obj.size}; run again (the object may be changing)")
