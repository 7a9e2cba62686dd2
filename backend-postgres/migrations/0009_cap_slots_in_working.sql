-- resq's tables, version 9: a cheaper concurrency cap (issue #14).
--
-- Run like 0001, with `search_path` set to the schema. (Version 8 is left
-- to another feature's migration; each applies on its own.)
--
-- Version 6 kept a cap's slots as rows of `queue_slots`: a claim locked a
-- free row (`FOR UPDATE SKIP LOCKED`) and wrote its holder, and the
-- completion's statement trigger wrote it free again: two more row
-- updates (not HOT: the holder was indexed) and a row lock per job, and
-- claims of one queue all raced for the same lowest rows. A cap that did
-- not bind cost about 30% of the throughput.
--
-- Here a claimed job's slot number is a column of its `working` row,
-- `cap_slot` (NULL for a queue without a cap). The row a claim writes
-- anyway holds the slot, and the deletion a completion, a clean or the
-- stuck-worker sweep does anyway frees it: no extra row is written. A
-- claim picks free numbers `1..cap` of the queue (no `working` row holds
-- them), reserving each with a transaction-scoped advisory lock
-- (`pg_try_advisory_xact_lock`: never waits; a number another claim is
-- taking right now is skipped), then checks them again in a new statement,
-- whose snapshot sees every claim that committed before the lock was
-- free (a lock is released only after its transaction's commit is
-- visible). So two claims never hold one number, and at most `cap` jobs
-- of the queue run at once, across every process. The numbers are
-- scanned from a random start, so claims of a queue that is far from its
-- cap rarely try the same one.
--
-- As before, a claiming worker's own earlier slot (and, in a batch round,
-- the finished and the claiming slots' own) counts as free: their earlier
-- jobs are over. Lowering a cap leaves running jobs with numbers above it
-- until they end; claims only use numbers up to the cap. A batch claim
-- holds one advisory lock per capped job it claims until it commits.
ALTER TABLE working ADD COLUMN cap_slot integer;
-- Only `cap_slot` is indexed (not `queue`): an update that moves a slot
-- to another queue without a cap stays HOT.
CREATE INDEX working_cap_slot ON working (cap_slot) WHERE cap_slot IS NOT NULL;

-- Jobs running now keep the slots they hold.
UPDATE working AS w
   SET cap_slot = s.n
  FROM queue_slots AS s
 WHERE s.holder_name = w.worker_name AND s.holder_queues = w.worker_queues AND s.queue = w.queue;

DROP TRIGGER working_release_slots ON working;
DROP FUNCTION resq_release_deleted_slots();
DROP FUNCTION resq_flow_release(text[], text[]);
DROP FUNCTION resq_flow_hold(text, integer[], text[], text[]);
DROP FUNCTION resq_flow_slots(text, integer);
DROP TABLE queue_slots;

-- Sets (or with all NULLs removes) a queue's limits. The rate log is kept
-- when a rate limit stays.
CREATE OR REPLACE FUNCTION resq_set_queue_limits(p_queue text, p_max integer, p_period bigint, p_cap integer)
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
END;
$$;

-- The limit checks of one queue in a claim: how many of `p_want` jobs
-- `p_queue` may start now (`p_now`, from `resq_flow_lock`, or NULL when
-- none of the claim's queues has a rate limit), and, when it has a cap,
-- the slot numbers they take (`slots`, as many as `room`; NULL without a
-- cap). Slots are reserved as the header describes; a slot is free when
-- no `working` row holds it but those of `p_own_names` / `p_own_queues`
-- (pairwise: the claiming workers, whose rows the caller rewrites or
-- deletes). Rate limits and caps are checked here only, so a change to
-- them touches this function, not the claim functions.
CREATE FUNCTION resq_flow_admit(
    p_queue text, p_want integer, p_now bigint, p_own_names text[], p_own_queues text[],
    OUT room integer, OUT slots integer[])
LANGUAGE plpgsql
SET search_path FROM CURRENT
-- The probes of `working_cap_slot` are plain index scans, which mark the
-- entries of completed jobs' dead rows as they pass them (a bitmap scan
-- would visit those rows' pages on every probe until a vacuum). Every
-- statement here has one good plan whatever its parameters: planning it
-- again for each call (a custom plan) cost as much as running it.
SET enable_bitmapscan = off
SET plan_cache_mode = force_generic_plan
AS $$
DECLARE
    cap    integer;
    start  integer;
    seen   integer;
    chunk  integer;
    picked integer[];
BEGIN
    room := p_want;
    IF p_now IS NOT NULL THEN
        room := resq_flow_room(p_queue, room, p_now);
    END IF;
    SELECT l.concurrency INTO cap FROM queue_limits AS l WHERE l.queue = p_queue;
    IF cap IS NULL OR room <= 0 THEN
        RETURN;
    END IF;
    -- The numbers from a random start. Far from the cap, the first `room`
    -- of them are free: reserve them at once, then check them in a new
    -- statement (its snapshot is taken after the locks, so a claim that
    -- held one of them has committed and is seen). When some were taken,
    -- go on a chunk at a time, reserving only numbers free in the chunk's
    -- snapshot (so a cap that binds takes no more locks than it admits
    -- jobs, plus the first chunk's), and check those again.
    --
    -- A batch round first takes back its own slots' numbers in this queue
    -- (their rows are committed: no other claim takes those numbers), so
    -- a slot that claims from the same queue again keeps its number and
    -- its row's update stays HOT (`cap_slot` is indexed).
    slots := '{}';
    IF cardinality(p_own_names) > 1 THEN
        slots := ARRAY(SELECT w.cap_slot FROM working AS w
                        WHERE (w.worker_name, w.worker_queues) IN (SELECT * FROM unnest(p_own_names, p_own_queues))
                          AND w.queue = p_queue AND w.cap_slot <= cap
                        LIMIT room);
        IF cardinality(slots) >= room THEN
            room := cardinality(slots);
            RETURN;
        END IF;
    END IF;
    start := floor(random() * cap)::integer;
    chunk := least(room - cardinality(slots), cap);
    picked := ARRAY(
        SELECT c.n
          FROM (SELECT (start + g.i) % cap + 1 AS n FROM generate_series(0, chunk - 1) AS g (i)
                 WHERE (start + g.i) % cap + 1 <> ALL (slots)
                OFFSET 0) AS c
         WHERE pg_try_advisory_xact_lock(hashtextextended('resq:slot:' || current_schema() || ':' || p_queue || ':' || c.n, 0)));
    seen := chunk;
    LOOP
        slots := slots || ARRAY(
            SELECT p.n FROM unnest(picked) WITH ORDINALITY AS p (n, o)
             WHERE (SELECT 1 FROM working AS w
                     WHERE w.cap_slot = p.n AND w.queue = p_queue
                       AND NOT EXISTS (SELECT 1 FROM unnest(p_own_names, p_own_queues) AS own (n, q)
                                        WHERE own.n = w.worker_name AND own.q = w.worker_queues)
                     LIMIT 1) IS NULL
             ORDER BY p.o);
        EXIT WHEN cardinality(slots) >= room OR seen >= cap;
        chunk := least(cap - seen, greatest(32, 2 * (room - cardinality(slots))));
        -- (The fence keeps locks off numbers that are not free.)
        picked := ARRAY(
            SELECT c.n
              FROM (SELECT (start + seen + g.i) % cap + 1 AS n
                      FROM generate_series(0, chunk - 1) AS g (i)
                     WHERE (start + seen + g.i) % cap + 1 <> ALL (slots)
                       AND (SELECT 1 FROM working AS w
                             WHERE w.cap_slot = (start + seen + g.i) % cap + 1 AND w.queue = p_queue
                               AND NOT EXISTS (SELECT 1 FROM unnest(p_own_names, p_own_queues) AS own (n, q)
                                                WHERE own.n = w.worker_name AND own.q = w.worker_queues)
                             LIMIT 1) IS NULL
                    OFFSET 0) AS c
             WHERE pg_try_advisory_xact_lock(hashtextextended('resq:slot:' || current_schema() || ':' || p_queue || ':' || c.n, 0))
             LIMIT room - cardinality(slots));
        seen := seen + chunk;
    END LOOP;
    room := cardinality(slots);
END;
$$;

CREATE OR REPLACE FUNCTION resq_claim(p_queues text[], p_worker_name text, p_worker_queues text, p_run_at text)
RETURNS TABLE (claimed_queue text, claimed_payload text, claimed_enqueued_ms bigint)
LANGUAGE plpgsql
SET search_path FROM CURRENT
AS $$
DECLARE
    q       text;
    got     text;
    at      bigint;
    fnow    bigint;
    adm     record;
    slot    integer;
    limited text[];
    rated   boolean;
BEGIN
    -- Flow control costs one index probe unless a queue has limits; only
    -- rate limits make claims wait (see `resq_claim_guard`).
    SELECT array_agg(l.queue), bool_or(l.rate_max IS NOT NULL) INTO limited, rated
      FROM queue_limits AS l WHERE l.queue = ANY (p_queues);
    IF rated THEN
        PERFORM resq_claim_guard(p_worker_name);
        fnow := resq_flow_lock(p_queues);
    END IF;
    FOREACH q IN ARRAY p_queues LOOP
        -- A queue at its limits is skipped, as a paused one is.
        slot := NULL;
        IF q = ANY (limited) THEN
            adm := resq_flow_admit(q, 1, fnow, ARRAY[p_worker_name], ARRAY[p_worker_queues]);
            CONTINUE WHEN adm.room = 0;
            slot := adm.slots[1];
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
            INSERT INTO working AS w (worker_name, worker_queues, worker, queue, run_at, payload, claimed_at, cap_slot)
            VALUES (p_worker_name, p_worker_queues, p_worker_name, q, p_run_at, got, now(), slot)
            ON CONFLICT (worker_name, worker_queues) DO UPDATE
               SET worker = EXCLUDED.worker,
                   queue = EXCLUDED.queue,
                   run_at = EXCLUDED.run_at,
                   payload = EXCLUDED.payload,
                   claimed_at = EXCLUDED.claimed_at,
                   cap_slot = EXCLUDED.cap_slot;
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
    got_s    integer[] := '{}';
    pay      text[];
    tms      bigint[];
    n_ok     bigint;
    n_failed bigint;
    updated  bigint;
    room     integer;
    fnow     bigint;
    adm      record;
    held     integer[];
    limited  text[];
    rated    boolean;
BEGIN
    IF slots > 0 THEN
        SELECT array_agg(l.queue), bool_or(l.rate_max IS NOT NULL) INTO limited, rated
          FROM queue_limits AS l WHERE l.queue = ANY (p_queues);
    END IF;
    IF rated THEN
        fnow := resq_flow_lock(p_queues);
    END IF;
    -- Claims: the heads of each queue in turn, as many as slots remain
    -- and the queue's limits leave room for. The finished slots' and the
    -- claiming slots' own concurrency slots count as free.
    FOREACH q IN ARRAY coalesce(p_queues, '{}') LOOP
        EXIT WHEN k >= slots;
        room := slots - k;
        held := NULL;
        IF q = ANY (limited) THEN
            adm := resq_flow_admit(q, room, fnow, p_worker_names || p_done_names, p_worker_queues || p_done_queues);
            room := adm.room;
            held := adm.slots;
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
            IF held IS NULL THEN
                got_s := got_s || array_fill(NULL::integer, ARRAY[cardinality(pay)]);
            ELSE
                -- Each claiming slot keeps its own number when it is among
                -- those taken; the others get the rest, in order.
                got_s := got_s || ARRAY(
                    WITH c AS (
                        SELECT o.i, (SELECT w.cap_slot FROM working AS w
                                      WHERE w.worker_name = o.wn AND w.worker_queues = o.wq AND w.queue = q
                                        AND w.cap_slot = ANY (held[1:cardinality(pay)])) AS own
                          FROM unnest(p_worker_names[k + 1:k + cardinality(pay)], p_worker_queues[k + 1:k + cardinality(pay)])
                               WITH ORDINALITY AS o (wn, wq, i)),
                    spare AS (
                        SELECT h.s, row_number() OVER (ORDER BY h.o) AS r
                          FROM unnest(held[1:cardinality(pay)]) WITH ORDINALITY AS h (s, o)
                         WHERE NOT EXISTS (SELECT 1 FROM c WHERE c.own = h.s)),
                    need AS (SELECT c.i, row_number() OVER (ORDER BY c.i) AS r FROM c WHERE c.own IS NULL)
                    SELECT coalesce(c.own, sp.s)
                      FROM c LEFT JOIN need AS nd ON nd.i = c.i LEFT JOIN spare AS sp ON sp.r = nd.r
                     ORDER BY c.i);
            END IF;
            k := k + cardinality(pay);
        END IF;
    END LOOP;

    -- Working-on rows: claimed slots 1..k get theirs replaced (updated in
    -- place when present, inserted otherwise); slots that completed and
    -- claimed nothing lose theirs.
    IF k > 0 THEN
        UPDATE working AS w
           SET worker = c.n, queue = c.q, run_at = p_run_at, payload = c.p, claimed_at = now(), cap_slot = c.s
          FROM unnest(p_worker_names[1:k], p_worker_queues[1:k], got_q, got_p, got_s) AS c (n, wq, q, p, s)
         WHERE w.worker_name = c.n AND w.worker_queues = c.wq;
        GET DIAGNOSTICS updated = ROW_COUNT;
        IF updated < k THEN
            -- New rows; a slot listed twice keeps its last claim, as
            -- repeated claims do.
            INSERT INTO working AS w (worker_name, worker_queues, worker, queue, run_at, payload, claimed_at, cap_slot)
            SELECT DISTINCT ON (c.n, c.wq) c.n, c.wq, c.n, c.q, p_run_at, c.p, now(), c.s
              FROM unnest(p_worker_names[1:k], p_worker_queues[1:k], got_q, got_p, got_s)
                   WITH ORDINALITY AS c (n, wq, q, p, s, o)
             ORDER BY c.n, c.wq, c.o DESC
            ON CONFLICT (worker_name, worker_queues) DO UPDATE
               SET worker = EXCLUDED.worker,
                   queue = EXCLUDED.queue,
                   run_at = EXCLUDED.run_at,
                   payload = EXCLUDED.payload,
                   claimed_at = EXCLUDED.claimed_at,
                   cap_slot = EXCLUDED.cap_slot;
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

    -- Outcomes: failed entries in order, then counters (unchanged since
    -- version 4).
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
