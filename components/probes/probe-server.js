// The deep checks served over HTTP from inside each bundler process, preloaded with
//   NODE_OPTIONS=--require /opt/x402-bundler-probes/probe-server.js
// and asked by the kubelet as an httpGet probe:
//   GET :$DEEP_CHECK_PORT/deep-check?checks=postgres,redis-cache&timeout-ms=4500
//   -> 200 or 503 with the JSON line of deep-check.js.
//
// Why in-process: as an exec probe, every run started a node process and loaded
// pg, ioredis and the S3 SDK again: 0.29 s of CPU and a 71 MB peak per run, over
// 3% of a core per pod at a 10 s period. Here the clients are loaded once, and
// mostly they are the modules the app has loaded already (same paths under
// /app/node_modules, so the same instances); a run costs milliseconds. A separate
// checker process would have kept its own ~60 MB resident in every pod. Being
// in-process also means a frozen or wedged process fails its probe, which is
// what the workers' liveness asks.
//
// The kubelet's HTTP probe events show only the status code, so failures (and
// the recovery after them) are logged here as one JSON line per change, with
// "deep-check:" in the message, at most once a minute while unchanged.
//
// It must never harm the app it lives in: nothing here throws or exits, no
// global handler is installed, the server is unref()'d (it never keeps a process
// alive), and a port already in use (a node child of the app, a `node
// deep-check.js` run by hand) just means this process serves nothing.
'use strict';

const fs = require('fs');
const http = require('http');
const path = require('path');
const { isMainThread } = require('worker_threads');

const REPEAT_LOG_MS = 60000;
const MAX_TIMEOUT_MS = 60000;

function log(level, message, extra) {
  const line = { level, message: `deep-check: ${message}`, ...extra, timestamp: new Date().toISOString() };
  try {
    fs.writeSync(1, `${JSON.stringify(line)}\n`);
  } catch (e) {
    // A full or closed stdout must not reach the app.
  }
}

function serve(port) {
  const deep = require('./deep-check.js');
  const inFlight = new Map(); // one run per check list at a time, shared by overlapping requests
  const lastLogged = new Map(); // check list -> { signature, at }

  function note(key, out) {
    const failing = Object.keys(out.checks).filter((c) => !out.checks[c].ok).sort();
    const signature = failing.join(',');
    const before = lastLogged.get(key);
    const now = Date.now();
    if (!before && out.ok) {
      lastLogged.set(key, { signature, at: now });
      return;
    }
    if (before && before.signature === signature && (out.ok || now - before.at < REPEAT_LOG_MS)) return;
    lastLogged.set(key, { signature, at: now });
    const result = JSON.parse(deep.scrub(JSON.stringify(out)));
    if (out.ok) log('info', `${key}: ok again`, { result });
    else log('warn', `${key}: failing: ${signature}`, { result });
  }

  function run(checks, timeoutMs) {
    const key = checks.join(',');
    let pending = inFlight.get(key);
    if (!pending) {
      pending = deep.runChecks(checks, timeoutMs, { inProcess: true })
        .then((out) => {
          note(key, out);
          return out;
        })
        .finally(() => inFlight.delete(key));
      inFlight.set(key, pending);
    }
    return pending;
  }

  function answer(res, status, body) {
    // Connection: close, so an idle probe connection never holds up the API's drain.
    res.writeHead(status, { 'content-type': 'application/json', connection: 'close' });
    res.end(`${body}\n`);
  }

  const server = http.createServer((req, res) => {
    try {
      const url = new URL(req.url, 'http://probe');
      if (req.method !== 'GET' || url.pathname !== '/deep-check') {
        answer(res, 404, JSON.stringify({ ok: false, error: 'GET /deep-check?checks=<list>&timeout-ms=<n>' }));
        return;
      }
      const checks = [...new Set((url.searchParams.get('checks') || '').split(',').filter(Boolean))];
      const invalid = deep.invalidChecks(checks);
      const timeoutMs = Number(url.searchParams.get('timeout-ms') || deep.DEFAULT_TIMEOUT_MS);
      if (invalid || !(timeoutMs >= 1 && timeoutMs <= MAX_TIMEOUT_MS)) {
        answer(res, 400, JSON.stringify({ ok: false, error: invalid || `invalid timeout-ms: ${timeoutMs}` }));
        return;
      }
      run(checks, timeoutMs).then(
        (out) => answer(res, out.ok ? 200 : 503, deep.scrub(JSON.stringify(out))),
        () => answer(res, 500, JSON.stringify({ ok: false, error: 'deep check failed to run' })),
      );
    } catch (e) {
      try { answer(res, 500, JSON.stringify({ ok: false, error: 'deep check failed to run' })); } catch (_) { /* gone */ }
    }
  });
  server.on('error', (e) => {
    log('warn', `not serving probes on port ${port}: ${e.code || e.message}`);
    try { server.close(); } catch (_) { /* not listening */ }
  });
  server.listen(port);
  server.unref();
}

function start() {
  const port = Number(process.env.DEEP_CHECK_PORT);
  // The by-hand command line run inherits NODE_OPTIONS too; it is a client, not the server.
  const script = path.basename(process.argv[1] || '');
  if (!isMainThread || !(port > 0) || script === 'deep-check.js') return;
  try {
    serve(port);
  } catch (e) {
    log('warn', `not serving probes: ${e.message}`);
  }
}

start();
