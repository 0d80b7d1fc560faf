#!/usr/bin/env node
// Deep readiness/liveness checks for the x402 bundler pods.
//
// The app's own GET /health answers 200 even when its database is gone, so these
// checks ask the backing services directly, with the app's own environment and
// the client libraries the image already ships in /app/node_modules (no extra
// packages, no build step).
//
// The kubelet asks for them over HTTP: probe-server.js, preloaded into each
// bundler process, runs runChecks() in-process (see its header for why). The
// same checks run by hand, in any bundler container:
//
//   node deep-check.js --checks postgres,redis-cache,redis-queue,s3,bullmq-worker \
//                      --timeout-ms 2500
//
// Prints one JSON line: {"ok":bool,"checks":{"<name>":{"ok":bool,"ms":n,"error":"..."}}}
// Exit 0 = all selected checks passed, 1 = at least one failed, 2 = bad usage.
//
// A run must never outlive its timeout: a probe that hangs is reported by the
// kubelet as a timeout, which tells the operator nothing.
'use strict';

const dns = require('dns');
const fs = require('fs');
const net = require('net');
const os = require('os');
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

async function checkRedisQueue(ctx) {
  // The app's queue connection has no password or TLS options at all.
  const client = await redisClient(ctx, {
    host: env('REDIS_HOST') || '127.0.0.1',
    port: envInt('REDIS_PORT_QUEUES', 6381),
  });
  await client.ping();
}

// ---------------------------------------------------------------- bullmq-worker

// Liveness of a worker pod, decided inside the pod: served from the worker process
// itself (probe-server.js), the worker is this process; run by hand in the
// container, /proc shows the worker process and its sockets. Nothing is matched
// against addresses the queue Redis sees, which NAT between the pod and an
// external Redis would change.
//   1. the worker process (run by hand): a process whose command line contains
//      DEEP_CHECK_WORKER_CMDLINE (default lib/jobs/allWorkers.js), not this probe,
//      and not a wrapper (dumb-init, sh) whose child also matches;
//   2. it is not stopped (T/t) and not a zombie (Z);
//   3. it holds an ESTABLISHED TCP connection to REDIS_HOST:REDIS_PORT_QUEUES
//      (every address REDIS_HOST resolves to), and the socket is one of ITS file
//      descriptors, not just any socket in the pod's network namespace.
const DEFAULT_WORKER_CMDLINE = 'lib/jobs/allWorkers.js';
const TCP_ESTABLISHED = '01';

function readText(file) {
  try {
    return fs.readFileSync(file, 'utf8');
  } catch (e) {
    return undefined; // the process exited while we looked, or is not ours to read
  }
}

// /proc/<pid>/stat is "pid (comm) state ppid ..."; comm may hold spaces and
// parentheses, so parse from the last ')'.
function procStat(pid) {
  const text = readText(`/proc/${pid}/stat`);
  if (!text) return undefined;
  const fields = text.slice(text.lastIndexOf(')') + 2).split(' ');
  return { state: fields[0], ppid: Number(fields[1]) };
}

function workerProcesses(pattern) {
  const found = [];
  for (const entry of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(entry) || Number(entry) === process.pid) continue;
    const cmdline = readText(`/proc/${entry}/cmdline`);
    if (!cmdline || !cmdline.includes(pattern)) continue;
    const stat = procStat(entry);
    if (stat) found.push({ pid: Number(entry), ...stat });
  }
  // A wrapper that started the worker (dumb-init as PID 1) carries the same words.
  const parents = new Set(found.map((p) => p.ppid));
  return found.filter((p) => !parents.has(p.pid));
}

// An address from /proc/net/tcp{,6}: 32-bit words in host byte order, in hex.
function procAddress(hex) {
  const bytes = [];
  for (let i = 0; i < hex.length; i += 8) {
    const word = Number.parseInt(hex.slice(i, i + 8), 16);
    const b = Buffer.alloc(4);
    if (os.endianness() === 'LE') b.writeUInt32LE(word); else b.writeUInt32BE(word);
    bytes.push(...b);
  }
  if (bytes.length === 4) return { address: bytes.join('.'), family: 'ipv4' };
  const groups = [];
  for (let i = 0; i < 16; i += 2) groups.push(((bytes[i] << 8) | bytes[i + 1]).toString(16));
  return { address: groups.join(':'), family: 'ipv6' };
}

