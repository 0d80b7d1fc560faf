"""Processes and probes: replicas, resources, ports, probe timings, shutdown grace and the
migration Job's limits, with the rules that tie them together."""

from __future__ import annotations

from dataclasses import dataclass

from components.settings.reader import Problem, Reader, set_command
from components.settings.values import parse_quantity, quantity

DEFAULT_API_PORT, DEFAULT_ADMIN_PORT = 3001, 3002
# Each Deployment's rolling update adds at most this many pods (maxSurge); the connection
# budget counts them, so both read it here.
MAX_SURGE = 1


@dataclass(frozen=True)
class ProcessSettings:
    """Replicas and container resources of one bundler process (api, workers, admin, migration)."""

    replicas: int
    cpu_request: str
    cpu_limit: str
    memory_request: str
    memory_limit: str


@dataclass(frozen=True)
class ProbeSettings:
    period_seconds: int
    timeout_seconds: int
    failure_threshold: int
    worker_liveness_failure_threshold: int


@dataclass(frozen=True)
class MigrationSettings:
    resources: ProcessSettings
    timeout_seconds: int
    backoff_limit: int


@dataclass(frozen=True)
class ProcessesSettings:
    api: ProcessSettings
    workers: ProcessSettings
    admin: ProcessSettings
    migration: MigrationSettings
    api_port: int
    admin_port: int
    api_grace_period_seconds: int
    api_pre_stop_seconds: int
    worker_grace_period_seconds: int
    probes: ProbeSettings

    def replicas(self) -> dict[str, int]:
        """Pods per process kind, as the connection budget counts them."""
        return {
            "api": self.api.replicas, "workers": self.workers.replicas, "admin": self.admin.replicas, "migration": 1
        }


def request_within_limit(prefix: str, request: str, limit: str, kind: str) -> list[Problem]:
    req, lim = parse_quantity(request), parse_quantity(limit)
    if req is not None and lim is not None and req > lim:
        key = f"{prefix}{kind}Request"
        return [Problem(key, f"({request}) is larger than {prefix}{kind}Limit ({limit}).", set_command(key, limit))]
    return []


def distinct_ports(api_port: int, admin_port: int) -> list[Problem]:
    if api_port == admin_port:
        return [Problem(
            "adminPort",
            f"is the same port as apiPort ({api_port}).",
            set_command("adminPort", str(DEFAULT_ADMIN_PORT)),
        )]
    return []


def probe_timeout_within_period(p: ProbeSettings) -> list[Problem]:
    if p.timeout_seconds >= p.period_seconds:
        return [
            Problem(
                "probeTimeoutSeconds",
                f"({p.timeout_seconds}s) must be shorter than probePeriodSeconds ({p.period_seconds}s).",
                set_command("probeTimeoutSeconds", str(max(2, p.period_seconds // 2))),
            )
        ]
    return []


def grace_outlasts_pre_stop(grace: int, pre_stop: int) -> list[Problem]:
    if grace <= pre_stop:
        return [
            Problem(
                "apiGracePeriodSeconds",
                f"({grace}s) must exceed apiPreStopSeconds ({pre_stop}s) or pods are killed mid-drain.",
                set_command("apiGracePeriodSeconds", str(pre_stop + 615)),
            )
        ]
    return []


def _process(
    r: Reader, prefix: str, replicas: int | None, cpu: tuple[str, str], mem: tuple[str, str]
) -> ProcessSettings:
    """`replicas=None` for the migration Job, which always runs one pod."""
    settings = ProcessSettings(
        replicas=1 if replicas is None else r.integer(f"{prefix}Replicas", replicas, minimum=1, maximum=100),
        cpu_request=r.text(f"{prefix}CpuRequest", cpu[0]),
        cpu_limit=r.text(f"{prefix}CpuLimit", cpu[1]),
        memory_request=r.text(f"{prefix}MemoryRequest", mem[0]),
        memory_limit=r.text(f"{prefix}MemoryLimit", mem[1]),
    )
    for suffix, value in (
        ("CpuRequest", settings.cpu_request),
        ("CpuLimit", settings.cpu_limit),
        ("MemoryRequest", settings.memory_request),
        ("MemoryLimit", settings.memory_limit),
    ):
        r.report(quantity(f"{prefix}{suffix}", value))
    r.report(request_within_limit(prefix, settings.cpu_request, settings.cpu_limit, "Cpu"))
    r.report(request_within_limit(prefix, settings.memory_request, settings.memory_limit, "Memory"))
    return settings


def read_processes(r: Reader) -> ProcessesSettings:
    api_port = r.integer("apiPort", DEFAULT_API_PORT, minimum=1, maximum=65535)
    admin_port = r.integer("adminPort", DEFAULT_ADMIN_PORT, minimum=1, maximum=65535)
    r.report(distinct_ports(api_port, admin_port))

    # Requests and memory limits from the runtime test's measurements (docs/sizing.md):
    # requests at the steady use, memory limits at twice the busiest peak.
    api = _process(r, "api", 1, ("100m", "1"), ("192Mi", "448Mi"))
    workers = _process(r, "worker", 1, ("50m", "1"), ("128Mi", "256Mi"))
    admin = _process(r, "admin", 1, ("50m", "250m"), ("64Mi", "128Mi"))
    migration = _process(r, "migration", None, ("100m", "500m"), ("256Mi", "512Mi"))

    probes = ProbeSettings(
        period_seconds=r.integer("probePeriodSeconds", 10, minimum=1, maximum=300),
        timeout_seconds=r.integer("probeTimeoutSeconds", 5, minimum=2, maximum=60),
        failure_threshold=r.integer("probeFailureThreshold", 3, minimum=1, maximum=30),
        worker_liveness_failure_threshold=r.integer("workerLivenessFailureThreshold", 6, minimum=1, maximum=60),
    )
    r.report(probe_timeout_within_period(probes))

    api_pre_stop = r.integer("apiPreStopSeconds", 15, minimum=0, maximum=300)
    # Upstream's REQUEST_TIMEOUT_MS is 10 minutes: an upload that started just before SIGTERM
    # may need that long, plus the preStop delay, to finish.
    api_grace = r.integer("apiGracePeriodSeconds", 630, minimum=1, maximum=7200)
    r.report(grace_outlasts_pre_stop(api_grace, api_pre_stop))
    return ProcessesSettings(
        api=api,
        workers=workers,
        admin=admin,
        migration=MigrationSettings(
            resources=migration,
            timeout_seconds=r.integer("migrationTimeoutSeconds", 600, minimum=30, maximum=86400),
            backoff_limit=r.integer("migrationBackoffLimit", 1, minimum=0, maximum=5),
        ),
        api_port=api_port,
        admin_port=admin_port,
        api_grace_period_seconds=api_grace,
        api_pre_stop_seconds=api_pre_stop,
        worker_grace_period_seconds=r.integer("workerGracePeriodSeconds", 60, minimum=31, maximum=3600),
        probes=probes,
    )
