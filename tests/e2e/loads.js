// The runtime test's load recorder, preloaded first into every process of the bundler image
// (NODE_OPTIONS --require, added by the runner, not by the program). It writes, as JSON lines in
// $E2E_LOADS_DIR/$E2E_LOADS_NAME.<pid>-<ms>.jsonl:
//   {"t":"start"}  the process's argv and working directory;
//   {"t":"load"}   every file CommonJS loads (.js, .json, .node, and an ES module loaded by require());
//   {"t":"miss"}   every require or resolve that found nothing, with where it was asked from;
//   {"t":"read"}   every file under /app that fs opened or read (the assets code reads by path);
//   {"t":"enoent"} every file under /app that fs was asked for and that does not exist;
//   {"t":"listen"} each port the process listened on, with the seconds since it started.
// tests/e2e/loads.py compares them with the traced set and with the untraced tree. It records only:
// each wrapper calls the original with the same arguments and returns or throws what it did.
// Not seen: the imports inside an ES module (no Node 20 hook sees those of require(esm)); a
// failed one still fails the require() that loaded it, which is seen.
'use strict';

const fs = require('fs');
const path = require('path');
const Module = require('module');

const net = require('net');

const dir = process.env.E2E_LOADS_DIR;
const name = process.env.E2E_LOADS_NAME;
const APP = process.env.E2E_LOADS_APP || '/app';
// The fs calls that read a file's content (createReadStream opens through fs.open).
const READS = new Set(['openSync', 'readFileSync', 'open', 'readFile', 'promises.open', 'promises.readFile']);

if (dir && name) {
  const file = path.join(dir, `${name}.${process.pid}-${Date.now()}.jsonl`);
  const appendFileSync = fs.appendFileSync;
  const seen = new Set();
  const write = (record) => {
    const line = JSON.stringify(record);
    if (seen.has(line)) return;
    seen.add(line);
    try {
      appendFileSync(file, `${line}\n`);
    } catch {
      // A full or missing directory loses records, which the runner then reports as missing.
    }
  };
  write({ t: 'start', argv: process.argv, cwd: process.cwd() });

  const load = Module.prototype.load;
  Module.prototype.load = function recordLoad(filename) {
    write({ t: 'load', f: filename });
    return load.call(this, filename);
  };

  const resolveFilename = Module._resolveFilename;
  Module._resolveFilename = function recordMiss(request, parent, isMain, options) {
    try {
      return resolveFilename.apply(this, arguments);
    } catch (error) {
      if (error && error.code === 'MODULE_NOT_FOUND') {
        write({ t: 'miss', req: request, from: parent && parent.filename, paths: options && options.paths });
      }
      throw error;
    }
  };

  const moduleLoad = Module._load;
  Module._load = function recordEsmMiss(request, parent) {
    try {
      return moduleLoad.apply(this, arguments);
    } catch (error) {
      // An ES module loaded by require() whose own import is missing.
      const match = error && error.code === 'ERR_MODULE_NOT_FOUND'
        && /Cannot find (?:package|module) '([^']+)' imported from (\S+)/.exec(String(error.message));
      if (match) write({ t: 'miss', req: match[1], from: match[2], esm: true });
      throw error;
    }
  };

  const underApp = (p) => {
    if (typeof p !== 'string' && !(p instanceof URL) && !Buffer.isBuffer(p)) return null;
    const abs = path.resolve(p instanceof URL ? p.pathname : String(p));
    return abs === APP || abs.startsWith(`${APP}/`) ? abs : null;
  };
  const absent = (p, op) => {
    const abs = underApp(p);
    if (abs) write({ t: 'enoent', f: abs, op });
  };
  const read = (p, op) => {
    if (!READS.has(op) || typeof p === 'number') return;
    const abs = underApp(p);
    if (abs) write({ t: 'read', f: abs });
  };
  const isAbsence = (error) => error && (error.code === 'ENOENT' || error.code === 'ENOTDIR');
  const wrap = (target, key, make) => {
    const original = target[key];
    if (typeof original !== 'function') return;
    const wrapper = make(original);
    Object.defineProperties(wrapper, Object.getOwnPropertyDescriptors(original));
    target[key] = wrapper;
  };

  for (const key of ['openSync', 'readFileSync', 'statSync', 'lstatSync', 'readdirSync', 'accessSync',
    'realpathSync', 'opendirSync', 'readlinkSync']) {
    wrap(fs, key, (original) => function recordSync(p, options) {
      try {
        const result = original.apply(this, arguments);
        if (result === undefined && options && options.throwIfNoEntry === false) absent(p, key);
        else read(p, key);
        return result;
      } catch (error) {
        if (isAbsence(error)) absent(p, key);
        throw error;
      }
    });
  }
  wrap(fs, 'existsSync', (original) => function recordExists(p) {
    const result = original.apply(this, arguments);
    if (!result) absent(p, 'existsSync');
    return result;
  });
  for (const key of ['open', 'readFile', 'stat', 'lstat', 'readdir', 'access', 'realpath', 'opendir', 'readlink']) {
    wrap(fs, key, (original) => function recordCallback(p, ...rest) {
      const last = rest.length - 1;
      if (last >= 0 && typeof rest[last] === 'function') {
        const callback = rest[last];
        rest[last] = function recordResult(error) {
          if (isAbsence(error)) absent(p, key);
          else if (!error) read(p, key);
          return callback.apply(this, arguments);
        };
      }
      return original.call(this, p, ...rest);
    });
    wrap(fs.promises, key, (original) => function recordPromise(p) {
      return original.apply(this, arguments).then((result) => {
        read(p, `promises.${key}`);
        return result;
      }, (error) => {
        if (isAbsence(error)) absent(p, `promises.${key}`);
        throw error;
      });
    });
  }

  const listen = net.Server.prototype.listen;
  net.Server.prototype.listen = function recordListen() {
    this.once('listening', () => {
      const address = this.address();
      if (address && typeof address === 'object') write({ t: 'listen', port: address.port, s: process.uptime() });
    });
    return listen.apply(this, arguments);
  };
}
