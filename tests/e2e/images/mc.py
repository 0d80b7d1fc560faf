"""Stand-in for the MinIO client, for the one command the bucket Job runs.

`mc --config-dir DIR mb --ignore-existing local/BUCKET`, with the alias's URL and credentials in
MC_HOST_local (as the Job's shell exports them from the mounted files: no config file). Anything else exits 2,
so a manifest change that this stand-in does not understand fails loudly instead of passing.
"""

from __future__ import annotations

import os
import sys
from typing import Any
from urllib.parse import unquote, urlsplit

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError


def _parse(argv: list[str]) -> tuple[str, bool, str]:
    """(config dir, --ignore-existing, alias/bucket) or ValueError."""
    config_dir = os.path.join(os.path.expanduser("~"), ".mc")
    args = list(argv)
    while args and args[0].startswith("--"):
        flag = args.pop(0)
        if flag != "--config-dir" or not args:
            raise ValueError(f"unsupported global flag {flag}")
        config_dir = args.pop(0)
    if not args or args.pop(0) != "mb":
        raise ValueError("only the `mb` subcommand is emulated")
    ignore = "--ignore-existing" in args or "-p" in args
    targets = [a for a in args if a not in ("--ignore-existing", "-p")]
    if len(targets) != 1 or targets[0].startswith("-") or "/" not in targets[0]:
        raise ValueError(f"expected exactly one ALIAS/BUCKET, got {targets}")
    return config_dir, ignore, targets[0]


def _exists(s3: Any, bucket: str) -> bool:
    try:
        s3.head_bucket(Bucket=bucket)
    except ClientError as e:
        if e.response.get("Error", {}).get("Code") in ("404", "NoSuchBucket", "NotFound"):
            return False
        raise
    return True


def main(argv: list[str]) -> int:
    try:
        config_dir, ignore_existing, target = _parse(argv)
    except ValueError as e:
        print(f"mc (e2e stand-in): {e}", file=sys.stderr)
        return 2
    alias, _, bucket = target.partition("/")
    bucket = bucket.rstrip("/")
    host = os.environ.get(f"MC_HOST_{alias}")
    if not host:
        print(f"mc: <ERROR> Unable to make bucket `{target}`. alias `{alias}` not found (no MC_HOST_{alias}).",
              file=sys.stderr)
        return 1
    url = urlsplit(host)
    if url.scheme not in ("http", "https") or not url.hostname:
        print(f"mc: <ERROR> MC_HOST_{alias} is not a URL of the form http(s)://USER:PASSWORD@HOST:PORT",
              file=sys.stderr)
        return 1
    try:
        # Real mc writes its config here: a read-only or missing volume fails it too.
        os.makedirs(config_dir, exist_ok=True)
    except OSError as e:
        print(f"mc: <ERROR> Unable to create config dir {config_dir}: {e}", file=sys.stderr)
        return 1
    endpoint = f"{url.scheme}://{url.netloc.rpartition('@')[2]}"
    s3 = boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=unquote(url.username or ""),
        aws_secret_access_key=unquote(url.password or ""),
        region_name="us-east-1",
        # Path style as mc uses for an IP or non-AWS host; few retries: the Job's backoff retries.
        config=Config(s3={"addressing_style": "path"}, connect_timeout=5, read_timeout=30, retries={"max_attempts": 2}),
    )
    try:
        # Ask first: moto (like AWS us-east-1) answers 200 to re-creating one's own bucket,
        # where MinIO says BucketAlreadyOwnedByYou.
        if _exists(s3, bucket):
            if ignore_existing:
                print(f"Bucket created successfully `{target}`.")
                return 0
            print(f"mc: <ERROR> Unable to make bucket `{target}`. "
                  "Your previous request to create the named bucket succeeded and you already own it.",
                  file=sys.stderr)
            return 1
        s3.create_bucket(Bucket=bucket)
    except ClientError as e:
        code = e.response.get("Error", {}).get("Code", "")
        if ignore_existing and code in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
            print(f"Bucket created successfully `{target}`.")
            return 0
        print(f"mc: <ERROR> Unable to make bucket `{target}`. {code}: {e}", file=sys.stderr)
        return 1
    except BotoCoreError as e:
        print(f"mc: <ERROR> Unable to make bucket `{target}`. {e}", file=sys.stderr)
        return 1
    print(f"Bucket created successfully `{target}`.")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
