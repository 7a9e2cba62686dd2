-- resq's tables, version 1.
--
-- The migration runner creates the schema and runs this file with
-- `search_path` set to it, so every name below lands in the configured
-- schema. Payloads and failed entries are `text`, never `jsonb`: they are
-- stored byte for byte.

-- Queued jobs. FIFO is ascending `id`: pushes to the tail take ids from
-- `jobs_tail_seq` (1, 2, 3, …), pushes to the head (a cleaned worker's job
-- going back to run next) from `jobs_head_seq` (-1, -2, …), so a later head
-- push sorts before every job already queued.
CREATE SEQUENCE jobs_tail_seq AS bigint START WITH 1 INCREMENT BY 1;
CREATE SEQUENCE jobs_head_seq AS bigint START WITH -1 INCREMENT BY -1 MINVALUE -9223372036854775808 MAXVALUE -1;

CREATE TABLE jobs (
    queue   text   NOT NULL,
    id      bigint NOT NULL DEFAULT nextval('jobs_tail_seq'),
    payload text   NOT NULL,
    -- One index serves the claim (head of a queue), ranges and lengths.
    PRIMARY KEY (queue, id)
);
ALTER SEQUENCE jobs_tail_seq OWNED BY jobs.id;
ALTER SEQUENCE jobs_head_seq OWNED BY jobs.id;

-- Resque's `queues` set: a name stays from its first push until
-- `delete_queue`, even when the queue runs empty.
CREATE TABLE queues (
    name text PRIMARY KEY
);

-- What each worker is running: one row per worker id, written by the claim
-- that takes the job off its queue and deleted by `complete`.
CREATE TABLE working (
    worker_name   text        NOT NULL,
    worker_queues text        NOT NULL,
    worker        text        NOT NULL,
    queue         text        NOT NULL,
    run_at        text        NOT NULL,
    payload       text        NOT NULL,
    claimed_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (worker_name, worker_queues)
);

-- The delayed schedule: buckets of payloads keyed by Unix second, in
-- insertion (`id`) order within a bucket. `digest` is the SHA-256 of the
-- payload's bytes; the unique index refuses the same payload twice in one
-- bucket and finds a payload's buckets.
CREATE TABLE delayed (
    ts      bigint NOT NULL,
    id      bigint GENERATED ALWAYS AS IDENTITY,
    payload text   NOT NULL,
    digest  bytea  NOT NULL,
    PRIMARY KEY (ts, id)
);
CREATE UNIQUE INDEX delayed_digest_ts ON delayed (digest, ts);

-- The failed list, oldest first.
CREATE TABLE failed (
    id    bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    entry text   NOT NULL
);
CREATE INDEX failed_entry_md5 ON failed (md5(entry));

-- Registered workers (Resque's `workers` set with `worker:<id>:started`).
CREATE TABLE workers (
    name       text   NOT NULL,
    queues     text   NOT NULL,
    started_ms bigint NOT NULL,
    PRIMARY KEY (name, queues)
);

-- Liveness pings, keyed by worker name as Resque's `worker:ping:<name>`.
CREATE TABLE pings (
    name    text   PRIMARY KEY,
    queues  text   NOT NULL,
    ping_ms bigint NOT NULL
);

-- Counters: `processed`, `failed`, `processed:<worker>`, …
CREATE TABLE stats (
    key   text   PRIMARY KEY,
    value bigint NOT NULL
);

-- Plugin locks. A row whose `expires_at` has passed counts as absent.
CREATE TABLE locks (
    key        text        PRIMARY KEY,
    value      text        NOT NULL,
    expires_at timestamptz NOT NULL
);

-- The scheduler's leader lock: at most one row.
CREATE TABLE leader (
    slot       smallint    PRIMARY KEY DEFAULT 1 CHECK (slot = 1),
    holder     text        NOT NULL,
    expires_at timestamptz NOT NULL
);

-- Takes the head of the first non-empty queue in `p_queues` (priority
-- order) and records it as the worker's working-on row, in one statement.
-- `SKIP LOCKED` lets concurrent claimers pass a head that another claim is
-- taking; each queue is one index probe on `jobs (queue, id)`.
CREATE FUNCTION resq_claim(p_queues text[], p_worker_name text, p_worker_queues text, p_run_at text)
RETURNS TABLE (claimed_queue text, claimed_payload text)
LANGUAGE plpgsql
SET search_path FROM CURRENT
AS $$
DECLARE
    q   text;
    got text;
BEGIN
    FOREACH q IN ARRAY p_queues LOOP
        DELETE FROM jobs AS j
         WHERE j.queue = q
           AND j.id = (SELECT h.id FROM jobs AS h
                        WHERE h.queue = q
                        ORDER BY h.id
                        LIMIT 1
                        FOR UPDATE SKIP LOCKED)
        RETURNING j.payload INTO got;
        IF FOUND THEN
            INSERT INTO working AS w (worker_name, worker_queues, worker, queue, run_at, payload, claimed_at)
            VALUES (p_worker_name, p_worker_queues, p_worker_name, q, p_run_at, got, now())
            ON CONFLICT (worker_name, worker_queues) DO UPDATE
               SET worker = EXCLUDED.worker,
                   queue = EXCLUDED.queue,
                   run_at = EXCLUDED.run_at,
                   payload = EXCLUDED.payload,
                   claimed_at = EXCLUDED.claimed_at;
            claimed_queue := q;
            claimed_payload := got;
            RETURN NEXT;
            RETURN;
        END IF;
    END LOOP;
END;
$$;

-- Claims up to one job for each worker slot (`p_worker_names[k]`,
-- `p_worker_queues[k]`), draining the queues in priority order and FIFO
-- within a queue: for each queue, as many heads as slots remain are taken
-- in one statement. Returns the 0-based slot of each claim, for a prefix
-- of the slots.
CREATE FUNCTION resq_claim_batch(p_queues text[], p_worker_names text[], p_worker_queues text[], p_run_at text)
RETURNS TABLE (slot integer, claimed_queue text, claimed_payload text)
LANGUAGE plpgsql
SET search_path FROM CURRENT
AS $$
DECLARE
    slots integer := coalesce(array_length(p_worker_names, 1), 0);
    k     integer := 1;
    q     text;
    r     record;
BEGIN
    FOREACH q IN ARRAY coalesce(p_queues, '{}') LOOP
        EXIT WHEN k > slots;
        FOR r IN
            WITH taken AS (
                DELETE FROM jobs AS j
                 WHERE j.queue = q
                   AND j.id IN (SELECT h.id FROM jobs AS h
                                 WHERE h.queue = q
                                 ORDER BY h.id
                                 LIMIT slots - k + 1
                                 FOR UPDATE SKIP LOCKED)
                RETURNING j.id, j.payload
            )
            SELECT t.id, t.payload FROM taken AS t ORDER BY t.id
        LOOP
            INSERT INTO working AS w (worker_name, worker_queues, worker, queue, run_at, payload, claimed_at)
            VALUES (p_worker_names[k], p_worker_queues[k], p_worker_names[k], q, p_run_at, r.payload, now())
            ON CONFLICT (worker_name, worker_queues) DO UPDATE
               SET worker = EXCLUDED.worker,
                   queue = EXCLUDED.queue,
                   run_at = EXCLUDED.run_at,
                   payload = EXCLUDED.payload,
                   claimed_at = EXCLUDED.claimed_at;
            slot := k - 1;
            claimed_queue := q;
            claimed_payload := r.payload;
            RETURN NEXT;
            k := k + 1;
        END LOOP;
    END LOOP;
END;
$$;
