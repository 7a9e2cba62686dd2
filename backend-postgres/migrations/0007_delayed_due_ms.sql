-- resq's tables, version 7: each delayed item's due time in milliseconds.
--
-- Run like 0001, with `search_path` set to the schema. `delayed.due_ms` is
-- when the item falls due (epoch ms). resq writes it with every item it
-- schedules for a time (`schedule_ms`) and promotes the item from that
-- instant, not from its second bucket's. An item written without it (one
-- scheduled for a bucket, or by a process of an older resq during a rolling
-- upgrade) gets its bucket's due time, `ts * 1000 - 500` (saturating at the
-- ends of bigint), from the trigger below; rows already there get the same
-- here. So every row has a due time, and `ts` stays the bucket that the
-- second-bucket operations (the admin views, "run now", removals) use.
-- (Versions 5 and 6 are other features' migrations.)
ALTER TABLE delayed ADD COLUMN due_ms bigint;

CREATE FUNCTION resq_bucket_due_ms(p_ts bigint) RETURNS bigint
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$
    SELECT CASE
        WHEN p_ts > 9223372036854775 THEN 9223372036854775307
        WHEN p_ts < -9223372036854775 THEN -9223372036854775808
        ELSE p_ts * 1000 - 500
    END
$$;

UPDATE delayed SET due_ms = resq_bucket_due_ms(ts);
ALTER TABLE delayed ALTER COLUMN due_ms SET NOT NULL;

CREATE FUNCTION resq_delayed_due_default() RETURNS trigger
LANGUAGE plpgsql
SET search_path FROM CURRENT
AS $$
BEGIN
    NEW.due_ms := resq_bucket_due_ms(NEW.ts);
    RETURN NEW;
END
$$;

CREATE TRIGGER delayed_due_default BEFORE INSERT ON delayed
    FOR EACH ROW WHEN (NEW.due_ms IS NULL) EXECUTE FUNCTION resq_delayed_due_default();

-- Promotion by due time takes the earliest items first.
CREATE INDEX delayed_due ON delayed (due_ms, id);
