#!/usr/bin/env node
// Deep readiness/liveness probe for the x402 bundler pods.
//
// The app's own GET /health answers 200 even when its database is gone, so the
// kubelet runs this script (exec probe) to ask the backing services directly,
// with the app's own environment and the client libraries the image already
// ships in /app/node_modules (no extra packages, no build step).
//
//   node deep-check.js --checks postgres,redis-cache,redis-queue,s3,bullmq-worker \
//                      --timeout-ms 2500
//
// Prints one JSON line: {"ok":bool,"checks":{"<name>":{"ok":bool,"ms":n,"error":"..."}}}
// Exit 0 = all selected checks passed, 1 = at least one failed, 2 = bad usage.
//
// It runs every few seconds in every pod, so it must be cheap and must never
// outlive its timeout: a probe that hangs is reported by the kubelet as a
// timeout with no output, which tells the operator nothing.
'use strict';

const fs = require('fs');
const path = require('path');

const USAGE = `usage: deep-check.js --checks <list> [--timeout-ms <n>]
  <list>  comma-separated, any of: postgres, redis-cache, redis-queue, s3, bullmq-worker
  <n>     per-run time budget in milliseconds (default 2500)`;

const DEFAULT_TIMEOUT_MS = 2500;
// The per-check timers fire at --timeout-ms; the hard deadline only has to cover
// a client whose cleanup or error path stalls the normal finish.
const HARD_DEADLINE_MARGIN_MS = 250;

// ---------------------------------------------------------------- helpers

// First non-empty variable wins. Empty strings count as unset because a
// Kubernetes manifest often renders an optional value as "".
function env(...names) {
  for (const n of names) {
    const v = process.env[n];
    if (v !== undefined && v !== '') return v;
  }
  return undefined;
}

function envInt(name, fallback) {
  const v = env(name);
  return v === undefined ? fallback : Number.parseInt(v, 10);
}

// Defence in depth: no client library we use puts passwords in its errors
// today, but the output lands in pod events and logs, so strip them anyway.
const SECRETS = [
  'DB_PASSWORD', 'ELASTICACHE_PASSWORD', 'AWS_SECRET_ACCESS_KEY',
  'S3_SECRET_ACCESS_KEY', 'AWS_SESSION_TOKEN', 'S3_SESSION_TOKEN',
]
  .map((n) => process.env[n])
  .filter((v) => v)
  .sort((a, b) => b.length - a.length); // longest first: one secret may contain another

function scrub(text) {
  let out = String(text);
  for (const s of SECRETS) out = out.split(s).join('***');
  return out;
}

function describe(err) {
  if (!err) return 'unknown error';
  // net.connect to a name with several addresses (happy eyeballs) fails with an
  // AggregateError whose own message is empty; the useful text is inside.
  if (Array.isArray(err.errors) && err.errors.length) {
    return err.errors.map(describe).join('; ');
  }
  let text = err.message || err.code || String(err);
  // pg's server errors are named plain "error"; their SQLSTATE is the useful part.
  if (err.name && !/^error$/i.test(err.name) && !text.startsWith(err.name)) {
    text = `${err.name}: ${text}`;
  }
  if (err.severity && err.code) text += ` (SQLSTATE ${err.code})`;
  // S3 HEAD responses have no body, so the SDK's message is just "UnknownError";
  // the status code is what tells 403 from 404.
  const status = err.$metadata && err.$metadata.httpStatusCode;
  if (status) text += ` (HTTP ${status})`;
  return text;
}

// The script is mounted from a ConfigMap (e.g. /probes/deep-check.js), far from
// the image's node_modules, so resolve explicitly instead of relying on the
// script's own location. NODE_PATH (used by the tests) comes first.
function load(name) {
  const dirs = (process.env.NODE_PATH || '')
    .split(path.delimiter)
    .filter(Boolean)
    .concat('/app/node_modules');
  let resolved;
  try {
    resolved = require.resolve(name, { paths: dirs });
  } catch (e) {
    throw new Error(`cannot load ${name} from ${dirs.join(', ')}`);
  }
  return require(resolved);
}

// ---------------------------------------------------------------- checks

// Each check gets ctx = { timeoutMs, mod, defer(fn) }; defer registers cleanup
// that runs whether the check passed, failed or timed out.

