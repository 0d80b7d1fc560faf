"""The data path: the API answers, a signed upload is accepted, stored, queued and worked, and
the admin dashboard and its statistics see it (seed risks 2 and 10: the wallet the app really
reads, and checks that look at what the app does, not at a port)."""

from __future__ import annotations

import json
import re
import time
from typing import TYPE_CHECKING, Any, Optional

from tests.e2e.clients import LARGE
from tests.e2e.context import Context
from tests.e2e.plan import scenario
from tests.e2e.wallet import address_of
from tools.harness import Recording

if TYPE_CHECKING:
    from tests.e2e.stack import StackTest

# The statistics the admin computes (admin/statsCollector.js): a section that fails is null, and
# the answer is still 200. It caches them for 30 s in Redis. Its per-queue entries carry no name
# (it reads `queue.name`, which bull-board's BullMQAdapter does not have: only getName()), so the
# check reads the totals over all queues.
STATS_SECTIONS = ("upload", "x402", "bundles", "system", "queues")
STATS_CACHE_SECONDS = 30
NEW_DATA_ITEM_QUEUE = "upload-new-data-item"


@scenario("GET /v1/info shows the stack's wallet and payment address", remote=True)
def info(t: Context) -> None:
    c = t.cluster.config()
    status, body = t.clients.http(f"{t.api_url()}/v1/info")
    try:
        text = json.dumps(json.loads(body))
    except json.JSONDecodeError:
        text = ""
    wallet = address_of(t.values["arweaveWallet"])
    payment = c["X402_PAYMENT_ADDRESS"].lower() in text.lower()
    t.ok("GET /v1/info shows the stack's wallet and payment address", status == 200 and wallet in text and payment,
         f"HTTP {status}; wallet {wallet[:10]}… {'present' if wallet in text else 'MISSING'}; "
         f"payment address {'present' if payment else 'MISSING'}")


API_DOCS = "API documents: /openapi.json from docs/openapi.yaml, and the /api-docs page"


@scenario(API_DOCS, remote=True)
def api_docs(t: Context) -> None:
    """Files the API reads by path at request time: docs/openapi.yaml relative to its working
    directory (image/tracer keeps it by rule), and koa2-swagger-ui's page template."""
    status, body = t.clients.http(f"{t.api_url()}/openapi.json")
    try:
        spec = json.loads(body)
    except json.JSONDecodeError:
        spec = {}
    paths = spec.get("paths") or {} if isinstance(spec, dict) else {}
    page_status, page = t.clients.http(f"{t.api_url()}/api-docs")
    t.ok(API_DOCS, status == 200 and bool(spec.get("openapi")) and bool(paths) and page_status == 200
         and "openapi.json" in page,
         f"/openapi.json HTTP {status}: OpenAPI {spec.get('openapi') if isinstance(spec, dict) else None}, "
         f"{len(paths)} paths; /api-docs HTTP {page_status} ({len(page)} bytes, "
         f"{'names' if 'openapi.json' in page else 'does not name'} ./openapi.json)")


def admin_stats(t: Context) -> tuple[int, Optional[dict[str, Any]], str]:
    c = t.cluster.config()
    auth = (c.get("ADMIN_USERNAME", "admin"), t.clients.endpoints["admin_password"])
    status, body = t.clients.http(f"{t.service_url('bundler-admin')}/admin/stats", auth=auth)
    try:
        parsed = json.loads(body)
    except json.JSONDecodeError:
        parsed = None
    return status, parsed if isinstance(parsed, dict) else None, body


def completed_jobs(stats: dict[str, Any]) -> Optional[int]:
    """Jobs the bundler's queues have completed, as the admin's statistics count them."""
    totals = (stats.get("queues") or {}).get("totals") or {}
    return int(totals["completed"]) if "completed" in totals else None


@scenario(remote=True)
def stats_before(t: Context) -> None:
    """The admin's statistics before this run uploads anything (the admin scenario compares)."""
    status, stats, _ = admin_stats(t)
    t.state.stats_before = stats if status == 200 else None
    t.state.accepted_uploads = 0


@scenario("signed upload through the API Service", "upload stored: PostgreSQL and the bucket",
          "a worker took the upload off the queue", "optical bridging off (no bridge URL): nothing queued for it",
          "free uploads only up to freeUploadLimit", "writable FS_DATA_PATH on a read-only root", remote=True)
