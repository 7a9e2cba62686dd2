#!/usr/bin/env node
// node-resque's side of resq's load harness (benches/src/measure.rs): the
// same figures, measured the same way, against the same Redis.
//
// Environment: REDIS_HOST, REDIS_PORT, NAMESPACE (its keys are deleted at
// the end), JOBS. Prints one JSON object of jobs/s figures:
//   enqueue_sequential, ping_sequential (bare PINGs one at a time: the
//   client's floor), enqueue_concurrent (50 producers),
//   process_one (1 worker), process_pool (best of 5, 10 and 20 workers),
//   process_pool_size.
"use strict";

const { Queue, Worker } = require("node-resque");

const connection = {
  host: process.env.REDIS_HOST || "127.0.0.1",
  port: parseInt(process.env.REDIS_PORT || "6379", 10),
  namespace: process.env.NAMESPACE || "resq-bench-node",
};
const JOBS = parseInt(process.env.JOBS || "20000", 10);
const QUEUE = "bench";

setTimeout(() => {
  process.stderr.write("bench.js: hard deadline reached\n");
  process.exit(3);
}, 600000).unref();

async function clean(queue) {
  const redis = queue.connection.redis;
  let cursor = "0";
  do {
    const [next, keys] = await redis.scan(cursor, "MATCH", `${connection.namespace}:*`, "COUNT", 1000);
    if (keys.length) await redis.del(...keys);
    cursor = next;
  } while (cursor !== "0");
}

async function enqueueAll(queue, producers) {
  const per = Math.floor(JOBS / producers);
  const start = process.hrtime.bigint();
  await Promise.all(
    Array.from({ length: producers }, async (_, p) => {
      for (let i = 0; i < per; i++) await queue.enqueue(QUEUE, "noop", [p * per + i]);
    }),
  );
  const secs = Number(process.hrtime.bigint() - start) / 1e9;
  return (per * producers) / secs;
}

// The client's own floor: JOBS bare PINGs one after another on the
// queue's connection (ioredis), beside enqueue_sequential.
async function pingAll(queue) {
  const redis = queue.connection.redis;
  const start = process.hrtime.bigint();
  for (let i = 0; i < JOBS; i++) await redis.ping();
  const secs = Number(process.hrtime.bigint() - start) / 1e9;
  return JOBS / secs;
}

async function processWith(queue, workers) {
  await clean(queue);
  await enqueueAll(queue, 50);
  const total = await queue.length(QUEUE);
  const seen = new Uint8Array(total);
  let done = 0;
  let resolveDone;
  const finished = new Promise((r) => (resolveDone = r));
  const jobs = {
    noop: {
      perform: async (i) => {
        seen[i] += 1;
        done += 1;
        if (done === total) resolveDone();
        return true;
      },
    },
  };
  const pool = [];
  for (let i = 0; i < workers; i++) {
    const w = new Worker({ connection, queues: [QUEUE], timeout: 5, name: `bench-${process.pid}-${i}` }, jobs);
    await w.connect();
    pool.push(w);
  }
  const start = process.hrtime.bigint();
  pool.forEach((w) => w.start());
  await finished;
  const secs = Number(process.hrtime.bigint() - start) / 1e9;
  await Promise.all(pool.map((w) => w.end()));
  const wrong = seen.filter((n) => n !== 1).length;
  if (wrong) throw new Error(`${wrong} jobs did not run exactly once`);
  return total / secs;
}

async function main() {
  const queue = new Queue({ connection });
  await queue.connect();
  try {
    await clean(queue);
    const out = {};
    out.enqueue_sequential = await enqueueAll(queue, 1);
    out.ping_sequential = await pingAll(queue);
    await clean(queue);
    out.enqueue_concurrent = await enqueueAll(queue, 50);
    out.process_one = await processWith(queue, 1);
    out.process_pool = 0;
    for (const size of [5, 10, 20]) {
      const rate = await processWith(queue, size);
      if (rate > out.process_pool) {
        out.process_pool = rate;
        out.process_pool_size = size;
      }
    }
    process.stdout.write(JSON.stringify(out) + "\n");
  } finally {
    await clean(queue);
    await queue.end();
  }
}

main().then(
  () => process.exit(0),
  (e) => {
    process.stderr.write(`bench.js: ${e && e.stack ? e.stack : e}\n`);
    process.exit(1);
  },
);
