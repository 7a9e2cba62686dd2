#!/usr/bin/env node
// Drives the real node-resque (the version pinned in package.json) for
// resq's interoperability tests (backend-redis/tests/interop_node_resque.rs).
//
// Usage: node nr.js <action> '<json options>'
//
// Environment:
//   REDIS_URL  redis://[user:password@]host:port[/db]   (default redis://127.0.0.1:6379)
//   NAMESPACE  the key namespace shared with resq        (default resque)
//   REDIS_CLUSTER_NODES  host:port,host:port of a Redis Cluster: connect
//              through an ioredis Cluster client instead (the user and
//              password of REDIS_URL apply to every node)
//
// One-shot actions print one JSON line, {"ok":true,"result":…} or
// {"ok":false,"error":"…"} (exit code 1). Long-running actions (`work`,
// `schedule`) print one JSON line per event and end with {"event":"end",…}.
// They stop by themselves after `maxMs`, and also when they read `end` on
// stdin (when started with "stdin":true). Every action has a hard deadline,
// so no process outlives a test even if Redis hangs.
"use strict";

const os = require("os");
const readline = require("readline");
const { Queue, Worker, Scheduler } = require("node-resque");

function connectionOptions() {
  const url = new URL(process.env.REDIS_URL || "redis://127.0.0.1:6379");
  const options = { connectTimeout: 3000, maxRetriesPerRequest: 2 };
  if (url.password) options.password = decodeURIComponent(url.password);
  if (url.username) options.username = decodeURIComponent(url.username);
  if (process.env.REDIS_CLUSTER_NODES) {
    // node-resque takes a ready client as `redis`; each of its connections
    // gets a Cluster client of its own (a subscriber may not share one).
    const Redis = require("ioredis");
    const nodes = process.env.REDIS_CLUSTER_NODES.split(",").map((hp) => {
      const i = hp.lastIndexOf(":");
      return { host: hp.slice(0, i), port: parseInt(hp.slice(i + 1), 10) };
    });
    const namespace = process.env.NAMESPACE || "resque";
    const cluster = new Redis.Cluster(nodes, { redisOptions: options });
    // node-resque lists keys (stats, timestamps, allDelayed, locks, stuck
    // workers) with SCAN, which an ioredis Cluster sends to one node at
    // random. The namespace is one hash tag, so its keys all live on the
    // primary owning the tag's slot: send SCAN there.
    const slot = require("cluster-key-slot")(namespace);
    cluster.scan = (...args) => {
      const owner = cluster.slots[slot] && cluster.slots[slot][0];
      const node = cluster.nodes("master").find((n) => `${n.options.host}:${n.options.port}` === owner);
      if (!node) return Promise.reject(new Error(`no primary owns slot ${slot} of ${namespace}`));
      return node.scan(...args);
    };
    return { redis: cluster, namespace };
  }
  const db = url.pathname && url.pathname.length > 1 ? parseInt(url.pathname.slice(1), 10) : 0;
  return {
    host: url.hostname.replace(/^\[|\]$/g, "") || "127.0.0.1",
    port: url.port ? parseInt(url.port, 10) : 6379,
    database: Number.isFinite(db) ? db : 0,
    namespace: process.env.NAMESPACE || "resque",
    options,
  };
}

function emit(obj) {
  process.stdout.write(JSON.stringify(obj) + "\n");
}

function hardDeadline(ms) {
  setTimeout(() => {
    emit({ ok: false, event: "end", error: `hard deadline of ${ms} ms reached` });
    process.exit(3);
  }, ms).unref();
}

function errorMessage(e) {
  return e && e.message ? e.message : String(e);
}

// The `connect` of node-resque's Connection reports failures through an
// "error" event rather than by rejecting: surface them as exceptions.
async function connected(thing, connectionOf) {
  let failure = null;
  const onError = (e) => {
    failure = failure || e;
  };
  thing.on("error", onError);
  await thing.connect();
  thing.removeListener("error", onError);
  const connection = connectionOf(thing);
  if (failure || !connection || !connection.connected) {
    throw new Error(`cannot connect to Redis: ${errorMessage(failure) || "not connected"}`);
  }
  return thing;
}

async function withQueue(fn) {
  const queue = new Queue({ connection: connectionOptions() });
  try {
    await connected(queue, (q) => q.connection);
    return await fn(queue);
  } finally {
    await queue.end();
  }
}

function job(o) {
  return [o.queue, o.class, o.args === undefined ? [] : o.args];
}

// ---- one-shot actions -----------------------------------------------------

