#!/usr/bin/env node
// graphile-worker's side of resq's load harness: the same figures as bench.js
// (node-resque), measured the same way, for comparison with resq's Postgres
// backend.
//
// graphile-worker installs its own schema (`graphile_worker`), so everything
// runs in a database this script creates for itself through the `postgres`
// maintenance database, resq_bench_graphile_<pid>, and drops at the end (also
// on failure, on SIGINT/SIGTERM and at the hard deadline). Nothing else is
// touched. PostgreSQL's durability settings are left at their defaults.
//
// Environment: PGHOST (127.0.0.1), PGPORT (5432), PGUSER (postgres), PGPASSWORD
// (read by pg itself if set), JOBS (20000), GRAPHILE_BENCH_VERBOSE=1 to see
// graphile-worker's info/debug logs. All logging goes to stderr; stdout gets
// one JSON object of jobs/s figures:
//   enqueue_sequential  one addJob() at a time, each awaited
//   enqueue_batch       WorkerUtils.addJobs() with 1,000 jobs per call: one
//                       statement, `select * from graphile_worker.add_jobs(...)`
//                       (the bulk API of the pinned 0.17.x)
//   process_one         a runner with concurrency 1, default options
//   process_pool        best of the pool configurations in POOL_CONFIGS
//   process_pool_config the configuration that gave process_pool (a string;
//                       every configuration's figure is logged on stderr)
//
// Each processing figure: empty and vacuum the jobs table, enqueue JOBS no-op
// jobs (batch), open the runner's pg pool connections, then time from run()
// until the `noop` task has run for every job; stop the runner; fail unless
// every job ran exactly once and the jobs table ended up empty.
"use strict";

const { Client, Pool } = require("pg");
const { run, makeWorkerUtils, Logger, parseCronItems } = require("graphile-worker");

const PG = {
  host: process.env.PGHOST || "127.0.0.1",
  port: parseInt(process.env.PGPORT || "5432", 10),
  user: process.env.PGUSER || "postgres",
};
const JOBS = parseInt(process.env.JOBS || "20000", 10);
const BATCH = 1000;
const DEADLINE_MS = parseInt(process.env.GRAPHILE_BENCH_DEADLINE_MS || "600000", 10);
const VERBOSE = process.env.GRAPHILE_BENCH_VERBOSE === "1";
const DB = `resq_bench_graphile_${process.pid}`;
const SCHEMA = "graphile_worker";

// Pool configurations: concurrency 10 and 50 with default options, then the
// same with graphile-worker's batching options (0.16+): a local queue that
// fetches and locks jobs in batches, and batched completion/failure. The last
// one is the configuration of graphile-worker's own published performance
// test (worker.graphile.org/docs/performance). maxPoolSize follows the docs'
// advice: max(10, concurrency + 2).
const FAST = (size) => ({ localQueue: { size }, completeJobBatchDelay: 0, failJobBatchDelay: 0 });
const POOL_CONFIGS = [
  { concurrency: 10 },
  { concurrency: 50 },
  { concurrency: 10, worker: FAST(500) },
  { concurrency: 50, worker: FAST(500) },
  { concurrency: 24, maxPoolSize: 25, worker: FAST(500) },
];

if (!Number.isInteger(JOBS) || JOBS < 1) {
  process.stderr.write("graphile-bench.js: JOBS must be a positive integer\n");
  process.exit(2);
}

const logger = new Logger((scope) => (level, message) => {
  if (VERBOSE || level === "error" || level === "warning") {
    const label = scope && scope.label ? ` ${scope.label}` : "";
    process.stderr.write(`graphile-worker [${level}${label}] ${message}\n`);
  }
});

// Everything that has to be stopped or released before the database is dropped.
const state = { abortCode: 0, created: false, runners: new Set(), pools: new Set(), utils: null, tearingDown: null };

function describe(cfg) {
  const parts = [`concurrency=${cfg.concurrency}`, `maxPoolSize=${poolSize(cfg)}`];
  const w = cfg.worker || {};
  if (w.localQueue) parts.push(`localQueue.size=${w.localQueue.size}`);
  if (w.completeJobBatchDelay !== undefined) parts.push(`completeJobBatchDelay=${w.completeJobBatchDelay}`);
  if (w.failJobBatchDelay !== undefined) parts.push(`failJobBatchDelay=${w.failJobBatchDelay}`);
  return parts.join(" ");
}

