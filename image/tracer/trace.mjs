// The runtime image's /app: only the files the bundler's processes load (seed risk 5, image size).
//
//   node trace.mjs --app /app [--out /out/app] [--list files.txt] [--report trace.json]
//
// Run by image/Dockerfile's `trace` stage on the builder's /app, on the platform being built (so
// a native addon is the one that platform loads), and by the runtime test on the tree it lays out.
// @vercel/nft (the tracer behind Next.js's standalone output) follows require/import and the files
// code reads by paths it can compute, from ENTRIES: every command the program runs in the image.
// KEEP adds what code finds by paths no tracer can see, each with the code that loads it. Chosen
// over bundling (esbuild): the files stay as upstream ships them, at the same paths, so stack
// traces, __dirname reads, knex's migration directory and package.json lookups are unchanged.
//
// The build fails, naming the file, when an entry or a kept path is missing, when the tracer could
// not follow a require that resolves in the tree (something would be lost), or when a traced package
// loads a platform addon that is not kept.
import { nodeFileTrace } from '@vercel/nft';
import fs from 'node:fs';
import { createRequire } from 'node:module';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';

// The program's migration Job runs `yarn db:migrate` (components/migration.py): this script.
export const MIGRATE_SCRIPT = 'knex migrate:latest --knexfile lib/arch/db/knexfile.js';
// knex reads every file of this directory (knexConfig.ts: `directory: path.join(__dirname, "../../migrations")`).
export const MIGRATIONS_DIR = 'lib/migrations';
// components/probes/deep-check.js, mounted from a ConfigMap, loads these by name from /app/node_modules.
export const PROBE_MODULES = ['pg', 'ioredis', '@aws-sdk/client-s3'];

// What the tracer cannot see, each with the code that loads it.
export const KEEP = [
  { path: 'package.json', why: '`yarn db:migrate` reads its scripts; lib/jobs/prepare.js requires it for the version' },
  { path: 'docs/openapi.yaml', why: 'lib/routes/swagger.js reads "docs/openapi.yaml" relative to the working directory' },
  { path: 'node_modules/@bull-board/ui/package.json',
    why: '@bull-board/api finds @bull-board/ui with an eval()ed require.resolve, hidden from tracers' },
  { dir: 'node_modules/@bull-board/ui/dist',
    why: 'the admin dashboard\'s views and static files, served by @bull-board/koa from that package' },
];

/** The files each process starts from, relative to /app. */
export function entries(app) {
  const pkg = JSON.parse(fs.readFileSync(path.join(app, 'package.json'), 'utf8'));
  const script = pkg.scripts && pkg.scripts['db:migrate'];
  if (script !== MIGRATE_SCRIPT) {
    throw new Error(`package.json's db:migrate is ${JSON.stringify(script)}, not ${JSON.stringify(MIGRATE_SCRIPT)}: ` +
      'the upstream changed how it migrates; update the entries in image/tracer/trace.mjs');
  }
  const knexPkg = JSON.parse(fs.readFileSync(path.join(app, 'node_modules/knex/package.json'), 'utf8'));
  const migrations = fs.readdirSync(path.join(app, MIGRATIONS_DIR)).filter((f) => f.endsWith('.js')).sort();
  if (migrations.length === 0) throw new Error(`${MIGRATIONS_DIR} holds no migration`);
  const fromApp = createRequire(path.join(app, 'package.json'));
  return {
    // The image's CMD, and the program's workers and admin commands (components/workload.py).
    api: ['lib/index.js'],
    workers: ['lib/jobs/allWorkers.js'],
    admin: ['admin-server.js'],
    migration: [path.posix.join('node_modules/knex', knexPkg.bin.knex), 'lib/arch/db/knexfile.js',
      ...migrations.map((m) => `${MIGRATIONS_DIR}/${m}`)],
    probes: PROBE_MODULES.map((name) => path.relative(app, fromApp.resolve(name))),
  };
}

