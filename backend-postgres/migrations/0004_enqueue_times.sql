-- resq's tables, version 4: each job's enqueue time, for queue latency.
--
-- Run like 0001, with `search_path` set to the schema. `jobs.enqueued_ms`
-- is when the row was written (epoch ms, the server's clock), filled by the
-- column default on every path that puts a job on a queue (push, batch,
-- push to the head, retry, promotion), so no statement changes. Rows queued
-- before this migration keep NULL: their enqueue time is unknown. Adding a
-- nullable column without a default first, then setting the default,
-- rewrites no existing row.
ALTER TABLE jobs ADD COLUMN enqueued_ms bigint;
ALTER TABLE jobs ALTER COLUMN enqueued_ms SET DEFAULT (floor(extract(epoch FROM clock_timestamp()) * 1000))::bigint;

-- The claim functions also return the claimed job's enqueue time (one more
-- output column; callers that select the old columns by name are not
-- affected). A function's result type cannot be changed in place: drop and
-- create again, in this same transaction, so no caller sees them missing.
DROP FUNCTION resq_claim_batch(text[], text[], text[], text);
DROP FUNCTION resq_complete_and_claim(text[], text[], smallint[], text[], text[], text[], text[], text);
DROP FUNCTION resq_claim(text[], text, text, text);

CREATE FUNCTION resq_claim(p_queues text[], p_worker_name text, p_worker_queues text, p_run_at text)
RETURNS TABLE (claimed_queue text, claimed_payload text, claimed_enqueued_ms bigint)
LANGUAGE plpgsql
SET search_path FROM CURRENT
AS $$
DECLARE
    q   text;
    got text;
    at  bigint;
BEGIN
    FOREACH q IN ARRAY p_queues LOOP
        DELETE FROM jobs AS j
         WHERE j.queue = q
           AND j.id = (SELECT h.id FROM jobs AS h
                        WHERE h.queue = q
                        ORDER BY h.id
                        LIMIT 1
                        FOR UPDATE SKIP LOCKED)
        RETURNING j.payload, j.enqueued_ms INTO got, at;
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
            claimed_enqueued_ms := at;
            RETURN NEXT;
            RETURN;
        END IF;
    END LOOP;
END;
$$;

CREATE FUNCTION resq_complete_and_claim(
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
            RETURNING j.id, j.payload, j.enqueued_ms
        )
        SELECT array_agg(t.payload ORDER BY t.id), array_agg(t.enqueued_ms ORDER BY t.id)
          INTO pay, tms FROM taken AS t;
        IF pay IS NOT NULL THEN
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

CREATE FUNCTION resq_claim_batch(p_queues text[], p_worker_names text[], p_worker_queues text[], p_run_at text)
RETURNS TABLE (slot integer, claimed_queue text, claimed_payload text, claimed_enqueued_ms bigint)
LANGUAGE sql
SET search_path FROM CURRENT
AS $$
    SELECT r.slot, r.claimed_queue, r.claimed_payload, r.claimed_enqueued_ms
      FROM resq_complete_and_claim('{}', '{}', '{}', '{}', p_queues, p_worker_names, p_worker_queues, p_run_at) AS r
$$;
