"""Security as the pods live it: the users they run as and the files they can read, credentials
as files, passwords the app can use, admission and pulls, and no secret in any log
(seed risks 2 and 9: wallet mounts, private image pulls)."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterable
from typing import TYPE_CHECKING

from components.data_containers import redis_ping
from components.settings.reader import ConfigError
from tests.e2e.context import Context
from tests.e2e.plan import scenario
from tools.harness import run_program
from tools.render import promote_outputs

if TYPE_CHECKING:
    from tests.e2e.stack import StackTest

APP_COMPONENTS = ("api", "workers", "admin")
# Inside a bundler container: its ids, what in /app it could not read or enter, and the wallet file.
APP_USER_CHECK = ["sh", "-c", 'echo "$(id -u) $(id -g) $(id -G)"; find /app ! -perm -o+r | wc -l; '
                  'find /app -type d ! -perm -o+x | wc -l; stat -c "%u %g %a" "$TURBO_JWK_FILE"; '
                  'head -c 12 "$TURBO_JWK_FILE"']
# Inside the postgres container: its uid, the passwd entry for it (none expected), who owns PGDATA
# and the PG_VERSION initdb wrote, and the uid the server (PID 1) runs as.
POSTGRES_USER_CHECK = ["sh", "-c", 'id -u; getent passwd "$(id -u)" || echo no-entry; stat -c %u "$PGDATA"; '
                       'stat -c %u "$PGDATA/PG_VERSION" 2>/dev/null || echo none; '
                       "awk '/^Uid:/ {print $2}' /proc/1/status"]
URL_UNSAFE = set("#/:?@% \t\n")
# Keys that name who, not the secret: a user name or an access key's id (MinIO's is a host-like name).
IDENTIFIERS = ("-user", "-key-id", "username")


def secret_values(secrets: Iterable[dict[str, str]], wallet: str) -> set[str]:
    """The values a log or a file must never hold: each secret's (identifiers, short values and
    whole wallet files aside) and the wallet's private exponent."""
    found = {v for data in secrets for k, v in data.items()
             if len(v) >= 12 and not k.endswith(IDENTIFIERS) and not k.endswith(".json")}
    return found | {json.loads(wallet)["d"]}


def _app_lines(t: Context) -> list[str]:
    return [f"{c} runs as a high uid, not the image's; /app world-readable; wallet read through fsGroup"
            for c in APP_COMPONENTS]


@scenario(lines=_app_lines)
def app_user(t: StackTest) -> None:
    """The processes run as the manifest's high uid, not the image's owner of /app: /app must be
    world-readable for them, and the wallet (root's, 0400 in the spec) readable only through fsGroup."""
    image_uid = t.app.uid
    for component in APP_COMPONENTS:
        pod = t.cluster.pods(component)[0]
        c = pod.containers[0]
        fs_group = (pod.spec.get("securityContext") or {}).get("fsGroup")
        result = c.exec(APP_USER_CHECK, timeout=60)
        lines = result.detail.partition(": ")[2].splitlines()
        ids, unreadable, closed, wallet, head = (lines + [""] * 5)[:5]
        owner, group, mode = [*wallet.split(), "", "", ""][:3]
        uid, gid = c.launch.uid, c.launch.gid
        ok = (result.ok and ids.split()[:2] == [str(uid), str(gid)] and str(fs_group) in ids.split()[2:]
              and uid >= 10000 and uid != image_uid and unreadable == "0" and closed == "0"
              and owner == "0" and group == str(fs_group) and not int(mode or "7", 8) & 0o007
              and head.startswith("{"))
        t.ok(f"{component} runs as a high uid, not the image's; /app world-readable; wallet read through fsGroup", ok,
             f"uid {uid} (image's /app owner {image_uid}); id {ids}; /app entries not world-readable {unreadable}, "
             f"directories not enterable {closed}; wallet owner {owner} group {group} mode {mode}, "
             f"read {'ok' if head.startswith('{') else 'FAILED'}")


def _data_lines(t: Context) -> list[str]:
    if t.config.get("x402-bundler:dataMode") == "external":
        return []
    return ["data services and the bucket Job hold no credential in their env",
            "postgres initialised from POSTGRES_PASSWORD_FILE as a uid without a passwd entry",
            "cache Redis probes authenticate from the password file"]


