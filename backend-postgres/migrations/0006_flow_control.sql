-- resq's tables, version 6: flow control (issue #14), per queue.
--
-- Run like 0001, with `search_path` set to the schema. (Versions 5 and 7
-- are other features' migrations; each applies on its own.) The claim
-- functions at the end are those of version 4 with the limits applied;
-- nothing else changes what a claim does.
--
-- `queue_limits` holds one row per limited queue: a rate limit (`rate_max`
-- starts in any window of `rate_period_ms`) and/or a concurrency cap
-- (`concurrency` jobs running at once).
--
-- Rate limit: `starts` is its sliding log, the start times (epoch ms, the
-- server's clock) within the window. A claim locks the rate-limited rows
-- of the queues it looks at (in name order, so callers listing queues in
-- other orders cannot deadlock) for the rest of its transaction: the check
-- and the starts it admits are one atomic step across every process. So
-- claims of one rate-limited queue take turns, one commit at a time.
--
-- Concurrency cap: `queue_slots` holds the cap's slots, rows 1..cap of the
-- queue. A claim takes free ones with `FOR UPDATE SKIP LOCKED` (as it
-- takes jobs: concurrent claims never wait for each other and never take
-- the same slot) and writes the claiming worker into each it uses; the
-- slot is free again when that worker's `working` row for the queue is
-- deleted (a completion, `clean_worker` from a stop or from the
-- stuck-worker sweep: the trigger below) or when the worker claims again
-- (its earlier job is over then). Lowering a cap leaves slots above it
-- held by running jobs until they end; claims only use slots up to the cap.
CREATE TABLE queue_limits (
    queue          text     PRIMARY KEY,
    rate_max       integer  CHECK (rate_max > 0),
    rate_period_ms bigint   CHECK (rate_period_ms > 0),
    concurrency    integer  CHECK (concurrency > 0),
    starts         bigint[] NOT NULL DEFAULT '{}',
    CHECK ((rate_max IS NULL) = (rate_period_ms IS NULL))
);

CREATE TABLE queue_slots (
    queue         text    NOT NULL,
    n             integer NOT NULL,
    holder_name   text,
    holder_queues text,
    PRIMARY KEY (queue, n)
);
CREATE INDEX queue_slots_holder ON queue_slots (holder_name, holder_queues) WHERE holder_name IS NOT NULL;

-- Sets (or with all NULLs removes) a queue's limits and its slot rows.
-- The rate log is kept when a rate limit stays.
CREATE FUNCTION resq_set_queue_limits(p_queue text, p_max integer, p_period bigint, p_cap integer)
RETURNS void
LANGUAGE plpgsql
SET search_path FROM CURRENT
AS $$
BEGIN
    IF p_max IS NULL AND p_cap IS NULL THEN
        DELETE FROM queue_limits WHERE queue = p_queue;
    ELSE
        INSERT INTO queue_limits AS l (queue, rate_max, rate_period_ms, concurrency)
        VALUES (p_queue, p_max, p_period, p_cap)
        ON CONFLICT (queue) DO UPDATE
           SET rate_max = EXCLUDED.rate_max,
               rate_period_ms = EXCLUDED.rate_period_ms,
               concurrency = EXCLUDED.concurrency,
               starts = CASE WHEN EXCLUDED.rate_max IS NULL THEN '{}' ELSE l.starts END;
    END IF;
    IF p_cap IS NULL THEN
        DELETE FROM queue_slots WHERE queue = p_queue;
    ELSE
        INSERT INTO queue_slots (queue, n)
        SELECT p_queue, g FROM generate_series(1, p_cap) AS g
        ON CONFLICT DO NOTHING;
        DELETE FROM queue_slots WHERE queue = p_queue AND n > p_cap AND holder_name IS NULL;
    END IF;
END;
$$;

-- Serialises a one-slot claim with `clean_worker` of the same worker (a
-- transaction-scoped advisory lock on the worker's name): a claim that
-- waits for a limit row while its worker gives up on it and unregisters
-- is then finished (and its job seen and put back by the clean) before
-- the clean reads the worker's `working` row, instead of writing that row
-- for a worker already gone. Claims that never wait (no rate limit among
-- their queues) skip it.
CREATE FUNCTION resq_claim_guard(p_worker_name text)
RETURNS void
LANGUAGE sql
SET search_path FROM CURRENT
AS $$
    SELECT pg_advisory_xact_lock(hashtextextended('resq:claim:' || current_schema() || ':' || p_worker_name, 0))
$$;

-- Locks the rate-limited rows of `p_queues` (name order) and returns the
-- time (epoch ms, read after the locks) the claim counts its starts at.
CREATE FUNCTION resq_flow_lock(p_queues text[])
RETURNS bigint
LANGUAGE plpgsql
SET search_path FROM CURRENT
AS $$
BEGIN
    PERFORM 1 FROM queue_limits AS l
      WHERE l.queue = ANY (coalesce(p_queues, '{}')) AND l.rate_max IS NOT NULL
      ORDER BY l.queue COLLATE "C"
        FOR UPDATE;
    RETURN floor(extract(epoch FROM clock_timestamp()) * 1000)::bigint;
END;
$$;

-- How many of `p_want` jobs queue `p_queue`'s rate limit lets start at
-- `p_now`: no more than it leaves in the window `(p_now - period, p_now]`.
CREATE FUNCTION resq_flow_room(p_queue text, p_want integer, p_now bigint)
RETURNS integer
LANGUAGE sql
SET search_path FROM CURRENT
AS $$
    SELECT coalesce(
        (SELECT greatest(0, least(p_want, l.rate_max
            - (SELECT count(*) FROM unnest(l.starts) AS s (t) WHERE s.t > p_now - l.rate_period_ms)::integer))
           FROM queue_limits AS l
          WHERE l.queue = p_queue AND l.rate_max IS NOT NULL),
        p_want)
$$;

-- Up to `p_want` free slots of capped queue `p_queue`, locked for this
-- transaction (slots another claim is taking are skipped); NULL when the
-- queue has no cap.
CREATE FUNCTION resq_flow_slots(p_queue text, p_want integer)
RETURNS integer[]
LANGUAGE plpgsql
SET search_path FROM CURRENT
AS $$
DECLARE
    cap integer;
BEGIN
    SELECT l.concurrency INTO cap FROM queue_limits AS l WHERE l.queue = p_queue;
    IF cap IS NULL THEN
        RETURN NULL;
    END IF;
    RETURN ARRAY(SELECT s.n FROM queue_slots AS s
                  WHERE s.queue = p_queue AND s.n <= cap AND s.holder_name IS NULL
                  ORDER BY s.n
                  LIMIT p_want
                    FOR UPDATE SKIP LOCKED);
END;
$$;

-- Gives slots `p_slots` of `p_queue` to the workers `p_names`/`p_queues`
-- (pairwise); nothing when `p_slots` is NULL (no cap).
CREATE FUNCTION resq_flow_hold(p_queue text, p_slots integer[], p_names text[], p_queues text[])
RETURNS void
LANGUAGE sql
SET search_path FROM CURRENT
AS $$
    UPDATE queue_slots AS s
       SET holder_name = h.name, holder_queues = h.queues
      FROM unnest(p_slots, p_names, p_queues) AS h (n, name, queues)
     WHERE s.queue = p_queue AND s.n = h.n
$$;

-- Frees every slot the workers `p_names`/`p_queues` (pairwise) hold.
CREATE FUNCTION resq_flow_release(p_names text[], p_queues text[])
RETURNS void
LANGUAGE sql
SET search_path FROM CURRENT
AS $$
    UPDATE queue_slots AS s
       SET holder_name = NULL, holder_queues = NULL
      FROM unnest(p_names, p_queues) AS r (name, queues)
     WHERE s.holder_name = r.name AND s.holder_queues = r.queues
$$;

-- Logs `p_n` starts of `p_queue` at `p_now` for its rate limit, dropping
-- the starts that left the window.
CREATE FUNCTION resq_flow_took(p_queue text, p_n integer, p_now bigint)
RETURNS void
LANGUAGE sql
SET search_path FROM CURRENT
AS $$
    UPDATE queue_limits AS l
       SET starts = ARRAY(SELECT s.t FROM unnest(l.starts) AS s (t) WHERE s.t > p_now - l.rate_period_ms)
                    || array_fill(p_now, ARRAY[p_n])
     WHERE l.queue = p_queue AND l.rate_max IS NOT NULL AND p_n > 0
$$;

-- Frees the slots of deleted `working` rows (completions, cleans): one
-- statement per deleting statement, and nothing while no slot is held.
CREATE FUNCTION resq_release_deleted_slots()
RETURNS trigger
LANGUAGE plpgsql
SET search_path FROM CURRENT
AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM queue_slots WHERE holder_name IS NOT NULL) THEN
        UPDATE queue_slots AS s
           SET holder_name = NULL, holder_queues = NULL
          FROM gone AS g
         WHERE s.holder_name = g.worker_name AND s.holder_queues = g.worker_queues AND s.queue = g.queue;
    END IF;
    RETURN NULL;
END;
$$;

CREATE TRIGGER working_release_slots
    AFTER DELETE ON working
    REFERENCING OLD TABLE AS gone
    FOR EACH STATEMENT EXECUTE FUNCTION resq_release_deleted_slots();

CREATE OR REPLACE FUNCTION resq_claim(p_queues text[], p_worker_name text, p_worker_queues text, p_run_at text)
RETURNS TABLE (claimed_queue text, claimed_payload text, claimed_enqueued_ms bigint)
LANGUAGE plpgsql
SET search_path FROM CURRENT
AS $$
DECLARE
    q   text;
    got text;
    at  bigint;
    fnow    bigint;
    taken   integer[];
    limited text[];
    rated   boolean;
BEGIN
    -- Flow control costs one index probe unless a queue has limits; only
    -- rate limits make claims wait (see `resq_claim_guard`).
    SELECT array_agg(l.queue), bool_or(l.rate_max IS NOT NULL) INTO limited, rated
      FROM queue_limits AS l WHERE l.queue = ANY (p_queues);
    IF limited IS NOT NULL THEN
        IF rated THEN
            PERFORM resq_claim_guard(p_worker_name);
            fnow := resq_flow_lock(p_queues);
        END IF;
        PERFORM resq_flow_release(ARRAY[p_worker_name], ARRAY[p_worker_queues]);
    END IF;
    FOREACH q IN ARRAY p_queues LOOP
        -- A queue at its limits is skipped, as a paused one is.
        taken := NULL;
        IF q = ANY (limited) THEN
            IF fnow IS NOT NULL THEN
                CONTINUE WHEN resq_flow_room(q, 1, fnow) = 0;
            END IF;
            taken := resq_flow_slots(q, 1);
            CONTINUE WHEN cardinality(taken) = 0;
        END IF;
        DELETE FROM jobs AS j
         WHERE j.queue = q
           AND j.id = (SELECT h.id FROM jobs AS h
                        WHERE h.queue = q
                        ORDER BY h.id
                        LIMIT 1
                        FOR UPDATE SKIP LOCKED)
        RETURNING j.payload, j.enqueued_ms INTO got, at;
        IF FOUND THEN
            IF fnow IS NOT NULL THEN
                PERFORM resq_flow_took(q, 1, fnow);
            END IF;
            IF taken IS NOT NULL THEN
                PERFORM resq_flow_hold(q, taken, ARRAY[p_worker_name], ARRAY[p_worker_queues]);
            END IF;
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
            claimed_enqueued_ms := at;
            RETURN NEXT;
            RETURN;
        END IF;
    END LOOP;
END;
$$;

CREATE OR REPLACE FUNCTION resq_complete_and_claim(
    p_done_names text[], p_done_queues text[], p_kinds smallint[], p_entries text[],
    p_queues text[], p_worker_names text[], p_worker_queues text[], p_run_at text)
RETURNS TABLE (slot integer, claimed_queue text, claimed_payload text, claimed_enqueued_ms bigint)
LANGUAGE plpgsql
SET search_path FROM CURRENT
AS $$
DECLARE
    slots    integer := coalesce(array_length(p_worker_names, 1), 0);
    k        integer := 0;
    q        text;
    got_q    text[] := '{}';
    got_p    text[] := '{}';
    got_t    bigint[] := '{}';
    pay      text[];
    tms      bigint[];
    n_ok     bigint;
    n_failed bigint;
    updated  bigint;
    room     integer;
    fnow     bigint;
    held     integer[];
    limited  text[];
    rated    boolean;
BEGIN
    IF slots > 0 THEN
        SELECT array_agg(l.queue), bool_or(l.rate_max IS NOT NULL) INTO limited, rated
          FROM queue_limits AS l WHERE l.queue = ANY (p_queues);
    END IF;
    IF limited IS NOT NULL THEN
        IF rated THEN
            fnow := resq_flow_lock(p_queues);
        END IF;
        -- The finished slots' and the claiming slots' own concurrency
        -- slots are free again before anything is claimed.
        PERFORM resq_flow_release(p_worker_names || p_done_names, p_worker_queues || p_done_queues);
    END IF;
    -- Claims: the heads of each queue in turn, as many as slots remain
    -- and the queue's limits leave room for.
    FOREACH q IN ARRAY coalesce(p_queues, '{}') LOOP
        EXIT WHEN k >= slots;
        room := slots - k;
        held := NULL;
        IF q = ANY (limited) THEN
            IF fnow IS NOT NULL THEN
                room := resq_flow_room(q, room, fnow);
                CONTINUE WHEN room = 0;
            END IF;
            held := resq_flow_slots(q, room);
            IF held IS NOT NULL THEN
                room := cardinality(held);
                CONTINUE WHEN room = 0;
            END IF;
        END IF;
        WITH taken AS (
            DELETE FROM jobs AS j
             WHERE j.ctid = ANY (ARRAY(SELECT h.ctid FROM jobs AS h
                                        WHERE h.queue = q
                                        ORDER BY h.id
                                        LIMIT room
                                        FOR UPDATE SKIP LOCKED))
            RETURNING j.id, j.payload, j.enqueued_ms
        )
        SELECT array_agg(t.payload ORDER BY t.id), array_agg(t.enqueued_ms ORDER BY t.id)
          INTO pay, tms FROM taken AS t;
        IF pay IS NOT NULL THEN
            IF fnow IS NOT NULL THEN
                PERFORM resq_flow_took(q, cardinality(pay), fnow);
            END IF;
            IF held IS NOT NULL THEN
                PERFORM resq_flow_hold(q, held[1:cardinality(pay)],
                    p_worker_names[k + 1:k + cardinality(pay)], p_worker_queues[k + 1:k + cardinality(pay)]);
            END IF;
            got_p := got_p || pay;
            got_t := got_t || tms;
            got_q := got_q || array_fill(q, ARRAY[cardinality(pay)]);
            k := k + cardinality(pay);
        END IF;
    END LOOP;

    -- Working-on rows: claimed slots 1..k get theirs replaced (updated in
    -- place when present, inserted otherwise); slots that completed and
    -- claimed nothing lose theirs.
    IF k > 0 THEN
        UPDATE working AS w
           SET worker = c.n, queue = c.q, run_at = p_run_at, payload = c.p, claimed_at = now()
          FROM unnest(p_worker_names[1:k], p_worker_queues[1:k], got_q, got_p) AS c (n, wq, q, p)
         WHERE w.worker_name = c.n AND w.worker_queues = c.wq;
        GET DIAGNOSTICS updated = ROW_COUNT;
        IF updated < k THEN
            -- New rows; a slot listed twice keeps its last claim, as
            -- repeated claims do.
            INSERT INTO working AS w (worker_name, worker_queues, worker, queue, run_at, payload, claimed_at)
            SELECT DISTINCT ON (c.n, c.wq) c.n, c.wq, c.n, c.q, p_run_at, c.p, now()
              FROM unnest(p_worker_names[1:k], p_worker_queues[1:k], got_q, got_p)
                   WITH ORDINALITY AS c (n, wq, q, p, o)
             ORDER BY c.n, c.wq, c.o DESC
            ON CONFLICT (worker_name, worker_queues) DO UPDATE
               SET worker = EXCLUDED.worker,
                   queue = EXCLUDED.queue,
                   run_at = EXCLUDED.run_at,
                   payload = EXCLUDED.payload,
                   claimed_at = EXCLUDED.claimed_at;
        END IF;
    END IF;
    IF coalesce(array_length(p_done_names, 1), 0) = 0 THEN
        RETURN QUERY SELECT (t.o - 1)::integer, t.q, t.p, t.t FROM unnest(got_q, got_p, got_t) WITH ORDINALITY AS t (q, p, t, o);
        RETURN;
    END IF;
    -- Usually every finished slot claimed again (a worker lists its idle
    -- slots, then its finished ones): then there is nothing to delete.
    IF k < slots OR EXISTS (SELECT d.n, d.q FROM unnest(p_done_names, p_done_queues) AS d (n, q)
                            EXCEPT
                            SELECT c.n, c.q FROM unnest(p_worker_names, p_worker_queues) AS c (n, q)) THEN
        DELETE FROM working AS w
         USING (SELECT d.n, d.q FROM unnest(p_done_names, p_done_queues) AS d (n, q)
                EXCEPT
                SELECT c.n, c.q FROM unnest(p_worker_names[1:k], p_worker_queues[1:k]) AS c (n, q)) AS d
         WHERE w.worker_name = d.n AND w.worker_queues = d.q;
    END IF;

    -- Outcomes: failed entries in order, then counters.
    INSERT INTO failed (entry)
    SELECT t.e FROM unnest(p_kinds, p_entries) WITH ORDINALITY AS t (k, e, o)
     WHERE t.k = 1
     ORDER BY t.o;
    SELECT count(*) FILTER (WHERE t.k = 0), count(*) FILTER (WHERE t.k = 1)
      INTO n_ok, n_failed
      FROM unnest(p_kinds) AS t (k);
    IF n_failed > 0 THEN
        INSERT INTO stats AS st (key, value) VALUES ('failed', n_failed)
        ON CONFLICT (key) DO UPDATE SET value = CASE WHEN st.value > 9223372036854775807 - EXCLUDED.value
            THEN 9223372036854775807 ELSE st.value + EXCLUDED.value END;
    END IF;
    IF n_ok > 0 THEN
        INSERT INTO stats AS st (key, value) VALUES ('processed', n_ok)
        ON CONFLICT (key) DO UPDATE SET value = CASE WHEN st.value > 9223372036854775807 - EXCLUDED.value
            THEN 9223372036854775807 ELSE st.value + EXCLUDED.value END;
    END IF;
    IF n_ok + n_failed > 0 THEN
        -- Each finished slot's own counter, updated in place; the rare
        -- missing one (a slot's first job) is inserted. Several completions
        -- of one slot in a batch add up.
        UPDATE stats AS st
           SET value = CASE WHEN st.value > 9223372036854775807 - x.n
                            THEN 9223372036854775807 ELSE st.value + x.n END
          FROM (SELECT CASE t.k WHEN 0 THEN 'processed:' ELSE 'failed:' END || t.n AS key, count(*) AS n
                  FROM unnest(p_kinds, p_done_names) AS t (k, n)
                 WHERE t.k < 2
                 GROUP BY 1) AS x
         WHERE st.key = x.key;
        GET DIAGNOSTICS updated = ROW_COUNT;
        IF updated < n_ok + n_failed THEN
            INSERT INTO stats AS st (key, value)
            SELECT x.key, x.n
              FROM (SELECT CASE t.k WHEN 0 THEN 'processed:' ELSE 'failed:' END || t.n AS key, count(*) AS n
                      FROM unnest(p_kinds, p_done_names) AS t (k, n)
                     WHERE t.k < 2
                     GROUP BY 1) AS x
             WHERE NOT EXISTS (SELECT 1 FROM stats AS s WHERE s.key = x.key)
             ORDER BY x.key COLLATE "C"
            ON CONFLICT (key) DO UPDATE SET value = CASE WHEN st.value > 9223372036854775807 - EXCLUDED.value
                THEN 9223372036854775807 ELSE st.value + EXCLUDED.value END;
        END IF;
    END IF;
    RETURN QUERY SELECT (t.o - 1)::integer, t.q, t.p, t.t FROM unnest(got_q, got_p, got_t) WITH ORDINALITY AS t (q, p, t, o);
END;
$$;