def upload(t: Context) -> None:
    result = t.clients.upload(t.api_url())
    item = str(result.get("id", ""))
    ok = result.get("status") == 200 and result.get("receipt_valid") is True
    t.state.accepted_uploads += result.get("status") == 200
    t.ok("signed upload through the API Service", ok,
         f"HTTP {result.get('status')}, receipt {'verified' if result.get('receipt_valid') else 'NOT verified'} "
         f"against the stack wallet, id {item[:12]}…, {result.get('elapsed_ms')} ms"
         + ("" if ok else f"; body {str(result.get('body'))[:300]}"))
    t.state.item_id = item
    in_db = t.cluster.wait(lambda: in_database(t, item), 60)
    keys = t.clients.s3_keys(f"raw-data-item/{item}") if item else []
    t.ok("upload stored: PostgreSQL and the bucket", in_db is not None and bool(keys),
         f"row in PostgreSQL after {in_db if in_db is None else round(in_db, 1)} s (a worker inserts it from "
         f"the upload-new-data-item queue); bucket key {keys[0] if keys else 'MISSING'}")

    def counts() -> dict[str, str]:
        return {state: t.clients.redis("queue", command, f"bull:{NEW_DATA_ITEM_QUEUE}:{state}")
                for state, command in (("wait", "LLEN"), ("active", "LLEN"), ("completed", "ZCARD"),
                                       ("failed", "ZCARD"))}

    took = t.cluster.wait(lambda: counts()["completed"] not in ("", "0"), 30)
    now = counts()
    t.ok("a worker took the upload off the queue", took is not None and now["failed"] in ("", "0"),
         f"new-data-item queue after {took if took is None else round(took, 1)} s: {now}")
    # BullMQ numbers jobs from the queue's `id` key: no key, no job was ever added.
    optical = t.clients.redis("queue", "GET", "bull:upload-optical-post:id")
    enabled = t.cluster.config().get("OPTICAL_BRIDGING_ENABLED")
    t.ok("optical bridging off (no bridge URL): nothing queued for it", enabled == "false" and optical in ("", "0"),
         f"OPTICAL_BRIDGING_ENABLED={enabled}; upload-optical-post jobs ever added: {optical or 0}")
    limit = int(t.cluster.config().get("FREE_UPLOAD_LIMIT", "-1"))
    large = t.clients.upload(t.api_url(), size=LARGE)
    real_limit = rendered_config(t.render(overrides={})).get("FREE_UPLOAD_LIMIT")
    expected_real = "0" if t.stack == "prod" else t.config.get("x402-bundler:freeUploadLimit")
    t.ok("free uploads only up to freeUploadLimit",
         large.get("status") == 402 and limit > 0 and real_limit == expected_real,
         f"{LARGE} B unpaid upload -> HTTP {large.get('status')} (limit {limit} B in this run); "
         f"the stack file renders FREE_UPLOAD_LIMIT={real_limit}")
    fs_path = t.cluster.config().get("FS_DATA_PATH", "")
    created = t.upload_data_entries()
    t.ok("writable FS_DATA_PATH on a read-only root", bool(fs_path) and "upload-service-data" in created,
         f"FS_DATA_PATH={fs_path}; the upload-data volume holds {created}")


def in_database(t: Context, item: str) -> bool:
    tables = ("new_data_item", "planned_data_item", "permanent_data_items", "failed_data_item")
    union = " UNION ALL ".join(f"SELECT 1 FROM {table} WHERE data_item_id = '{item}'" for table in tables)
    try:
        return t.clients.sql(f"SELECT count(*) FROM ({union}) x") not in ("", "0")
    except RuntimeError:
        return False


def queue_board(t: Context, board: str, auth: tuple[str, str]) -> None:
    """The views and static files @bull-board/ui ships (image/tracer keeps them by rule: no tracer
    sees how @bull-board/api finds them), and the queues the board reads from the queue Redis."""
    anonymous, _ = t.clients.http(f"{board}/")
    status, page = t.clients.http(f"{board}/", auth=auth)
    scripts = re.findall(r'src="(?:\./)?(static/[^"]+\.js)"', page)
    fetched = [t.clients.http(f"{board}/{src}", auth=auth) for src in scripts[:2]]
    listing, body = t.clients.http(f"{board}/api/queues", auth=auth)
    try:
        names = sorted(q.get("name", "") for q in json.loads(body).get("queues") or [])
    except (json.JSONDecodeError, AttributeError):
        names = []
    t.ok(QUEUE_BOARD, anonymous == 401 and status == 200 and bool(scripts)
         and all(code == 200 and len(js) > 0 for code, js in fetched) and listing == 200
         and any(n.startswith("upload-") for n in names),
         f"without credentials HTTP {anonymous}; page HTTP {status} naming {len(scripts)} scripts, the first "
         f"{len(fetched)} HTTP {[code for code, _ in fetched]} ({sum(len(js) for _, js in fetched)} bytes); "
         f"api/queues HTTP {listing}: {len(names)} queues {names[:3]}")