async function checkPostgres(ctx) {
  const { Client } = ctx.mod;
  const client = new Client({
    // Same precedence as the app's knex writer config.
    host: env('DB_WRITER_ENDPOINT', 'DB_HOST') || '127.0.0.1',
    port: envInt('DB_PORT', 5432),
    user: env('DB_USER'),
    password: env('DB_PASSWORD'),
    database: env('DB_DATABASE') || 'bundler_lite',
    ssl: false, // the app connects with sslmode=disable
    application_name: 'deep-check',
    connectionTimeoutMillis: ctx.timeoutMs,
    query_timeout: ctx.timeoutMs,
    statement_timeout: ctx.timeoutMs,
  });
  // A server that drops the connection after connect emits 'error' on the
  // client; unhandled, that would crash the probe instead of failing the check.
  client.on('error', () => {});
  ctx.defer(() => {
    if (client.connection && client.connection.stream) client.connection.stream.destroy();
  });
  await client.connect();
  await client.query('SELECT 1');
  client.end().catch(() => {});
}

// One-shot ioredis client: no reconnects, no offline queue, no retries, so a
// dead server fails the check at once instead of being retried past the deadline.
function redisClient(ctx, { host, port, password, tls }) {
  const RedisMod = ctx.mod;
  const Redis = RedisMod.default || RedisMod;
  const client = new Redis({
    host,
    port,
    password,
    tls,
    lazyConnect: true,
    enableOfflineQueue: false,
    maxRetriesPerRequest: 0,
    retryStrategy: () => null,
    reconnectOnError: () => false,
    connectTimeout: ctx.timeoutMs,
    commandTimeout: ctx.timeoutMs,
    // Visible in CLIENT LIST, so an operator can tell probe traffic apart.
    connectionName: 'deep-check',
  });
  // connect() often rejects with a bare "Connection is closed."; the real cause
  // (ECONNREFUSED, WRONGPASS, ...) arrives on the 'error' event.
  let lastError;
  client.on('error', (e) => { lastError = e; });
  ctx.defer(() => client.disconnect());
  const ready = client.connect().then(
    () => client,
    (e) => { throw lastError || e; },
  );
  return ready;
}

async function checkRedisCache(ctx) {
  const client = await redisClient(ctx, {
    host: env('ELASTICACHE_HOST') || '127.0.0.1',
    port: envInt('ELASTICACHE_PORT', 6379),
    password: env('ELASTICACHE_PASSWORD'),
    tls: env('ELASTICACHE_USE_TLS') === 'true' ? {} : undefined,
  });
  await client.ping();
}

// redis-queue and bullmq-worker talk to the same server: share one connection.
let queueClient;
function queueRedis(ctx) {
  if (!queueClient) {
    // The app's queue connection has no password or TLS options at all.
    queueClient = redisClient(ctx, {
      host: env('REDIS_HOST') || '127.0.0.1',
      port: envInt('REDIS_PORT_QUEUES', 6381),
    });
  }
  return queueClient;
}

async function checkRedisQueue(ctx) {
  const client = await queueRedis(ctx);
  await client.ping();
}

// Which CLIENT LIST names are BullMQ workers. Read in bullmq 5.63.0 (the
// version in the bundler's yarn.lock), dist/cjs/classes:
//   queue-base.js  clientName(suffix = '') =
//                    `${this.opts.prefix}:${base64(queueName)}${suffix}`  (prefix defaults to "bull")
//   worker.js      the worker's blocking connection is created with
//                    connectionName = this.clientName() + (opts.name ? `:w:${opts.name}` : '')
//   queue-getters.js getWorkers() counts name === clientName() or name.startsWith(clientName() + ':w:')
// So a worker is "bull:<base64>" or "bull:<base64>:w:<name>". QueueEvents use
// "bull:<base64>:qe" and plain Queue (producer) connections are unnamed; neither
// means the pod is consuming jobs. The app creates its Workers without a name
// and with the default prefix, so its connections are "bull:<base64 queue name>".
// Requiring valid base64 (length a multiple of 4) keeps "bull:<b64>:qe" from
// being read as prefix "bull:<b64>" plus queue "qe".
function isBullmqWorkerName(name) {
  const m = /^bull:([A-Za-z0-9+/]+={0,2})(?::w:.+)?$/.exec(name || '');
  return Boolean(m) && m[1].length % 4 === 0;
}

