-- resq's tables, version 2: cheaper batch rounds for multi-slot workers.
--
-- Run like 0001, with `search_path` set to the schema. Nothing here changes
-- what is stored or what any operation means; it changes how the batch
-- claim finds its rows and adds one function that records a batch of
-- completions and claims the next batch in the same transaction.

-- Completions update a slot's working-on row and its counter rows in
-- place: with room left on each page, those updates are HOT (no new index
-- entry, one WAL record) and pruning reclaims the dead versions without
-- VACUUM. Applies to pages written from now on.
ALTER TABLE working SET (fillfactor = 50);
ALTER TABLE stats SET (fillfactor = 50);

-- The batch round: records the completions (`p_done_names[k]`,
-- `p_done_queues[k]` with outcome `p_kinds[k]`: 0 success, 1 failure with
-- failed entry `p_entries[k]`, 2 discard), then claims up to one job for
-- each worker slot (`p_worker_names[k]`, `p_worker_queues[k]`) from
-- `p_queues` in priority order and FIFO within a queue, writing each
-- claimed slot's working-on row. Returns the 0-based slot of each claim,
-- for a prefix of the slots. The outcome is exactly that of the
-- completions (one statement of `complete_batch`) followed by
-- `resq_claim_batch`, as one transaction.
--
-- Costs per job: queue heads are located by one index scan per queue and
-- deleted by their `ctid`s (rows locked by the scan cannot move); a slot
-- that completes and claims again has its working-on row updated in place
-- rather than deleted and inserted, and its counter updated in place;
-- inserts happen only for rows that do not exist yet. Row locks are taken
-- in the order every other path takes them: a slot's working-on row
-- first, then the global counters (`failed` before `processed`), then the
-- slots' own counters, which no other worker touches.
CREATE FUNCTION resq_complete_and_claim(
    p_done_names text[], p_done_queues text[], p_kinds smallint[], p_entries text[],
    p_queues text[], p_worker_names text[], p_worker_queues text[], p_run_at text)
RETURNS TABLE (slot integer, claimed_queue text, claimed_payload text)
LANGUAGE plpgsql
SET search_path FROM CURRENT
AS $$
DECLARE
    slots    integer := coalesce(array_length(p_worker_names, 1), 0);
    k        integer := 0;
    q        text;
    got_q    text[] := '{}';
    got_p    text[] := '{}';
    pay      text[];
    n_ok     bigint;
    n_failed bigint;
    updated  bigint;
BEGIN
    -- Claims: the heads of each queue in turn, as many as slots remain.
    FOREACH q IN ARRAY coalesce(p_queues, '{}') LOOP
        EXIT WHEN k >= slots;
        WITH taken AS (
            DELETE FROM jobs AS j
             WHERE j.ctid = ANY (ARRAY(SELECT h.ctid FROM jobs AS h
                                        WHERE h.queue = q
                                        ORDER BY h.id
                                        LIMIT slots - k
                                        FOR UPDATE SKIP LOCKED))
            RETURNING j.id, j.payload
        )
        SELECT array_agg(t.payload ORDER BY t.id) INTO pay FROM taken AS t;
        IF pay IS NOT NULL THEN
            got_p := got_p || pay;
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
        RETURN QUERY SELECT (t.o - 1)::integer, t.q, t.p FROM unnest(got_q, got_p) WITH ORDINALITY AS t (q, p, o);
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
    RETURN QUERY SELECT (t.o - 1)::integer, t.q, t.p FROM unnest(got_q, got_p) WITH ORDINALITY AS t (q, p, o);
END;
$$;

-- The batch claim is the batch round without completions. (Version 1 of
-- this function matched queue heads by `id IN (subquery)`, which the
-- planner could turn into a scan of the whole queue.)
CREATE OR REPLACE FUNCTION resq_claim_batch(p_queues text[], p_worker_names text[], p_worker_queues text[], p_run_at text)
RETURNS TABLE (slot integer, claimed_queue text, claimed_payload text)
LANGUAGE sql
SET search_path FROM CURRENT
AS $$
    SELECT r.slot, r.claimed_queue, r.claimed_payload
      FROM resq_complete_and_claim('{}', '{}', '{}', '{}', p_queues, p_worker_names, p_worker_queues, p_run_at) AS r
$$;
