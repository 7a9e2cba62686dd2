#!/usr/bin/env node
// BullMQ's side of resq's load harness (benches/src/measure.rs): the same
// figures as bench.js measures for node-resque, against the same Redis,
// with the BullMQ version pinned in package.json (ioredis connections).
//
// Environment: REDIS_HOST, REDIS_PORT, PREFIX (BullMQ's key prefix; its
// keys are deleted at the end), JOBS. Prints one JSON object of jobs/s
// figures:
//   enqueue_sequential (one `add` after another),
//   enqueue_concurrent (50 producers, each one `add` after another),
//   enqueue_bulk (`addBulk`, 1,000 jobs a call),
//   process_one (1 worker, concurrency 1),
//   process_pool (best of one worker at concurrency 10, 50, 100 and 200),
//   process_pool_size.
"use strict";

const { Queue, Worker } = require("bullmq");

const connection = {
  host: process.env.REDIS_HOST || "127.0.0.1",
  port: parseInt(process.env.REDIS_PORT || "6379", 10),
  maxRetriesPerRequest: null,
};
const PREFIX = process.env.PREFIX || "resq-bench-bullmq";
const JOBS = parseInt(process.env.JOBS || "20000", 10);
const QUEUE = "bench";

setTimeout(() => {
  process.stderr.write("bullmq-bench.js: hard deadline reached\n");
  process.exit(3);
}, 600000).unref();

// Jobs without retention, as a throughput-minded user configures them; the
// job's data is its number, checked for exactly-once processing.
const JOB_OPTS = { removeOnComplete: true, removeOnFail: true };

async function clean(queue) {
  await queue.obliterate({ force: true });
}

async function enqueueAll(queue, producers) {
  const per = Math.floor(JOBS / producers);
  const start = process.hrtime.bigint();
  await Promise.all(
    Array.from({ length: producers }, async (_, p) => {
      for (let i = 0; i < per; i++) await queue.add("noop", { i: p * per + i }, JOB_OPTS);
    }),
  );
  const secs = Number(process.hrtime.bigint() - start) / 1e9;
  return (per * producers) / secs;
}

async function enqueueBulk(queue) {
  const start = process.hrtime.bigint();
  for (let from = 0; from < JOBS; from += 1000) {
    const batch = [];
    for (let i = from; i < Math.min(JOBS, from + 1000); i++) {
      batch.push({ name: "noop", data: { i }, opts: JOB_OPTS });
    }
    await queue.addBulk(batch);
  }
  const secs = Number(process.hrtime.bigint() - start) / 1e9;
  return JOBS / secs;
}

async function processWith(queue, concurrency) {
  await clean(queue);
  // Filled the fast way; the figure is the processing alone.
  await enqueueBulk(queue);
  const total = await queue.count();
  if (total !== JOBS) throw new Error(`${total} jobs waiting, expected ${JOBS}`);
  const seen = new Uint8Array(total);
  let done = 0;
  let resolveDone;
  const finished = new Promise((r) => (resolveDone = r));
  const worker = new Worker(
    QUEUE,
    async (job) => {
      seen[job.data.i] += 1;
      done += 1;
      if (done === total) resolveDone();
      return true;
    },
    { connection, prefix: PREFIX, concurrency, autorun: false },
  );
  await worker.waitUntilReady();
  const start = process.hrtime.bigint();
  worker.run();
  await finished;
  const secs = Number(process.hrtime.bigint() - start) / 1e9;
  await worker.close();
  const wrong = seen.filter((n) => n !== 1).length;
  if (wrong) throw new Error(`${wrong} jobs did not run exactly once`);
  return total / secs;
}

async function main() {
  const queue = new Queue(QUEUE, { connection, prefix: PREFIX });
  await queue.waitUntilReady();
  try {
    await clean(queue);
    const out = {};
    out.enqueue_sequential = await enqueueAll(queue, 1);
    await clean(queue);
    out.enqueue_concurrent = await enqueueAll(queue, 50);
    await clean(queue);
    out.enqueue_bulk = await enqueueBulk(queue);
    out.process_one = await processWith(queue, 1);
    out.process_pool = 0;
    for (const size of [10, 50, 100, 200]) {
      const rate = await processWith(queue, size);
      if (rate > out.process_pool) {
        out.process_pool = rate;
        out.process_pool_size = size;
      }
    }
    process.stdout.write(JSON.stringify(out) + "\n");
  } finally {
    await clean(queue);
    await queue.close();
  }
}

main().then(
  () => process.exit(0),
  (e) => {
    process.stderr.write(`bullmq-bench.js: ${e && e.stack ? e.stack : e}\n`);
    process.exit(1);
  },
);
