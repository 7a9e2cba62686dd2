#!/usr/bin/env node
// Server-side cost of BullMQ's processing, for resq's per-job analysis
// (BENCHMARKS.md, "Per-job cost"): fills a queue with `addBulk`, then
// processes it with one Worker at CONCURRENCY, reading the server's
// `INFO cpu` and `INFO commandstats` before and after the processing
// alone. Prints one JSON object: jobs/s, server CPU µs per job, commands
// per job, client CPU µs per job. Use a private Redis (its counters must
// see only this run). Environment: REDIS_HOST, REDIS_PORT, PREFIX, JOBS,
// CONCURRENCY.
"use strict";

const { Queue, Worker } = require("bullmq");
const IORedis = require("ioredis");

const connection = {
  host: process.env.REDIS_HOST || "127.0.0.1",
  port: parseInt(process.env.REDIS_PORT || "6390", 10),
  maxRetriesPerRequest: null,
};
const PREFIX = process.env.PREFIX || "resq-bench-bullmq-cpu";
const JOBS = parseInt(process.env.JOBS || "100000", 10);
const CONCURRENCY = parseInt(process.env.CONCURRENCY || "200", 10);
const JOB_OPTS = { removeOnComplete: true, removeOnFail: true };

async function serverCounters(redis) {
  const cpu = await redis.info("cpu");
  const stats = await redis.info("commandstats");
  const field = (text, name) => parseFloat((text.match(new RegExp(`${name}:([0-9.]+)`)) || [0, 0])[1]);
  let calls = 0;
  for (const m of stats.matchAll(/calls=(\d+)/g)) calls += parseInt(m[1], 10);
  return { cpu: field(cpu, "used_cpu_user") + field(cpu, "used_cpu_sys"), calls };
}

async function main() {
  const admin = new IORedis(connection);
  const queue = new Queue("bench", { connection, prefix: PREFIX });
  await queue.waitUntilReady();
  await queue.obliterate({ force: true });
  for (let from = 0; from < JOBS; from += 1000) {
    const batch = [];
    for (let i = from; i < Math.min(JOBS, from + 1000); i++) batch.push({ name: "noop", data: { i }, opts: JOB_OPTS });
    await queue.addBulk(batch);
  }
  const seen = new Uint8Array(JOBS);
  let done = 0;
  let resolveDone;
  const finished = new Promise((r) => (resolveDone = r));
  const worker = new Worker(
    "bench",
    async (job) => {
      seen[job.data.i] += 1;
      done += 1;
      if (done === JOBS) resolveDone();
      return true;
    },
    { connection, prefix: PREFIX, concurrency: CONCURRENCY, autorun: false },
  );
  await worker.waitUntilReady();
  const before = await serverCounters(admin);
  const clientBefore = process.cpuUsage();
  const start = process.hrtime.bigint();
  worker.run();
  await finished;
  const secs = Number(process.hrtime.bigint() - start) / 1e9;
  const client = process.cpuUsage(clientBefore);
  const after = await serverCounters(admin);
  await worker.close();
  const wrong = seen.filter((n) => n !== 1).length;
  if (wrong) throw new Error(`${wrong} jobs did not run exactly once`);
  await queue.obliterate({ force: true });
  await queue.close();
  await admin.quit();
  process.stdout.write(
    JSON.stringify({
      jobs_per_s: JOBS / secs,
      server_cpu_us_per_job: ((after.cpu - before.cpu) * 1e6) / JOBS,
      // The two INFO calls of the "after" reading are counted too (2 of JOBS).
      commands_per_job: (after.calls - before.calls) / JOBS,
      client_cpu_us_per_job: (client.user + client.system) / JOBS,
    }) + "\n",
  );
}

main().then(
  () => process.exit(0),
  (e) => {
    process.stderr.write(`bullmq-cpu.js: ${e && e.stack ? e.stack : e}\n`);
    process.exit(1);
  },
);
