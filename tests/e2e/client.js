#!/usr/bin/env node
// Upload client for the e2e test: signs a real ANS-104 data item with the upstream's own
// libraries and checks the bundler's receipt the way upstream's verifyReceipt.ts does, so the
// test proves the deployed bundler accepted, stored and vouched for exactly this item.
//
//   NODE_PATH=<app>/node_modules node client.js upload --jwk FILE --url http://HOST:PORT
//       [--size BYTES] [--slow-ms MS] [--header K:V]... [--bundler-jwk FILE]
//
// Prints one JSON line: {status, id, owner, body, receipt_valid, elapsed_ms}. The receipt is
// signed with the bundler's wallet (TURBO_JWK_FILE), so its `public` is compared with
// --bundler-jwk's n, or --jwk's n when that is not given (the same wallet for both).
// Exit 0 when an HTTP response came back (whatever its status), 1 on a transport error (the
// JSON line then has status null and the error as body), 2 on bad usage.
"use strict";

const crypto = require("crypto");
const fs = require("fs");
const http = require("http");
const https = require("https");

const arbundles = require("@dha-team/arbundles");
const ArweaveModule = require("arweave");

const Arweave = ArweaveModule.default || ArweaveModule;

// Exactly upstream's src/utils/signReceipt.ts prepareHash (receipt version 0.2.0): only these
// five fields are signed; dataCaches, fastFinalityIndexes and winc are not.
function receiptHashChunks(receipt) {
  const s = arbundles.stringToBuffer;
  return [s("Bundlr"), s(receipt.version), s(receipt.id), s(String(receipt.deadlineHeight)), s(String(receipt.timestamp))];
}

async function verifyReceipt(receipt, expectedId, expectedPublic) {
  if (!receipt || typeof receipt !== "object" || !receipt.signature || !receipt.public) return false;
  if (receipt.id !== expectedId || receipt.public !== expectedPublic) return false;
  const dh = await arbundles.deepHash(receiptHashChunks(receipt));
  return Arweave.crypto.verify(receipt.public, dh, Buffer.from(receipt.signature, "base64url"));
}

function addressOf(jwk) {
  return crypto.createHash("sha256").update(Buffer.from(jwk.n, "base64url")).digest("base64url");
}

function parseArgs(argv) {
  const opts = { size: 1024, slowMs: 0, headers: {} };
  const [command, ...rest] = argv;
  if (command !== "upload") throw new Error("the only command is `upload`");
  for (let i = 0; i < rest.length; i += 2) {
    const [flag, value] = [rest[i], rest[i + 1]];
    if (value === undefined) throw new Error(`${flag} needs a value`);
    if (flag === "--jwk") opts.jwk = value;
    else if (flag === "--bundler-jwk") opts.bundlerJwk = value;
    else if (flag === "--url") opts.url = value.replace(/\/+$/, "");
    else if (flag === "--size") opts.size = Number(value);
    else if (flag === "--slow-ms") opts.slowMs = Number(value);
    else if (flag === "--header" && value.includes(":")) {
      const at = value.indexOf(":");
      opts.headers[value.slice(0, at).trim()] = value.slice(at + 1).trim();
    } else throw new Error(`unknown or malformed option ${flag} ${value}`);
  }
  if (!opts.jwk || !opts.url) throw new Error("--jwk and --url are required");
  if (!Number.isInteger(opts.size) || opts.size < 0 || !(opts.slowMs >= 0)) throw new Error("bad --size or --slow-ms");
  return opts;
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

// POST the whole body; with slowMs, in ~50 pieces spread over that time, so the request is
// still in flight while the test deletes the pod serving it.
function post(url, body, headers, slowMs) {
  return new Promise((resolve, reject) => {
    const target = new URL(url);
    const request = (target.protocol === "https:" ? https : http).request(target, {
      method: "POST",
      // The API decides free-tier eligibility from Content-Length, so it must be exact.
      headers: { "Content-Type": "application/octet-stream", ...headers, "Content-Length": body.length },
    });
    request.on("error", reject);
    request.on("response", (response) => {
      const chunks = [];
      response.on("data", (c) => chunks.push(c));
      response.on("error", reject);
      response.on("end", () => resolve({ status: response.statusCode, text: Buffer.concat(chunks).toString("utf8") }));
    });
    (async () => {
      const steps = slowMs > 0 ? Math.max(1, Math.min(50, body.length)) : 1;
      const size = Math.ceil(body.length / steps) || 1;
      for (let offset = 0; offset < body.length; offset += size) {
        if (!request.write(body.subarray(offset, offset + size))) await new Promise((r) => request.once("drain", r));
        if (slowMs > 0) await sleep(slowMs / steps);
      }
      request.end();
    })().catch(reject);
  });
}

async function upload(opts) {
  const jwk = JSON.parse(fs.readFileSync(opts.jwk, "utf8"));
  const bundlerJwk = opts.bundlerJwk ? JSON.parse(fs.readFileSync(opts.bundlerJwk, "utf8")) : jwk;
  const signer = new arbundles.ArweaveSigner(jwk);
  const tags = [
    { name: "Content-Type", value: "application/octet-stream" },
    { name: "App-Name", value: "x402-bundler-e2e" },
  ];
  const item = arbundles.createData(crypto.randomBytes(opts.size), signer, { tags });
  await item.sign(signer);
  const raw = item.getRaw();
  const result = { status: null, id: item.id, owner: addressOf(jwk), body: null, receipt_valid: null, elapsed_ms: 0 };
  const started = Date.now();
  try {
    const response = await post(`${opts.url}/v1/tx`, raw, opts.headers, opts.slowMs);
    result.status = response.status;
    try {
      result.body = JSON.parse(response.text);
    } catch (_) {
      result.body = response.text;
    }
    if (response.status === 200) result.receipt_valid = await verifyReceipt(result.body, item.id, bundlerJwk.n);
  } catch (error) {
    result.body = `${error.code || error.name}: ${error.message}`;
  }
  result.elapsed_ms = Date.now() - started;
  return result;
}

async function main() {
  let opts;
  try {
    opts = parseArgs(process.argv.slice(2));
  } catch (error) {
    process.stderr.write(`client.js: ${error.message}\n`);
    process.exit(2);
  }
  const result = await upload(opts);
  process.stdout.write(JSON.stringify(result) + "\n");
  process.exit(result.status === null ? 1 : 0);
}

module.exports = { verifyReceipt, receiptHashChunks, addressOf };

if (require.main === module) main();
