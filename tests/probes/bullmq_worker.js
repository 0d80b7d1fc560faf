// Test helper: a real BullMQ process on the queue Redis, wired the way the bundler's
// src/jobs/allWorkers.ts wires its workers (one shared ioredis connection with
// maxRetriesPerRequest: null, default "bull" prefix, no worker name).
//
//   MODE=worker   (default) a Worker on QUEUE_NAME; WORKER_NAME, if set, becomes
//                 the BullMQ worker `name` option ("bull:<b64>:w:<name>" connection)
//   MODE=producer a Queue and a QueueEvents (what an API pod holds), but no Worker
//
// Prints "ready" once every connection is up; on SIGTERM closes gracefully and exits 0;
// on SIGUSR2 closes every Redis connection but keeps running (prints "disconnected"): a
// worker process that lost its queue. Arguments are ignored: the tests pass a marker there
// so the probe's command-line match finds this process and no other.
'use strict';

const { once } = require('events');
const { Queue, QueueEvents, Worker } = require('bullmq');
const IORedis = require('ioredis');

const host = process.env.REDIS_HOST || '127.0.0.1';
const port = Number(process.env.REDIS_PORT_QUEUES || 6381);
const queueName = process.env.QUEUE_NAME || 'upload-new-data-item';
const mode = process.env.MODE || 'worker';

async function main() {
  const connection = new IORedis({ host, port, maxRetriesPerRequest: null });
  const closers = [];

  if (mode === 'worker') {
    const worker = new Worker(queueName, async () => {}, {
      connection,
      ...(process.env.WORKER_NAME ? { name: process.env.WORKER_NAME } : {}),
    });
    // waitUntilReady() covers the shared connection; 'ready' is emitted when the
    // named blocking connection is up, which is the one the probe looks for.
    await Promise.all([worker.waitUntilReady(), once(worker, 'ready')]);
    closers.push(() => worker.close());
  } else if (mode === 'producer') {
    const queue = new Queue(queueName, { connection });
    const events = new QueueEvents(queueName, { connection: { host, port } });
    await Promise.all([queue.waitUntilReady(), events.waitUntilReady()]);
    await queue.add('probe-test', {});
    closers.push(() => events.close(), () => queue.close());
  } else {
    throw new Error(`unknown MODE ${mode}`);
  }

  const closeAll = async () => {
    for (const close of closers) await close();
    await connection.quit();
  };
  process.on('SIGTERM', async () => {
    await closeAll();
    process.exit(0);
  });
  process.on('SIGUSR2', async () => {
    await closeAll();
    setInterval(() => {}, 60_000);
    process.stdout.write('disconnected\n');
  });
  process.stdout.write('ready\n');
}

main().catch((e) => {
  process.stderr.write(`${e.stack || e}\n`);
  process.exit(1);
});