// "10.1.2.3:45678" or "[fd00::1]:45678" -> bare, comparable address.
function normaliseIp(ip) {
  let s = String(ip).trim().toLowerCase();
  if (s.startsWith('[') && s.includes(']')) s = s.slice(1, s.indexOf(']'));
  if (s.startsWith('::ffff:') && s.includes('.')) s = s.slice(7); // IPv4-mapped IPv6
  return s;
}

function hostOfAddr(addr) {
  if (addr.startsWith('[')) return normaliseIp(addr);
  const i = addr.lastIndexOf(':');
  return normaliseIp(i === -1 ? addr : addr.slice(0, i));
}

// Proves that THIS pod's worker process holds live BullMQ connections: the
// queue Redis sees the connection coming from the pod IP. (That holds when the
// pod reaches Redis without SNAT, as with in-cluster Services.)
async function checkBullmqWorker(ctx) {
  const podIp = env('POD_IP');
  if (!podIp) {
    throw new Error('POD_IP is not set (expose status.podIP through the downward API)');
  }
  const want = normaliseIp(podIp);
  const client = await queueRedis(ctx);
  const list = await client.client('LIST');
  let fromPod = 0;
  let workersElsewhere = 0;
  let workersHere = 0;
  for (const line of String(list).split(/\r?\n/)) {
    if (!line) continue;
    const fields = {};
    // Redis rejects spaces in client names, so splitting on spaces is safe.
    for (const kv of line.split(' ')) {
      const eq = kv.indexOf('=');
      if (eq > 0) fields[kv.slice(0, eq)] = kv.slice(eq + 1);
    }
    const isWorker = isBullmqWorkerName(fields.name);
    const isHere = fields.addr && hostOfAddr(fields.addr) === want;
    if (isHere) fromPod += 1;
    if (isWorker && isHere) workersHere += 1;
    if (isWorker && !isHere) workersElsewhere += 1;
  }
  if (workersHere === 0) {
    throw new Error(
      `no BullMQ worker connection from POD_IP ${podIp} ` +
      `(${fromPod} other connection(s) from this IP, ${workersElsewhere} worker connection(s) from other IPs)`,
    );
  }
}

async function checkS3(ctx) {
  const { S3Client, HeadBucketCommand } = ctx.mod;
  // Same variable precedence as the app's S3 object store.
  const accessKeyId = env('S3_ACCESS_KEY_ID', 'AWS_ACCESS_KEY_ID');
  const secretAccessKey = env('S3_SECRET_ACCESS_KEY', 'AWS_SECRET_ACCESS_KEY');
  const sessionToken = env('S3_SESSION_TOKEN', 'AWS_SESSION_TOKEN');
  const endpoint = env('S3_ENDPOINT', 'AWS_ENDPOINT');
  const forcePathStyle = env('S3_FORCE_PATH_STYLE');
  const client = new S3Client({
    region: env('DATA_ITEM_BUCKET_REGION', 'S3_REGION', 'AWS_REGION') || 'us-east-1',
    ...(endpoint ? { endpoint } : {}),
    ...(forcePathStyle !== undefined ? { forcePathStyle: forcePathStyle === 'true' } : {}),
    // Without static keys the SDK's default chain is used (IRSA, instance role).
    ...(accessKeyId && secretAccessKey
      ? { credentials: { accessKeyId, secretAccessKey, ...(sessionToken ? { sessionToken } : {}) } }
      : {}),
    maxAttempts: 1, // a probe must report, not retry
    requestHandler: { connectionTimeout: ctx.timeoutMs, requestTimeout: ctx.timeoutMs },
  });
  const abort = new AbortController();
  ctx.defer(() => { abort.abort(); client.destroy(); });
  await client.send(
    new HeadBucketCommand({ Bucket: env('DATA_ITEM_BUCKET') || 'bundler-data-items' }),
    { abortSignal: abort.signal },
  );
}

const CHECKS = {
  postgres: { module: 'pg', run: checkPostgres },
  'redis-cache': { module: 'ioredis', run: checkRedisCache },
  'redis-queue': { module: 'ioredis', run: checkRedisQueue },
  s3: { module: '@aws-sdk/client-s3', run: checkS3 },
  'bullmq-worker': { module: 'ioredis', run: checkBullmqWorker },
};