def rendered_config(rec: Recording) -> dict[str, str]:
    maps = [r for r in rec.resources if r.type == "kubernetes:core/v1:ConfigMap"
            and str(r.get("metadata.name", "")).startswith("bundler-settings")]
    return dict(maps[0].inputs.get("data") or {}) if maps else {}


QUEUE_BOARD = "queue board (bull-board): its page, its scripts and its queue list, behind the admin password"


@scenario("admin dashboard behind the stack's admin password", QUEUE_BOARD, "admin statistics", remote=True)
def admin(t: Context) -> None:
    c = t.cluster.config()
    base = t.service_url("bundler-admin")
    user, password = c.get("ADMIN_USERNAME", "admin"), t.clients.endpoints["admin_password"]
    anonymous, _ = t.clients.http(f"{base}/admin/dashboard/")
    dashboard, page = t.clients.http(f"{base}/admin/dashboard/", auth=(user, password))
    t.ok("admin dashboard behind the stack's admin password", anonymous == 401 and dashboard == 200,
         f"without credentials HTTP {anonymous}, with HTTP {dashboard} ({len(page)} bytes)")
    queue_board(t, f"{base}/admin/queues", (user, password))
    before = t.state.stats_before
    expected = t.state.accepted_uploads
    was = completed_jobs(before) if before else None
    status, stats, body = admin_stats(t)
    # A fresh computation (not the 30 s cached one) that has seen every accepted upload worked.
    deadline = time.monotonic() + STATS_CACHE_SECONDS * 2.5
    while (status == 200 and stats is not None and before is not None and was is not None
           and (stats.get("timestamp") == before.get("timestamp") or (completed_jobs(stats) or 0) - was < expected)
           and time.monotonic() < deadline):
        time.sleep(2)
        status, stats, body = admin_stats(t)
    stats = stats or {}
    null = [s for s in STATS_SECTIONS if stats.get(s) is None]
    now = completed_jobs(stats)
    moved = None if now is None or was is None else now - was
    # Each accepted upload is one new-data-item job; a scheduled cleanup may add one more.
    t.ok("admin statistics",
         status == 200 and not null and before is not None and expected > 0 and moved is not None and moved >= expected,
         f"/admin/stats HTTP {status}; sections that failed (null): {null or 'none'}; queue jobs completed "
         f"{was} -> {now}, moved {moved} with the {expected} uploads this run had accepted since the first reading "
         f"({'taken' if before else 'MISSING'})" + ("" if status == 200 else f"; {body[:200]}"))


@scenario("S3 probe uses object calls only (no s3:ListBucket)")
def s3_probe_calls(t: StackTest) -> None:
    """The readiness probe's S3 check needs only object permissions, as the app does."""
    minio = t.cluster.pods("minio")
    log = (minio[0].volume_path("tmp") / "s3-requests.log" if minio
           else t.root / "outside" / "s3" / "requests.log")
    bucket = t.cluster.config()["DATA_ITEM_BUCKET"]
    # Lines are "client method host path"; the bucket Job creates the bucket, so its calls are bucket-level.
    bucket_job = {p.ip for p in t.cluster.all_pods("bucket-init")}
    lines = [line.split(" ") for line in (log.read_text().splitlines() if log.exists() else [])]
    app = [f for f in lines if len(f) == 4 and f[0] not in bucket_job]
    probe = [f for f in app if ".x402-bundler-deep-check" in f[3]]
    bucket_level = [" ".join(f[1:]) for f in app if f[3] in ("/", f"/{bucket}", f"/{bucket}/")]
    methods = sorted({f[1] for f in probe})
    t.ok("S3 probe uses object calls only (no s3:ListBucket)", bool(probe) and not bucket_level,
         f"{len(probe)} probe requests ({', '.join(methods)} on the probe object); bucket-level requests "
         f"from the app and its probes: {len(bucket_level)}{' ' + str(bucket_level[:3]) if bucket_level else ''}")