function poolSize(cfg) {
  return cfg.maxPoolSize || Math.max(10, cfg.concurrency + 2);
}

function seconds(start) {
  return Number(process.hrtime.bigint() - start) / 1e9;
}

function quoteIdent(name) {
  return `"${name.replace(/"/g, '""')}"`;
}

async function withAdmin(fn) {
  const admin = new Client({ ...PG, database: "postgres", connectionTimeoutMillis: 10000 });
  admin.on("error", () => {});
  await admin.connect();
  try {
    return await fn(admin);
  } finally {
    await admin.end().catch(() => {});
  }
}

async function createDatabase() {
  await withAdmin(async (admin) => {
    // Fails if it already exists: then it is not ours and is left alone.
    await admin.query(`CREATE DATABASE ${quoteIdent(DB)}`);
    state.created = true;
  });
}

async function dropDatabase() {
  if (!state.created) return;
  await withAdmin(async (admin) => {
    // Only connections to our own database.
    await admin.query(
      "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()",
      [DB],
    );
    await admin.query(`DROP DATABASE IF EXISTS ${quoteIdent(DB)}`);
    state.created = false;
  });
}

function makePool(max) {
  const pool = new Pool({ ...PG, database: DB, max });
  // graphile-worker wants both handlers on a pool it is given.
  pool.on("error", (e) => logger.error(`pg pool error: ${e.message}`));
  pool.on("connect", (client) => client.on("error", (e) => logger.error(`pg client error: ${e.message}`)));
  state.pools.add(pool);
  return pool;
}

async function endPool(pool) {
  state.pools.delete(pool);
  await pool.end().catch(() => {});
}

// Open all of a pool's connections up front, so that (as in bench.js, where
// workers connect before the clock starts) connection setup is not timed.
async function warm(pool, n) {
  const clients = await Promise.all(Array.from({ length: n }, () => pool.connect()));
  clients.forEach((c) => c.release());
}

async function countJobs(pool) {
  const { rows } = await pool.query(`SELECT count(*)::int AS n FROM ${SCHEMA}._private_jobs`);
  return rows[0].n;
}

// Empty the (private to this database) jobs table and vacuum it, so every
// measurement starts from the same state.
async function clean(pool) {
  await pool.query(`DELETE FROM ${SCHEMA}._private_jobs`);
  await pool.query(`VACUUM (ANALYZE) ${SCHEMA}._private_jobs`);
}

async function enqueueSequential(utils) {
  const start = process.hrtime.bigint();
  for (let i = 0; i < JOBS; i++) await utils.addJob("noop", { i });
  return JOBS / seconds(start);
}

// Batch enqueue: WorkerUtils.addJobs (0.16+), one `graphile_worker.add_jobs`
// statement per BATCH jobs.
async function enqueueBatch(utils) {
  const start = process.hrtime.bigint();
  for (let from = 0; from < JOBS; from += BATCH) {
    const specs = [];
    for (let i = from; i < Math.min(from + BATCH, JOBS); i++) specs.push({ identifier: "noop", payload: { i } });
    await utils.addJobs(specs);
  }
  return JOBS / seconds(start);
}

