-- resq's tables, version 3: queues paused cluster-wide.
--
-- Run like 0001, with `search_path` set to the schema. A queue named here
-- is skipped by every resq worker; its jobs stay in `jobs`. A name may be
-- paused before any job of its queue exists.
CREATE TABLE paused_queues (
    name text PRIMARY KEY
);
