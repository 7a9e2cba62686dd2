-- resq's tables, version 8: flow control per task class (issue #14).
--
-- Run like 0001, with `search_path` set to the schema. Nothing that exists
-- changes, except that `clean_worker` (a statement in the Rust code) also
-- deletes the worker's `task_slots` row.
--
-- The limits are declared in code on each task and passed with every
-- call; the tables only count. `task_flow` has one row per limited class
-- that ever started a job: `starts` is its rate limit's sliding log, the
-- start times (epoch ms, the server's clock) within the window. An
-- admission locks the class's row for the rest of its transaction (one
-- statement), so the check and the start it admits are one atomic step
-- across every process, and the cap's count of `task_slots` rows is read
-- under that lock too: admissions of one class take turns, one commit at
-- a time. `task_slots` holds, per worker slot, the capped class whose job
-- it runs; a completion deletes it (`release_task_slot`), and so do the
-- slot's next admission and `clean_worker` (a stop, or the stuck-worker
-- sweep of a dead worker).
CREATE TABLE task_flow (
    class  text     PRIMARY KEY,
    starts bigint[] NOT NULL DEFAULT '{}'
);

CREATE TABLE task_slots (
    worker_name   text NOT NULL,
    worker_queues text NOT NULL,
    class         text NOT NULL,
    PRIMARY KEY (worker_name, worker_queues)
);
CREATE INDEX task_slots_class ON task_slots (class);

-- Admits a start of `p_class` on worker slot `p_name`/`p_queues` under a
-- rate limit of `p_max` per `p_period` ms (both NULL: none) and a cap of
-- `p_cap` (NULL: none), after releasing the slot's earlier task slot.
-- Returns -1 when admitted, -2 when the cap is full, else (the rate limit
-- is full) how many ms until the oldest start leaves the window (>= 1).
CREATE FUNCTION resq_acquire_task_start(
    p_class text, p_name text, p_queues text, p_max integer, p_period bigint, p_cap integer)
RETURNS bigint
LANGUAGE plpgsql
SET search_path FROM CURRENT
AS $$
DECLARE
    v_starts  bigint[];
    v_now     bigint;
    v_running bigint;
BEGIN
    DELETE FROM task_slots WHERE worker_name = p_name AND worker_queues = p_queues;
    SELECT f.starts INTO v_starts FROM task_flow AS f WHERE f.class = p_class FOR UPDATE;
    IF NOT FOUND THEN
        INSERT INTO task_flow (class) VALUES (p_class) ON CONFLICT DO NOTHING;
        SELECT f.starts INTO v_starts FROM task_flow AS f WHERE f.class = p_class FOR UPDATE;
    END IF;
    v_now := floor(extract(epoch FROM clock_timestamp()) * 1000)::bigint;
    IF p_max IS NOT NULL THEN
        v_starts := ARRAY(SELECT s.t FROM unnest(v_starts) AS s (t) WHERE s.t > v_now - p_period ORDER BY s.t);
        IF cardinality(v_starts) >= p_max THEN
            UPDATE task_flow SET starts = v_starts WHERE class = p_class;
            RETURN greatest(1, v_starts[1] + p_period - v_now);
        END IF;
    END IF;
    IF p_cap IS NOT NULL THEN
        SELECT count(*) INTO v_running FROM task_slots WHERE class = p_class;
        IF v_running >= p_cap THEN
            RETURN -2;
        END IF;
        INSERT INTO task_slots (worker_name, worker_queues, class) VALUES (p_name, p_queues, p_class)
        ON CONFLICT (worker_name, worker_queues) DO UPDATE SET class = EXCLUDED.class;
    END IF;
    IF p_max IS NOT NULL THEN
        UPDATE task_flow SET starts = v_starts || v_now WHERE class = p_class;
    END IF;
    RETURN -1;
END;
$$;
