"""The connection settings every bundler process needs, whoever provides the services.

`DataServices` (components/data.py) produces one of these in either mode (in-cluster or
external), so `__main__.py`, the migration Job and the workloads never know which it is.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import pulumi


@dataclass(frozen=True)
class DataEndpoints:
    db_host: pulumi.Input[str]
    db_port: int
    db_database: str
    db_user: str
    db_password: pulumi.Output[str]
    db_max_connections: int
    cache_host: pulumi.Input[str]
    cache_port: int
    cache_password: Optional[pulumi.Output[str]]
    cache_tls: bool
    queue_host: pulumi.Input[str]
    queue_port: int
    s3_endpoint: Optional[pulumi.Input[str]]
    s3_region: str
    s3_bucket: str
    s3_access_key_id: pulumi.Output[str]
    s3_secret_access_key: pulumi.Output[str]
    s3_force_path_style: bool