// Established connections in the process's network namespace: inode -> remote.
function establishedSockets(pid) {
  const sockets = new Map();
  for (const table of ['tcp', 'tcp6']) {
    const text = readText(`/proc/${pid}/net/${table}`) || '';
    for (const line of text.split('\n').slice(1)) {
      const f = line.trim().split(/\s+/);
      if (f.length < 10 || f[3] !== TCP_ESTABLISHED) continue;
      const [addrHex, portHex] = f[2].split(':');
      sockets.set(f[9], { ...procAddress(addrHex), port: Number.parseInt(portHex, 16) });
    }
  }
  return sockets;
}

// The socket inodes among the process's file descriptors (readable for our own uid only).
function socketInodes(pid) {
  const inodes = new Set();
  const fds = fs.readdirSync(`/proc/${pid}/fd`);
  for (const fd of fds) {
    try {
      const m = /^socket:\[(\d+)\]$/.exec(fs.readlinkSync(`/proc/${pid}/fd/${fd}`));
      if (m) inodes.add(m[1]);
    } catch (e) { /* closed meanwhile */ }
  }
  return inodes;
}

// Served from inside the worker (probe-server.js), the worker is this very
// process: that it answers at all shows it is not stopped.
function thisProcess(pattern) {
  const cmdline = (readText('/proc/self/cmdline') || '').split('\0').join(' ');
  if (!cmdline.includes(pattern)) {
    throw new Error(`this process is not the worker: its command line does not contain "${pattern}"`);
  }
  return [{ pid: process.pid, ...procStat(process.pid) }];
}

async function checkBullmqWorker(ctx) {
  const pattern = env('DEEP_CHECK_WORKER_CMDLINE') || DEFAULT_WORKER_CMDLINE;
  const host = env('REDIS_HOST') || '127.0.0.1';
  const port = envInt('REDIS_PORT_QUEUES', 6381);
  const workers = ctx.inProcess ? thisProcess(pattern) : workerProcesses(pattern);
  if (workers.length === 0) {
    throw new Error(`no worker process: no process's command line contains "${pattern}"`);
  }
  const addresses = await dns.promises.lookup(host, { all: true });
  // BlockList also matches IPv4-mapped IPv6 forms (::ffff:a.b.c.d) of an IPv4 address.
  const redis = new net.BlockList();
  for (const a of addresses) redis.addAddress(a.address, a.family === 6 ? 'ipv6' : 'ipv4');
  const target = `${host}:${port} (${addresses.map((a) => a.address).join(', ')})`;
  const problems = [];
  for (const w of workers) {
    if (/^[Tt]/.test(w.state)) {
      problems.push(`worker process ${w.pid} is stopped (state ${w.state})`);
      continue;
    }
    if (w.state === 'Z') {
      problems.push(`worker process ${w.pid} is a zombie (state Z)`);
      continue;
    }
    let own;
    try {
      own = socketInodes(w.pid);
    } catch (e) {
      problems.push(`cannot read /proc/${w.pid}/fd (${e.code || e.message}): the probe must run as the worker's user`);
      continue;
    }
    let toRedis = 0;
    let elsewhere = 0;
    for (const [inode, remote] of establishedSockets(w.pid)) {
      if (!own.has(inode)) continue;
      if (remote.port === port && redis.check(remote.address, remote.family)) toRedis += 1;
      else elsewhere += 1;
    }
    if (toRedis > 0) return;
    problems.push(
      `worker process ${w.pid} (state ${w.state}) holds no ESTABLISHED connection to the queue Redis ` +
      `${target}; it has ${elsewhere} established TCP connection(s) elsewhere`,
    );
  }
  throw new Error(problems.join('; '));
}

// The app only reads and writes objects (it never lists), so a least-privilege
// key may lack s3:ListBucket, which HeadBucket needs. The check uses only object
// calls: HEAD a fixed probe object; if it is missing (404, or 403, which S3
// answers for a missing key when ListBucket is not granted), PUT it (0 bytes) and
// HEAD again. Steady state: one HEAD per run. A bad key fails both calls.
const S3_PROBE_KEY = '.x402-bundler-deep-check';

function httpStatus(err) {
  return err && err.$metadata && err.$metadata.httpStatusCode;
}