const oneShot = {
  // The bytes node-resque stores for a job (queue, delayed item, timestamps key).
  encode: async (o) => withQueue(async (q) => q.encode(...job(o))),
  enqueue: async (o) => withQueue((q) => q.enqueue(...job(o))),
  enqueueAt: async (o) => withQueue((q) => q.enqueueAt(o.timestamp, ...job(o))),
  enqueueIn: async (o) =>
    withQueue(async (q) => {
      const before = Date.now();
      await q.enqueueIn(o.delay, ...job(o));
      return { before, after: Date.now() };
    }),
  del: async (o) => withQueue((q) => q.del(...job(o), o.count || 0)),
  delDelayed: async (o) => withQueue((q) => q.delDelayed(...job(o))),
  scheduledAt: async (o) => withQueue((q) => q.scheduledAt(...job(o))),
  leader: async () => withQueue((q) => q.leader()),
  // Enqueues through a Queue that knows the job with these built-in
  // plugins (`plugins: ["QueueLock", …]`, `pluginOptions`): true, or
  // false when a plugin vetoed it.
  enqueueWithPlugins: async (o) => {
    const { Plugins } = require("node-resque");
    const jobs = {
      [o.class]: {
        plugins: (o.plugins || []).map((name) => Plugins[name]),
        pluginOptions: o.pluginOptions || {},
        perform: async () => null,
      },
    };
    const queue = new Queue({ connection: connectionOptions() }, jobs);
    try {
      await connected(queue, (q) => q.connection);
      return await queue.enqueue(...job(o));
    } finally {
      await queue.end();
    }
  },
  // The stored value and TTL (s) of a key under the namespace.
  lockInfo: async (o) =>
    withQueue(async (q) => {
      const key = q.connection.key(o.key);
      return { value: await q.connection.redis.get(key), ttl: await q.connection.redis.ttl(key) };
    }),
  failed: async () => withQueue((q) => q.failed(0, -1)),
  // Picks the failed entry at `index` as node-resque lists it, then removes it.
  removeFailed: async (o) =>
    withQueue(async (q) => {
      const entries = await q.failed(0, -1);
      if (!entries[o.index]) throw new Error(`no failed entry at index ${o.index}`);
      return q.removeFailed(entries[o.index]);
    }),
  retryAndRemoveFailed: async (o) =>
    withQueue(async (q) => {
      const entries = await q.failed(0, -1);
      if (!entries[o.index]) throw new Error(`no failed entry at index ${o.index}`);
      return q.retryAndRemoveFailed(entries[o.index]);
    }),
  // Everything node-resque's Queue can tell, in one answer. `queues` names
  // the queues to list; `jobs` the jobs to look up with scheduledAt.
  inspect: async (o) =>
    withQueue(async (q) => {
      const out = {
        queues: (await q.queues()).sort(),
        stats: await q.stats(),
        length: {},
        queued: {},
        timestamps: await q.timestamps(),
        allDelayed: await q.allDelayed(),
        scheduledAt: [],
        workers: await q.workers(),
        allWorkingOn: await q.allWorkingOn(),
        failedCount: await q.failedCount(),
        failed: await q.failed(0, -1),
        leader: await q.leader(),
      };
      for (const name of o.queues || []) {
        out.length[name] = await q.length(name);
        out.queued[name] = await q.queued(name, 0, -1);
      }
      for (const j of o.jobs || []) {
        out.scheduledAt.push(await q.scheduledAt(...job(j)));
      }
      // The dates as node-resque reads them (cleanOldWorkers parses run_at).
      out.runAtParsed = {};
      for (const [name, w] of Object.entries(out.allWorkingOn)) {
        if (w && typeof w === "object") out.runAtParsed[name] = Date.parse(w.run_at);
      }
      out.failedAtParsed = out.failed.map((f) => Date.parse(f.failed_at));
      return out;
    }),
};

// ---- long-running actions -------------------------------------------------

function stdinCommands(enabled, handlers) {
  if (!enabled) return;
  const rl = readline.createInterface({ input: process.stdin });
  rl.on("line", (line) => {
    const h = handlers[line.trim()];
    if (h) h();
  });
  // The test went away (or closed our stdin on purpose): stop.
  rl.on("close", () => handlers.end());
}