function walk(dir, base, out) {
  for (const entry of fs.readdirSync(dir, { withFileTypes: true })) {
    const full = path.join(dir, entry.name);
    if (entry.isDirectory()) walk(full, base, out);
    else out.push(path.relative(base, full));
  }
  return out;
}

function packageDirOf(file) {
  const parts = file.split('/');
  const at = parts.lastIndexOf('node_modules');
  if (at < 0) return null;
  return parts.slice(0, at + (parts[at + 1]?.startsWith('@') ? 3 : 2)).join('/');
}

// node-gyp-build-optional-packages (msgpackr-extract, BullMQ's msgpack accelerator) loads its addon
// from a package named at run time, `<name>-<platform>-<arch>`, which no tracer follows. Kept whole:
// the one this platform resolves, as that loader resolves it.
function optionalPlatformPackages(app, traced) {
  const kept = [];
  for (const dir of new Set([...traced].map(packageDirOf).filter(Boolean))) {
    const pkgFile = path.join(app, dir, 'package.json');
    if (!fs.existsSync(pkgFile)) continue;
    const pkg = JSON.parse(fs.readFileSync(pkgFile, 'utf8'));
    if (!pkg.dependencies || !pkg.dependencies['node-gyp-build-optional-packages']) continue;
    const name = `${pkg.name.startsWith('@') ? '' : `@${pkg.name}/`}${pkg.name}-${os.platform()}-${os.arch()}`;
    let found;
    try {
      found = path.dirname(createRequire(pkgFile).resolve(`${name}/package.json`));
    } catch {
      throw new Error(`${dir} loads its addon from ${name}, which is not installed for this platform`);
    }
    kept.push({ dir: path.relative(app, found), of: dir, why: `${dir}'s addon for ${os.platform()}-${os.arch()}, ` +
      'loaded through node-gyp-build-optional-packages by a computed name' });
  }
  return kept;
}

/** Unfollowed requires that resolve in the tree: what the trace would lose. */
function lostRequires(app, warnings) {
  const lost = [];
  for (const warning of warnings) {
    const match = /Cannot find module '([^']+)' loaded from (\S+)/.exec(String(warning.message));
    if (!match) continue;
    const [, request, parent] = match;
    try {
      lost.push(`${path.relative(app, parent)} requires ${request} -> ${path.relative(app,
        createRequire(parent).resolve(request))}`);
    } catch {
      // Absent from the tree as well (another database's driver, pm2, cloudflare:sockets): nothing lost.
    }
  }
  return lost;
}

function size(app, files) {
  let bytes = 0;
  for (const f of files) {
    const st = fs.lstatSync(path.join(app, f));
    if (st.isFile()) bytes += st.size;
  }
  return bytes;
}