async function checkS3(ctx) {
  const { S3Client, HeadObjectCommand, PutObjectCommand } = ctx.mod;
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
  const object = { Bucket: env('DATA_ITEM_BUCKET') || 'bundler-data-items', Key: S3_PROBE_KEY };
  const where = `s3://${object.Bucket}/${object.Key}`;
  const send = (command) => client.send(command, { abortSignal: abort.signal });
  try {
    await send(new HeadObjectCommand(object));
    return;
  } catch (e) {
    const status = httpStatus(e);
    if (status !== 404 && status !== 403) throw e;
    try {
      await send(new PutObjectCommand({ ...object, Body: '', ContentLength: 0 }));
    } catch (put) {
      throw new Error(`HEAD ${where} answered ${status} and PUT failed: ${describe(put)}`);
    }
  }
  try {
    await send(new HeadObjectCommand(object));
  } catch (e) {
    throw new Error(`HEAD ${where} failed after PUT: ${describe(e)}`);
  }
}

const CHECKS = {
  postgres: { module: 'pg', run: checkPostgres },
  'redis-cache': { module: 'ioredis', run: checkRedisCache },
  'redis-queue': { module: 'ioredis', run: checkRedisQueue },
  s3: { module: '@aws-sdk/client-s3', run: checkS3 },
  'bullmq-worker': { module: null, run: checkBullmqWorker },
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
  const invalid = invalidChecks(checks);
  if (invalid) usageError(invalid);
  return { checks: [...new Set(checks)], timeoutMs };
}

// Runs the checks and resolves with {ok, checks}; never rejects and never exits,
// so the same code serves the command line and the in-process server
// (probe-server.js), where a throw or a process.exit would hit the app itself.
function runChecks(checks, timeoutMs, { inProcess = false } = {}) {
  return new Promise((resolve) => {
    const results = {};
    const cleanups = [];
    let finished = false;
    let hardDeadline;

    function finish() {
      if (finished) return;
      finished = true;
      clearTimeout(hardDeadline);
      for (const fn of cleanups) {
        try { fn(); } catch (e) { /* best effort */ }
      }
      const out = { ok: checks.every((c) => results[c] && results[c].ok), checks: {} };
      for (const c of checks) out.checks[c] = results[c];
      resolve(out);
    }

    // Loading @aws-sdk/client-s3 takes a few hundred ms of synchronous work; do
    // it before the clock starts so it cannot eat the checks' network budget.
    // (require caches it: in-process, only the first run pays.)
    const mods = {};
    for (const c of checks) {
      if (!CHECKS[c].module) continue;
      try {
        mods[c] = load(CHECKS[c].module);
      } catch (e) {
        results[c] = { ok: false, ms: 0, error: describe(e) };
      }
    }

    const started = Date.now();
    hardDeadline = setTimeout(() => {
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
      const ctx = { timeoutMs, inProcess, mod: mods[c], defer: (fn) => cleanups.push(fn) };
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
    Promise.all(runs).then(finish, finish);
  });
}

// Validates a check list from the command line or a probe URL; returns an error
// message or undefined.
function invalidChecks(checks) {
  if (!checks || checks.length === 0) return 'no checks given';
  const unknown = checks.filter((c) => !Object.prototype.hasOwnProperty.call(CHECKS, c));
  if (unknown.length) return `unknown check(s): ${unknown.join(', ')}`;
  return undefined;
}

function main() {
  const { checks, timeoutMs } = parseArgs(process.argv.slice(2));
  // Print once, then exit at once: process.exit also drops any socket a
  // client library still holds, so nothing can keep the probe alive.
  runChecks(checks, timeoutMs).then((out) => {
    fs.writeSync(1, `${scrub(JSON.stringify(out))}\n`);
    process.exit(out.ok ? 0 : 1);
  });
}

module.exports = { runChecks, invalidChecks, scrub, DEFAULT_TIMEOUT_MS };

if (require.main === module) {
  // A bug or an unexpected library throw must still produce a scrubbed, failing
  // result rather than a stack trace that might quote the environment. Only on
  // the command line: in-process, these handlers would be the app's business.
  process.on('uncaughtException', (e) => {
    fs.writeSync(1, `${scrub(JSON.stringify({ ok: false, checks: {}, error: describe(e) }))}\n`);
    process.exit(1);
  });
  process.on('unhandledRejection', (e) => {
    fs.writeSync(1, `${scrub(JSON.stringify({ ok: false, checks: {}, error: describe(e) }))}\n`);
    process.exit(1);
  });
  main();
}