@scenario(lines=_data_lines)
def data_secret_files(t: StackTest) -> None:
    """The in-cluster data services and the bucket Job hold no credential in their containers'
    env (checkov CKV_K8S_35): postgres initialised from POSTGRES_PASSWORD_FILE as a uid its
    image has no account for (initdb through nss_wrapper), the cache's probes authenticate from
    the password file, and MinIO and mc use the Secret's keys, which the upload then proves."""
    creds = next(v for k, v in t.cluster.store.secrets.items() if k.startswith("bundler-data-credentials"))
    values = [creds[k] for k in ("postgres-password", "cache-redis-password", "minio-root-password")]
    pods = [p for c in ("postgres", "redis-cache", "minio", "bucket-init") for p in t.cluster.all_pods(c)[:1]]
    in_env = sorted(f"{p.name}/{c.name}" for p in pods for c in p.containers if set(values) & set(c.env.values()))
    t.ok("data services and the bucket Job hold no credential in their env", len(pods) == 4 and not in_env,
         f"containers checked {len(pods)}; with a credential in env {in_env}")

    postgres = t.cluster.pods("postgres")[0].containers[0]
    lines = postgres.exec(POSTGRES_USER_CHECK, timeout=30).detail.partition(": ")[2].splitlines()
    uid, entry, owner, version_owner, server_uid = [*lines, "", "", "", "", ""][:5]
    user = postgres.env.get("POSTGRES_USER", "postgres")
    login = subprocess.run(
        ["psql", "-X", "-At", "-h", t.clients.resolve(t.cluster.config()["DB_HOST"]), "-U", user, "-d", "postgres",
         "-c", "SELECT current_user"], env={"PATH": os.environ["PATH"], "PGPASSWORD": creds["postgres-password"],
                                      "PGCONNECT_TIMEOUT": "5"}, capture_output=True, text=True, timeout=30)
    from_file = "POSTGRES_PASSWORD_FILE" in postgres.env and "POSTGRES_PASSWORD" not in postgres.env
    t.ok("postgres initialised from POSTGRES_PASSWORD_FILE as a uid without a passwd entry",
         uid.isdigit() and int(uid) >= 10000 and entry == "no-entry" and owner == version_owner == server_uid == uid
         and from_file and login.returncode == 0,
         f"uid {uid}, passwd entry {entry}; PGDATA and the PG_VERSION initdb wrote owned by {owner} and "
         f"{version_owner}; the server runs as {server_uid}; the env has only the _FILE variant: {from_file}; "
         f"{user} logs in over TCP with the Secret's password: "
         f"{'yes' if login.returncode == 0 else login.stderr.strip()[:120]}")

    cache = t.cluster.pods("redis-cache")[0].containers[0]
    port = str(cache.spec["ports"][0]["containerPort"])
    probe = cache.exec(cache.spec["readinessProbe"]["exec"]["command"], timeout=15)
    bare = cache.exec(["redis-cli", "-p", port, "ping"], timeout=15)
    # The same PONG check without the password file must fail: redis-cli itself exits 0 on NOAUTH.
    unauthenticated = cache.exec(redis_ping(int(port), authenticated=False), timeout=15)
    t.ok("cache Redis probes authenticate from the password file",
         probe.ok and "NOAUTH" in bare.detail and not unauthenticated.ok,
         f"probe: {probe.detail}; redis-cli without the file: {bare.detail}; "
         f"the probe's check without the file: {unauthenticated.detail}")


@scenario("database password with URL characters refused; the one in use is URL-safe", remote=True)
def database_password(t: Context) -> None:
    """The app puts DB_PASSWORD unescaped into a URL: the stack refuses such a configured password,
    and the one the pods use (generated by the program's RandomPassword, or configured) has none."""
    used = t.clients.endpoints["db_password"]
    try:
        run_program(t.stack, overrides={"dataMode": "external", "dbHost": "db.example.internal",
                                        "cacheRedisHost": "cache.example.internal",
                                        "queueRedisHost": "queue.example.internal"},
                    secrets={**t.values, "dbPassword": "pa#ss@word/with:url?chars%", "s3AccessKeyId": "k",
                             "s3SecretAccessKey": "s"},
                    stack_outputs=promote_outputs(t.stack))
        refused = ""
    except ConfigError as error:
        refused = str(error)
    named = "x402-bundler:dbPassword" in refused and "pa#ss" not in refused
    unsafe = sorted(set(used) & URL_UNSAFE)
    generated = t.state.db_password_inputs
    origin = (f"generated by RandomPassword({generated})" if generated
              else "configured as the stack's dbPassword secret")
    t.ok("database password with URL characters refused; the one in use is URL-safe", named and not unsafe,
         f"a configured password with # @ / : ? % -> "
         f"{'ConfigError naming dbPassword, password not echoed' if named else 'NOT refused: ' + refused[:120]}; "
         f"the password this run's pods use, {origin}: {len(used)} characters, "
         f"URL characters in it: {unsafe or 'none'}")


@scenario("every pod admitted as restricted, every image pulled by digest from the runner's registry")
def admitted_and_pulled(t: StackTest) -> None:
    pods = [p for w in t.cluster.workloads.values() for p in w.pods]
    refs = sorted({c.spec["image"] for p in pods for c in p.containers})
    blocked = [f"{p.name}: {'; '.join(p.blocked.values())}" for p in pods if p.blocked]
    refused = [w.detail for w in t.cluster.workloads.values() if w.detail.startswith("FailedCreate")]
    undigested = [r for r in refs if "@sha256:" not in r]
    private = sorted({c.spec["image"].split("@")[0] for p in pods if p.spec.get("imagePullSecrets")
                      for c in p.containers})
    t.ok("every pod admitted as restricted, every image pulled by digest from the runner's registry",
         bool(pods) and not blocked and not refused and not undigested,
         f"{len(pods)} pods admitted under {t.cluster.namespace_labels.get('pod-security.kubernetes.io/enforce')}; "
         f"refused {refused or 'none'}; not started {blocked or 'none'}; {len(refs)} images, by digest: "
         f"{len(refs) - len(undigested)} {undigested or ''}; pulled with a pull Secret: {private or 'none'}")


@scenario("no secret value in any container log", remote=True)
def secrets_in_logs(t: Context) -> None:
    """Secrets never reach a log line (the logs are what the pods printed)."""
    values = secret_values(t.cluster.store.secrets.values(), t.values["arweaveWallet"])
    leaked = sorted({p.name for w in t.cluster.workloads.values() for p in w.pods for c in p.containers
                     for text in [c.logs()] if any(v in text for v in values)})
    t.ok("no secret value in any container log", not leaked, f"checked {len(values)} values; leaks in {leaked}")