// ---------------------------------------------------------------- main

function usageError(message) {
  process.stderr.write(`deep-check: ${message}\n${USAGE}\n`);
  process.exit(2);
}

function parseArgs(argv) {
  let checks;
  let timeoutMs = DEFAULT_TIMEOUT_MS;
  for (let i = 0; i < argv.length; i += 1) {
    let arg = argv[i];
    let value;
    const eq = arg.indexOf('=');
    if (arg.startsWith('--') && eq !== -1) {
      value = arg.slice(eq + 1);
      arg = arg.slice(0, eq);
    }
    if (arg === '-h' || arg === '--help') {
      process.stdout.write(`${USAGE}\n`);
      process.exit(0);
    }
    if (arg !== '--checks' && arg !== '--timeout-ms') usageError(`unknown argument: ${arg}`);
    if (value === undefined) {
      i += 1;
      value = argv[i];
      if (value === undefined) usageError(`${arg} needs a value`);
    }
    if (arg === '--checks') {
      checks = value.split(',').map((s) => s.trim()).filter(Boolean);
    } else {
      if (!/^\d+$/.test(value) || Number(value) < 1) usageError(`invalid --timeout-ms: ${value}`);
      timeoutMs = Number(value);
    }
  }
  if (!checks || checks.length === 0) usageError('--checks is required');
  const unknown = checks.filter((c) => !Object.prototype.hasOwnProperty.call(CHECKS, c));
  if (unknown.length) usageError(`unknown check(s): ${unknown.join(', ')}`);
  return { checks: [...new Set(checks)], timeoutMs };
}

function main() {
  const { checks, timeoutMs } = parseArgs(process.argv.slice(2));
  const results = {};
  const cleanups = [];
  let finished = false;

  // Print once, then exit at once: process.exit also drops any socket a
  // client library still holds, so nothing can keep the probe alive.
  function finish() {
    if (finished) return;
    finished = true;
    for (const fn of cleanups) {
      try { fn(); } catch (e) { /* best effort */ }
    }
    const out = { ok: checks.every((c) => results[c] && results[c].ok), checks: {} };
    for (const c of checks) out.checks[c] = results[c];
    fs.writeSync(1, `${scrub(JSON.stringify(out))}\n`);
    process.exit(out.ok ? 0 : 1);
  }

  // Loading @aws-sdk/client-s3 takes a few hundred ms of synchronous work; do
  // it before the clock starts so it cannot eat the checks' network budget.
  const mods = {};
  for (const c of checks) {
    try {
      mods[c] = load(CHECKS[c].module);
    } catch (e) {
      results[c] = { ok: false, ms: 0, error: describe(e) };
    }
  }

  const started = Date.now();
  setTimeout(() => {
    for (const c of checks) {
      if (!results[c]) {
        results[c] = { ok: false, ms: Date.now() - started, error: `timed out after ${timeoutMs} ms` };
      }
    }
    finish();
  }, timeoutMs + HARD_DEADLINE_MARGIN_MS);

  const runs = checks.filter((c) => !results[c]).map((c) => {
    const t0 = Date.now();
    let timer;
    const ctx = { timeoutMs, mod: mods[c], defer: (fn) => cleanups.push(fn) };
    const deadline = new Promise((_, reject) => {
      timer = setTimeout(() => reject(new Error(`timed out after ${timeoutMs} ms`)), timeoutMs);
    });
    return Promise.race([Promise.resolve().then(() => CHECKS[c].run(ctx)), deadline])
      .then(
        () => { results[c] = { ok: true, ms: Date.now() - t0 }; },
        (e) => { results[c] = { ok: false, ms: Date.now() - t0, error: describe(e) }; },
      )
      .finally(() => clearTimeout(timer));
  });
  Promise.all(runs).then(finish);
}

// A bug or an unexpected library throw must still produce a scrubbed, failing
// result rather than a stack trace that might quote the environment.
process.on('uncaughtException', (e) => {
  fs.writeSync(1, `${scrub(JSON.stringify({ ok: false, checks: {}, error: describe(e) }))}\n`);
  process.exit(1);
});
process.on('unhandledRejection', (e) => {
  fs.writeSync(1, `${scrub(JSON.stringify({ ok: false, checks: {}, error: describe(e) }))}\n`);
  process.exit(1);
});

main();
