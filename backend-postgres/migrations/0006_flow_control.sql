-- resq's tables, version 6: flow control (issue #14), per queue.
--
-- Run like 0001, with `search_path` set to the schema. (Versions 5 and 7
-- are other features' migrations; each applies on its own.)
--
-- `queue_limits` holds one row per limited queue: a rate limit (`rate_max`
-- starts in any window of `rate_period_ms`) and/or a concurrency cap
-- (`concurrency` jobs running at once). `starts` is the rate limit's
-- sliding log: the start times (epoch ms, the server's clock) within the
-- window, written by the claims. The claims lock the rows of the queues
-- they look at (in name order, so callers that list the queues in other
-- orders cannot deadlock) for the rest of their transaction: the check
-- and the start it admits are one atomic step across every process. A
-- cap counts the queue's `working` rows: a slot is held by the row its
-- claim wrote and released by whatever deletes it (a completion, or
-- `clean_worker` from a stop or from the stuck-worker sweep), with no
-- bookkeeping of its own. The claim functions below are those of version
-- 4 with the limits applied; nothing else changes.
CREATE TABLE queue_limits (
    queue          text     PRIMARY KEY,
    rate_max       integer  CHECK (rate_max > 0),
    rate_period_ms bigint   CHECK (rate_period_ms > 0),
    concurrency    integer  CHECK (concurrency > 0),
    starts         bigint[] NOT NULL DEFAULT '{}',
    CHECK ((rate_max IS NULL) = (rate_period_ms IS NULL))
);

-- Serialises a one-slot claim with `clean_worker` of the same worker (a
-- transaction-scoped advisory lock on the worker's name): a claim that
-- waits for a limit row while its worker gives up on it and unregisters
-- is then finished (and its job seen and put back by the clean) before
-- the clean reads the worker's `working` row, instead of writing that row
-- for a worker already gone. Claims that never wait (no limits) skip it.
CREATE FUNCTION resq_claim_guard(p_worker_name text)
RETURNS void
LANGUAGE sql
SET search_path FROM CURRENT
AS $$
    SELECT pg_advisory_xact_lock(hashtextextended('resq:claim:' || current_schema() || ':' || p_worker_name, 0))
$$;

-- Locks the limit rows of `p_queues` (name order) and returns the time
-- (epoch ms, read after the locks) the claim counts its starts at, or
-- NULL when no queue has limits, which skips every other flow step.
CREATE FUNCTION resq_flow_lock(p_queues text[])
RETURNS bigint
LANGUAGE plpgsql
SET search_path FROM CURRENT
AS $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM queue_limits) THEN
        RETURN NULL;
    END IF;
    PERFORM 1 FROM queue_limits AS l
      WHERE l.queue = ANY (coalesce(p_queues, '{}'))
      ORDER BY l.queue COLLATE "C"
        FOR UPDATE;
    RETURN floor(extract(epoch FROM clock_timestamp()) * 1000)::bigint;
END;
$$;

-- How many of `p_want` jobs queue `p_queue` may start at `p_now`: no more
-- than its rate limit leaves in the window `(p_now - period, p_now]` and
-- its cap leaves beside the running jobs (the `working` rows of its
-- queue, except those of `p_claiming`, the slots this claim gives new
-- jobs, whose rows it replaces or deletes).
CREATE FUNCTION resq_flow_room(p_queue text, p_want integer, p_claiming text[], p_now bigint)
RETURNS integer
LANGUAGE plpgsql
SET search_path FROM CURRENT
AS $$
DECLARE
    lim     queue_limits%ROWTYPE;
    room    integer := p_want;
    running integer;
BEGIN
    SELECT * INTO lim FROM queue_limits AS l WHERE l.queue = p_queue;
    IF NOT FOUND THEN
        RETURN p_want;
    END IF;
    IF lim.rate_max IS NOT NULL THEN
        room := least(room, lim.rate_max
            - (SELECT count(*) FROM unnest(lim.starts) AS s (t) WHERE s.t > p_now - lim.rate_period_ms)::integer);
    END IF;
    IF lim.concurrency IS NOT NULL THEN
        SELECT count(*) INTO running FROM working AS w
         WHERE w.queue = p_queue AND NOT (w.worker_name = ANY (coalesce(p_claiming, '{}')));
        room := least(room, lim.concurrency - running);
    END IF;
    RETURN greatest(room, 0);
END;
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

CREATE OR REPLACE FUNCTION resq_claim(p_queues text[], p_worker_name text, p_worker_queues text, p_run_at text)
RETURNS TABLE (claimed_queue text, claimed_payload text, claimed_enqueued_ms bigint)
LANGUAGE plpgsql
SET search_path FROM CURRENT
AS $$
DECLARE
    q   text;
    got text;
    at  bigint;
    fnow bigint;
BEGIN
    IF EXISTS (SELECT 1 FROM queue_limits) THEN
        PERFORM resq_claim_guard(p_worker_name);
        fnow := resq_flow_lock(p_queues);
    END IF;
    FOREACH q IN ARRAY p_queues LOOP
        -- A queue at its limits is skipped, as a paused one is.
        CONTINUE WHEN fnow IS NOT NULL AND resq_flow_room(q, 1, ARRAY[p_worker_name], fnow) = 0;
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
    fnow     bigint := CASE WHEN slots > 0 THEN resq_flow_lock(p_queues) END;
BEGIN
    -- Claims: the heads of each queue in turn, as many as slots remain
    -- and the queue's limits leave room for.
    FOREACH q IN ARRAY coalesce(p_queues, '{}') LOOP
        EXIT WHEN k >= slots;
        room := slots - k;
        IF fnow IS NOT NULL THEN
            room := resq_flow_room(q, room, p_worker_names || p_done_names, fnow);
            CONTINUE WHEN room = 0;
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
