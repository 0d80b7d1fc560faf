// Drain on SIGTERM for the x402 bundler API, preloaded with
//   NODE_OPTIONS=--require /opt/x402-bundler-probes/graceful-shutdown.js
//
// The API (src/server.ts) installs no SIGTERM handler. Under dumb-init (the image's
// entrypoint) Node's default would exit at once on SIGTERM and cut every upload in
// flight. This preload, on SIGTERM, stops accepting connections, lets the requests
// in flight finish, closes idle keep-alive connections, and exits 0 once every
// server it saw listening has closed. The kubelet's grace period bounds the wait;
// SHUTDOWN_TIMEOUT_MS, if set, is a shorter hard cap.
//
// The SIGTERM handler is installed only when a server starts listening, so other
// node processes that inherit NODE_OPTIONS (the deep check run by hand) keep Node's defaults.
// No dependencies; it logs counts only, never the environment.
'use strict';

const fs = require('fs');
const http = require('http');

// Connections that finish their last response after close() would otherwise stay
// open, idle, for the app's keepAliveTimeout (120 s).
const IDLE_SWEEP_MS = 250;

const servers = new Set();
let installed = false;
let stopping = false;

function log(message) {
  const line = JSON.stringify({ level: 'info', message: `graceful-shutdown: ${message}`, timestamp: new Date().toISOString() });
  try {
    fs.writeSync(1, `${line}\n`);
  } catch (e) {
    // A full or closed stdout must not stop the drain.
  }
}

function exitWhenClosed() {
  if (stopping && servers.size === 0) process.exit(0);
}

function onSigterm() {
  if (stopping) return;
  stopping = true;
  log(`SIGTERM received; closing ${servers.size} server(s), waiting for requests in flight`);
  const cap = Number(process.env.SHUTDOWN_TIMEOUT_MS);
  if (cap > 0) {
    setTimeout(() => {
      log(`requests still in flight after SHUTDOWN_TIMEOUT_MS=${cap}; exiting`);
      process.exit(1);
    }, cap).unref();
  }
  for (const server of servers) {
    server.close();
    const sweep = setInterval(() => server.closeIdleConnections(), IDLE_SWEEP_MS);
    sweep.unref();
    server.once('close', () => clearInterval(sweep));
  }
  exitWhenClosed();
}

const listen = http.Server.prototype.listen;
http.Server.prototype.listen = function trackedListen(...args) {
  if (!servers.has(this)) {
    servers.add(this);
    this.once('close', () => {
      servers.delete(this);
      exitWhenClosed();
    });
  }
  if (!installed) {
    installed = true;
    process.on('SIGTERM', onSigterm);
  }
  return listen.apply(this, args);
};