async function processWith(utils, adminPool, cfg) {
  await clean(adminPool);
  await enqueueBatch(utils);
  const total = await countJobs(adminPool);
  if (total !== JOBS) throw new Error(`expected ${JOBS} queued jobs, found ${total}`);

  const seen = new Uint8Array(total);
  let done = 0;
  let resolveDone;
  const finished = new Promise((r) => (resolveDone = r));
  const taskList = {
    noop: async (payload) => {
      seen[payload.i] += 1;
      done += 1;
      if (done === total) resolveDone();
    },
  };

  const max = poolSize(cfg);
  const pgPool = makePool(max);
  let runner;
  try {
    await warm(pgPool, max);
    const start = process.hrtime.bigint();
    runner = await run({
      pgPool,
      schema: SCHEMA,
      concurrency: cfg.concurrency,
      noHandleSignals: true,
      taskList,
      parsedCronItems: parseCronItems([]),
      logger,
      preset: { worker: { ...(cfg.worker || {}) } },
    });
    state.runners.add(runner);
    const exited = runner.promise.then(
      () => Promise.reject(new Error("runner exited before all jobs ran")),
      (e) => Promise.reject(e),
    );
    exited.catch(() => {});
    await Promise.race([finished, exited]);
    const secs = seconds(start);
    state.runners.delete(runner);
    await runner.stop();
    await runner.promise.catch(() => {});
    runner = null;

    const wrong = seen.reduce((n, v) => n + (v !== 1 ? 1 : 0), 0);
    if (wrong) throw new Error(`${wrong} jobs did not run exactly once (${describe(cfg)})`);
    // Without completeJobBatchDelay, graphile-worker completes a job without
    // awaiting it (the worker moves on to the next job), and stop() does not
    // wait for those last in-flight completions: give them a moment.
    let left = await countJobs(adminPool);
    for (let waited = 0; left && waited < 10000; waited += 50) {
      await new Promise((r) => setTimeout(r, 50));
      left = await countJobs(adminPool);
    }
    if (left) throw new Error(`${left} jobs still in the table after the runner stopped (${describe(cfg)})`);
    const rate = total / secs;
    process.stderr.write(`graphile-bench.js: ${describe(cfg)}: ${rate.toFixed(0)} jobs/s (${secs.toFixed(2)} s)\n`);
    return rate;
  } finally {
    if (runner) {
      state.runners.delete(runner);
      await runner.stop().catch(() => {});
    }
    await endPool(pgPool);
  }
}

async function teardown() {
  if (state.tearingDown) return state.tearingDown;
  state.tearingDown = (async () => {
    for (const runner of state.runners) await runner.stop().catch(() => {});
    state.runners.clear();
    if (state.utils) await state.utils.release().catch(() => {});
    state.utils = null;
    for (const pool of [...state.pools]) await endPool(pool);
    await dropDatabase();
  })();
  return state.tearingDown;
}

// Deadline and signals: tear down (bounded), then exit non-zero.
function abort(reason, code) {
  if (state.abortCode) return;
  state.abortCode = code;
  process.stderr.write(`graphile-bench.js: ${reason}\n`);
  setTimeout(() => {
    process.stderr.write(`graphile-bench.js: teardown timed out; database ${DB} may be left behind\n`);
    process.exit(code);
  }, 30000).unref();
  teardown().then(
    () => process.exit(code),
    (e) => {
      process.stderr.write(`graphile-bench.js: teardown failed: ${e && e.message}\n`);
      process.exit(code);
    },
  );
}
setTimeout(() => abort("hard deadline reached", 3), DEADLINE_MS).unref();
process.once("SIGINT", () => abort("interrupted", 130));
process.once("SIGTERM", () => abort("terminated", 143));

async function main() {
  const t0 = process.hrtime.bigint();
  await createDatabase();
  try {
    const connectionString = `postgres://${encodeURIComponent(PG.user)}@${PG.host.includes(":") ? `[${PG.host}]` : PG.host}:${PG.port}/${DB}`;
    state.utils = await makeWorkerUtils({ connectionString, schema: SCHEMA, logger });
    await state.utils.migrate();
    const adminPool = makePool(2);
    const utils = state.utils;

    const out = {};
    await clean(adminPool);
    out.enqueue_sequential = await enqueueSequential(utils);
    await clean(adminPool);
    out.enqueue_batch = await enqueueBatch(utils);
    process.stderr.write(
      `graphile-bench.js: enqueue sequential ${out.enqueue_sequential.toFixed(0)}/s, batch ${out.enqueue_batch.toFixed(0)}/s\n`,
    );
    out.process_one = await processWith(utils, adminPool, { concurrency: 1 });
    out.process_pool = 0;
    for (const cfg of POOL_CONFIGS) {
      const rate = await processWith(utils, adminPool, cfg);
      if (rate > out.process_pool) {
        out.process_pool = rate;
        out.process_pool_config = describe(cfg);
      }
    }
    await clean(adminPool);
    process.stderr.write(`graphile-bench.js: done in ${seconds(t0).toFixed(1)} s\n`);
    process.stdout.write(JSON.stringify(out) + "\n");
  } finally {
    await teardown();
  }
}

main().then(
  () => process.exit(state.abortCode),
  (e) => {
    if (!state.abortCode) process.stderr.write(`graphile-bench.js: ${e && e.stack ? e.stack : e}\n`);
    const exit = () => process.exit(state.abortCode || 1);
    teardown().then(exit, exit);
  },
);
