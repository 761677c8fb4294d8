"""Shared storage for Tune's experiment and trial checkpoints on a cluster (docs/design.md
section 6): a URI every node reaches, e.g. s3://bucket/prefix, or for an S3 API server of your own
s3://bucket/prefix?endpoint_override=host:port&scheme=http (pyarrow's URI options)."""
from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

from cmisweep.errors import ConfigError


def join(storage: str, *parts: str) -> str:
    """storage/part/... with the URI's query (endpoint, scheme) kept at the end."""
    u = urlsplit(storage)
    path = "/".join([u.path.rstrip("/"), *parts])
    return urlunsplit((u.scheme, u.netloc, path, u.query, u.fragment))


def check(storage: str, named: str) -> None:
    """Refuse storage that cannot work before anything starts: a malformed URI, an S3 endpoint
    that does not answer, a bucket that does not exist. `named`: where the user set it."""
    if "://" not in storage or storage.startswith("file://"):
        return
    import pyarrow.fs

    try:
        fs, path = pyarrow.fs.FileSystem.from_uri(storage)
    except (pyarrow.ArrowInvalid, ValueError, OSError) as e:
        raise ConfigError(named, None, f"cannot use {storage} as storage ({e})") from None
    bucket = path.split("/", 1)[0]
    try:
        info = fs.get_file_info(bucket)
    except OSError as e:
        reason = str(e).split(";")[0].strip()
        raise ConfigError(named, None, f"storage {storage} is unreachable ({reason})") from None
    if info.type == pyarrow.fs.FileType.NotFound:
        raise ConfigError(named, None, f"storage {storage}: bucket {bucket!r} does not exist; create it first")
