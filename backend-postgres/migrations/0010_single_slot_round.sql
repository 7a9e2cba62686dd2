-- resq's tables, version 10: a cheaper round for a single-slot worker
-- (issue #17).
--
-- Run like 0001, with `search_path` set to the schema. No table changes.
--
-- A single-slot worker's every job is one call of
-- `resq_complete_and_claim` (version 9) with one-element arrays: its
-- outcome, then a claim. That function serves any number of slots, and
-- for one slot it ran about twelve statements (the batch claim's arrays,
-- the working-on rows' update then insert check, the EXCEPT that finds
-- finished slots that claimed nothing, a failed-entry insert over the
-- outcomes, the counters' count, global upsert, per-worker update and
-- insert check) and cost about twice the server time of the statements
-- one job needs (measured with pgbench on one connection:
-- 0.64-0.69 ms a call against 0.31-0.42 ms for this function, with
-- `synchronous_commit` off so the WAL flush, the same for both, does not
-- hide it).
--
-- `resq_complete_and_claim_one` is that round for one slot that records
-- its own outcome and claims again, with scalar arguments and only the
-- statements one job needs: the head of the first non-empty queue in
-- priority order (`FOR UPDATE SKIP LOCKED`, one probe of `jobs (queue,
-- id)` per queue, as before), the worker's working-on row updated in place
-- (inserted the first time; deleted when nothing was claimed), the failed
-- entry of a failure, and both counters in one upsert, the global one
-- first (the lock order of every completion). It writes exactly what
-- `resq_complete_and_claim` writes for the same call, in the same order,
-- in one transaction. When a queue it claims from has flow-control limits,
-- or the finished worker is not the claiming one, it hands the call to
-- `resq_complete_and_claim`, so limits are checked in one place only.
CREATE FUNCTION resq_complete_and_claim_one(
    p_done_name text, p_done_queues text, p_kind smallint, p_entry text,
    p_queues text[], p_worker_name text, p_worker_queues text, p_run_at text)
RETURNS TABLE (slot integer, claimed_queue text, claimed_payload text, claimed_enqueued_ms bigint)
LANGUAGE plpgsql
SET search_path FROM CURRENT
AS $$
DECLARE
    q   text;
    got text;
    at  bigint;
BEGIN
    IF p_done_name IS DISTINCT FROM p_worker_name OR p_done_queues IS DISTINCT FROM p_worker_queues
       OR EXISTS (SELECT 1 FROM queue_limits AS l WHERE l.queue = ANY (p_queues)) THEN
        RETURN QUERY SELECT c.slot, c.claimed_queue, c.claimed_payload, c.claimed_enqueued_ms
          FROM resq_complete_and_claim(ARRAY[p_done_name], ARRAY[p_done_queues], ARRAY[p_kind], ARRAY[p_entry],
                                       p_queues, ARRAY[p_worker_name], ARRAY[p_worker_queues], p_run_at) AS c;
        RETURN;
    END IF;
    FOREACH q IN ARRAY coalesce(p_queues, '{}') LOOP
        DELETE FROM jobs AS j
         WHERE j.ctid = (SELECT h.ctid FROM jobs AS h
                          WHERE h.queue = q
                          ORDER BY h.id
                          LIMIT 1
                          FOR UPDATE SKIP LOCKED)
        RETURNING j.payload, j.enqueued_ms INTO got, at;
        EXIT WHEN FOUND;
    END LOOP;
    IF got IS NOT NULL THEN
        UPDATE working AS w
           SET worker = p_worker_name, queue = q, run_at = p_run_at, payload = got, claimed_at = now(),
               cap_slot = NULL
         WHERE w.worker_name = p_worker_name AND w.worker_queues = p_worker_queues;
        IF NOT FOUND THEN
            INSERT INTO working AS w (worker_name, worker_queues, worker, queue, run_at, payload, claimed_at, cap_slot)
            VALUES (p_worker_name, p_worker_queues, p_worker_name, q, p_run_at, got, now(), NULL)
            ON CONFLICT (worker_name, worker_queues) DO UPDATE
               SET worker = EXCLUDED.worker,
                   queue = EXCLUDED.queue,
                   run_at = EXCLUDED.run_at,
                   payload = EXCLUDED.payload,
                   claimed_at = EXCLUDED.claimed_at,
                   cap_slot = EXCLUDED.cap_slot;
        END IF;
    ELSE
        DELETE FROM working AS w WHERE w.worker_name = p_done_name AND w.worker_queues = p_done_queues;
    END IF;
    IF p_kind = 1 THEN
        INSERT INTO failed (entry) VALUES (p_entry);
    END IF;
    IF p_kind = 0 OR p_kind = 1 THEN
        -- 'failed' < 'failed:<name>' and 'processed' < 'processed:<name>':
        -- rows are written in this order.
        INSERT INTO stats AS st (key, value)
        VALUES (CASE p_kind WHEN 0 THEN 'processed' ELSE 'failed' END, 1),
               (CASE p_kind WHEN 0 THEN 'processed:' ELSE 'failed:' END || p_done_name, 1)
        ON CONFLICT (key) DO UPDATE SET value = LEAST(st.value, 9223372036854775806) + 1;
    END IF;
    IF got IS NOT NULL THEN
        slot := 0;
        claimed_queue := q;
        claimed_payload := got;
        claimed_enqueued_ms := at;
        RETURN NEXT;
    END IF;
END;
$$;