// Runs a Worker with the test jobs until `count` jobs finished, `maxMs`
// passed, or `end` arrives on stdin.
async function work(o) {
  const maxMs = o.maxMs || 30000;
  hardDeadline(maxMs + 15000);
  const releases = [];
  const jobs = {
    add: { perform: async (a, b) => a + b },
    echo: { perform: async (...args) => args },
    boom: {
      perform: async (...args) => {
        throw new Error(`boom ${JSON.stringify(args)}`);
      },
    },
    // Runs until `release` arrives on stdin (at most 20 s).
    slow: {
      perform: async (...args) => {
        await new Promise((resolve) => {
          releases.push(resolve);
          setTimeout(resolve, 20000).unref();
        });
        return args;
      },
    },
  };
  const worker = new Worker(
    {
      connection: connectionOptions(),
      queues: o.queues,
      name: o.name || `${os.hostname()}:${process.pid}`,
      timeout: o.timeout || 100,
    },
    jobs,
  );
  let done = 0;
  let ending = null;
  const stop = (why) => {
    if (!ending) {
      ending = (async () => {
        try {
          await worker.end();
        } catch (e) {
          emit({ event: "error", error: errorMessage(e) });
        }
        emit({ event: "end", why, done });
        process.exit(0);
      })();
    }
    return ending;
  };
  const finished = () => {
    done += 1;
    if (o.count && done >= o.count) stop("count");
  };
  worker.on("job", (queue, j) => emit({ event: "job", queue, job: j }));
  worker.on("success", (queue, j, result) => {
    emit({ event: "success", queue, job: j, result });
    finished();
  });
  worker.on("failure", (queue, j, failure) => {
    emit({ event: "failure", queue, job: j, error: errorMessage(failure) });
    finished();
  });
  worker.on("error", (error, queue) => emit({ event: "error", queue, error: errorMessage(error) }));
  await connected(worker, (w) => w.connection);
  await worker.start();
  emit({ event: "start", name: worker.name, queues: worker.queues });
  stdinCommands(o.stdin, {
    end: () => stop("stdin"),
    release: () => releases.splice(0).forEach((r) => r()),
  });
  setTimeout(() => stop("maxMs"), maxMs).unref();
  // Keep the event loop alive while the worker polls.
  await new Promise(() => {});
}

// Runs a Scheduler. Prints every attempt at the leader lock ("try", with
// whether it was won), "leader" when it becomes leader, "transferredJob",
// "cleanStuckWorker", and "end" with whether it still led when asked to stop.
async function schedule(o) {
  const maxMs = o.maxMs || 30000;
  hardDeadline(maxMs + 15000);
  const scheduler = new Scheduler({
    connection: connectionOptions(),
    name: o.name,
    timeout: o.timeout || 200,
    leaderLockTimeout: o.leaderLockTimeout || 3,
    stuckWorkerTimeout: o.stuckWorkerTimeout || 60 * 60 * 1000,
  });
  // Report each leader-lock attempt (tryForLeader is node-resque's own code).
  const tryForLeader = scheduler.tryForLeader.bind(scheduler);
  scheduler.tryForLeader = async () => {
    const won = await tryForLeader();
    emit({ event: "try", won: won === true, at: Date.now() });
    return won;
  };
  scheduler.on("leader", () => emit({ event: "leader", at: Date.now() }));
  scheduler.on("transferredJob", (timestamp, j) => emit({ event: "transferredJob", timestamp, job: j, at: Date.now() }));
  scheduler.on("cleanStuckWorker", (worker, errorPayload, delta) =>
    emit({ event: "cleanStuckWorker", worker, errorPayload: errorPayload || null, delta }),
  );
  scheduler.on("error", (error) => emit({ event: "error", error: errorMessage(error) }));
  let ending = null;
  const stop = (why) => {
    if (!ending) {
      ending = (async () => {
        const wasLeader = scheduler.leader;
        scheduler.tryForLeader = tryForLeader; // release quietly
        try {
          await scheduler.end();
        } catch (e) {
          emit({ event: "error", error: errorMessage(e) });
        }
        emit({ event: "end", why, wasLeader });
        process.exit(0);
      })();
    }
    return ending;
  };
  await connected(scheduler, (s) => s.connection);
  await scheduler.start();
  emit({ event: "start", name: scheduler.name });
  stdinCommands(o.stdin, { end: () => stop("stdin") });
  setTimeout(() => stop("maxMs"), maxMs).unref();
  await new Promise(() => {});
}

async function main() {
  const [action, raw] = process.argv.slice(2);
  let o;
  try {
    o = raw ? JSON.parse(raw) : {};
  } catch (e) {
    emit({ ok: false, error: `options are not JSON: ${errorMessage(e)}` });
    process.exit(2);
  }
  if (action === "work") return work(o);
  if (action === "schedule") return schedule(o);
  const fn = oneShot[action];
  if (!fn) {
    emit({ ok: false, error: `unknown action ${JSON.stringify(action)}` });
    process.exit(2);
  }
  hardDeadline(o.maxMs || 15000);
  try {
    const result = await fn(o);
    emit({ ok: true, result: result === undefined ? null : result });
    process.exit(0);
  } catch (e) {
    emit({ ok: false, error: errorMessage(e) });
    process.exit(1);
  }
}

main().catch((e) => {
  emit({ ok: false, event: "end", error: errorMessage(e) });
  process.exit(1);
});