/** What ships: the traced files, the kept ones, and the .bin links to them. */
export async function trace(app) {
  const started = Date.now();
  const byProcess = entries(app);
  const all = [...new Set(Object.values(byProcess).flat())];
  const result = await nodeFileTrace(all.map((f) => path.join(app, f)), { base: app, processCwd: app });
  const files = new Set([...result.fileList].filter((f) => !f.startsWith('..')));
  const lost = lostRequires(app, result.warnings);
  if (lost.length) {
    throw new Error(`the tracer could not follow ${lost.length} require(s) that resolve in the tree:\n  ` +
      lost.join('\n  '));
  }
  const rules = [];
  const platformPackages = optionalPlatformPackages(app, files);
  for (const rule of [...KEEP, ...platformPackages]) {
    const target = path.join(app, rule.path || rule.dir);
    if (!fs.existsSync(target)) throw new Error(`kept path ${rule.path || rule.dir} is not in ${app} (${rule.why})`);
    const added = rule.path ? [rule.path] : walk(target, app, []);
    const fresh = added.filter((f) => !files.has(f));
    added.forEach((f) => files.add(f));
    rules.push({ ...rule, files: added.length, added: fresh.length, bytes: size(app, fresh) });
  }
  // yarn puts node_modules/.bin on PATH for `yarn db:migrate`: the links whose target ships.
  const binDir = path.join(app, 'node_modules/.bin');
  const bins = [];
  for (const name of fs.existsSync(binDir) ? fs.readdirSync(binDir) : []) {
    const link = `node_modules/.bin/${name}`;
    const target = path.relative(app, path.resolve(binDir, fs.readlinkSync(path.join(app, link))));
    if (files.has(target)) bins.push(link);
  }
  bins.forEach((b) => files.add(b));
  const addons = [...files].filter((f) => f.endsWith('.node'));
  // The tracer evaluates node-gyp-build and bindings on this platform, so each package that builds
  // an addon ships the one it loads here; one that ships none would silently lose it.
  const addonElsewhere = new Set(platformPackages.map((p) => p.of));
  const without = [...new Set([...files].map(packageDirOf).filter(Boolean))].filter((dir) =>
    fs.existsSync(path.join(app, dir, 'binding.gyp')) && !addonElsewhere.has(dir)
      && !addons.some((a) => a.startsWith(`${dir}/`)));
  if (without.length) {
    throw new Error(`${without.join(', ')} build a native addon, and none is kept for ${os.platform()}-${os.arch()}: ` +
      'find how each loads it and add a rule to image/tracer/trace.mjs');
  }
  return { byProcess, files: [...files].sort(), rules, bins, addons, seconds: (Date.now() - started) / 1000,
    warnings: [...result.warnings].map((w) => String(w.message).split('\n')[0]) };
}

function place(app, out, file) {
  const src = path.join(app, file);
  const dst = path.join(out, file);
  fs.mkdirSync(path.dirname(dst), { recursive: true });
  const st = fs.lstatSync(src);
  if (st.isSymbolicLink()) {
    fs.symlinkSync(fs.readlinkSync(src), dst);
    return;
  }
  try {
    fs.linkSync(src, dst); // same file system: no second copy
  } catch {
    fs.copyFileSync(src, dst);
    fs.chmodSync(dst, st.mode & 0o7777);
  }
}

async function main() {
  const { values } = parseArgs({ options: { app: { type: 'string' }, out: { type: 'string' },
    list: { type: 'string' }, report: { type: 'string' } } });
  if (!values.app) throw new Error('usage: trace.mjs --app DIR [--out DIR] [--list FILE] [--report FILE]');
  const app = path.resolve(values.app);
  const traced = await trace(app);
  const tree = walk(app, app, []);
  const report = { ...traced, tree: { files: tree.length, bytes: size(app, tree) },
    traced: { files: traced.files.length, bytes: size(app, traced.files) } };
  const mib = (b) => `${(b / 2 ** 20).toFixed(1)} MiB`;
  console.log(`trace: ${report.traced.files} of the ${report.tree.files} files under ${app} ` +
    `(${mib(report.traced.bytes)} of ${mib(report.tree.bytes)}) in ${traced.seconds.toFixed(1)} s, from ` +
    Object.entries(traced.byProcess).map(([p, e]) => `${p} (${e.length})`).join(', '));
  for (const r of traced.rules) {
    console.log(`trace: kept ${r.path || r.dir}: ${r.files} files, ${r.added} not traced (${mib(r.bytes)}): ${r.why}`);
  }
  console.log(`trace: .bin links ${traced.bins.join(', ') || 'none'}; native addons ${traced.addons.join(', ') || 'none'}`);
  if (values.out) {
    const out = path.resolve(values.out);
    fs.mkdirSync(out, { recursive: true });
    for (const f of traced.files) place(app, out, f);
    console.log(`trace: ${traced.files.length} files placed in ${out}`);
  }
  if (values.list) fs.writeFileSync(values.list, `${traced.files.join('\n')}\n`);
  if (values.report) fs.writeFileSync(values.report, `${JSON.stringify(report, null, 2)}\n`);
}

if (import.meta.url === `file://${process.argv[1]}`) {
  main().catch((error) => {
    console.error(`trace: error: ${error.message}`);
    process.exit(1);
  });
}
