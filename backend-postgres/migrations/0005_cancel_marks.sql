-- resq's tables, version 5: cancel requests for running jobs.
--
-- Run like 0001, with `search_path` set to the schema. One row per worker
-- (its `<name>:<queues>` member) whose running job is to stop: the
-- working-on record aimed at (`run_at` and `payload`), kept until the
-- worker acts on it or `expires_ms` (epoch ms) passes. Every request also
-- sends a notification on `<schema>.resq_stop` in the same transaction.
CREATE TABLE cancel_marks (
    worker text PRIMARY KEY,
    run_at text NOT NULL,
    payload text NOT NULL,
    expires_ms bigint NOT NULL
);
