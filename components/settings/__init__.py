"""Typed, validated stack settings, one module per section: nothing deploys on a bad config.

Upstream's container "starts even if critical env vars are missing, then fails at runtime"
(docs/risks.md). Here every value the program reads comes from one frozen `Settings`, built by
`load_settings()` from the sections below, which reports *every* problem at once (key, what is
wrong, the command that fixes it) and raises before a single resource is registered. Each
section module holds its dataclass, its reader and its rules; `values` holds the validators
several sections share; `budget` is the one rule across sections (processes and data).

Secret values are read as plain text only to be checked, then kept as secret Outputs; no
check ever echoes them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import pulumi

from components.names import PROJECT
from components.settings.app import AppSettings, read_app
from components.settings.budget import connection_budget
from components.settings.data import DataSettings, read_data
from components.settings.exposure import ExposureSettings, read_exposure
from components.settings.github import GithubSettings, read_github
from components.settings.image import ImageSettings, read_image
from components.settings.processes import ProcessesSettings, read_processes
from components.settings.reader import ConfigError, Reader
from components.settings.stack import StackIdentity, check_examples, read_environment, read_stack
from components.settings.stack_file import ROOT, declared_keys, stack_file_problems

__all__ = ["ConfigError", "Settings", "load_settings"]


@dataclass(frozen=True)
class Settings:
    """Everything the program reads, validated, by section. Built once by `load_settings()`."""

    stack: StackIdentity
    app: AppSettings
    processes: ProcessesSettings
    image: ImageSettings
    data: DataSettings
    exposure: ExposureSettings
    github: GithubSettings


def load_settings(config: Optional[pulumi.Config] = None) -> Settings:
    """Read and validate the stack configuration; raise ConfigError listing every problem."""
    r = Reader(config or pulumi.Config(PROJECT))
    stack_name = pulumi.get_stack()
    environment = read_environment(r)
    is_prod = environment == "prod"
    # Sections in the order the keys are listed in docs/configuration.md's example error.
    app = read_app(r, is_prod)
    image = read_image(r, is_prod)
    data = read_data(r, is_prod)
    processes = read_processes(r)
    r.report(
        connection_budget(
            processes.replicas(), data.postgres.pool_max, data.postgres.max_connections, data.mode == "in-cluster"
        )
    )
    exposure = read_exposure(r)
    github = read_github(r)
    stack = read_stack(r, stack_name, environment, image.version)
    declared = declared_keys()
    check_examples(r, stack_name, environment, set(declared))
    reported = {p.key for p in r.problems}
    r.report(p for p in stack_file_problems(ROOT / f"Pulumi.{stack_name}.yaml", declared) if p.key not in reported)
    if r.problems:
        raise ConfigError(stack_name, r.problems)
    return Settings(
        stack=stack, app=app, processes=processes, image=image, data=data, exposure=exposure, github=github
    )
