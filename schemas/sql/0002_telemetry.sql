-- 0002 telemetry: raw readings, partitioned by day, and each tenant's raw retention.
--
-- # The table
--
-- One row per reading, keyed (tenant_id, device_id, metric, ts): a batch a device
-- retries after a lost response is written with ON CONFLICT DO NOTHING and stores
-- nothing twice (the first copy of a reading wins). The key also serves the
-- aggregation queries, which ask for one tenant's device and metric over a time range.
--
-- `value` is a double precision; a boolean reading is stored as 1 or 0 with
-- `value_is_bool` set, so that rollups average a door sensor into "fraction of time
-- open" while raw queries can still give back `true`/`false`.
--
-- There is deliberately no foreign key to devices: the ingest component has already
-- checked the device's token (and its status through the key-value store), and a
-- per-row RI check would cost the hot path a lookup per reading. Telemetry of a
-- deleted device leaves with its partitions, or with an explicit erasure.
--
-- # Partitioning
--
-- Native range partitioning on `ts`, one partition per UTC day, named
-- `telemetry_YYYYMMDD` and bounded [day 00:00Z, next day 00:00Z). Old data leaves by
-- dropping whole partitions (instant, no vacuum debt); queries over a time range only
-- touch the days they name.
--
-- Days: a partition is small enough to drop at the granularity retention is counted in
-- (days), and a 30-day window is ~37 partitions, a 1-year one ~370, both well within
-- what the planner prunes cheaply. Ingest opens only the partitions a batch touches.
--
-- There is no DEFAULT partition on purpose: rows in a default partition would have to be
-- moved out (under a lock, with a scan) before the day's real partition could be created,
-- and dropping "old data" could not be done by DROP TABLE.
--
-- Partitions are created ahead, and on demand, by toaster_ensure_telemetry_partitions:
--
-- - this migration creates yesterday through 7 days ahead;
-- - when an INSERT finds no partition for a row, PostgreSQL raises SQLSTATE 23514
--   ("no partition of relation ... found for row"); the ingest component then calls
--   toaster_ensure_telemetry_partitions(batch's oldest ts, batch's newest ts), which
--   creates the missing days of that range and of today through 7 days ahead, and
--   retries the insert once. So the first batch of a new week (or a backfill into a day
--   that has no partition yet) pays three round trips; every other batch pays one.
--
-- This needs no background job, which matters on Spin (and SpinKube, Fermyon Cloud):
-- components only run when a request comes in. A maintenance routine (cron, `toaster`
-- command) may call the same function to keep ahead; it is idempotent and serialised
-- by an advisory lock, so concurrent callers never race on CREATE TABLE.
--
-- # Retention (the retention issue builds on this)
--
-- tenant_retention holds each tenant's raw retention in days; a tenant without a row
-- gets 30 days. Ingest refuses readings older than the window (422), so it never
-- creates a partition retention would drop. Partitions are shared by all tenants:
-- dropping telemetry_YYYYMMDD is possible once the day is older than the LONGEST
-- retention of any tenant; tenants with a shorter window need their rows of younger
-- partitions deleted (or hidden by queries) until then. toaster_telemetry_oldest(tenant)
-- is the one place the window is computed.

CREATE TABLE tenant_retention (
    tenant_id text PRIMARY KEY REFERENCES tenants (tenant_id) ON DELETE CASCADE,
    raw_days  integer NOT NULL CHECK (raw_days BETWEEN 1 AND 3650)
);

COMMENT ON TABLE tenant_retention IS
    'Raw telemetry retention per tenant; absent means 30 days. See toaster_telemetry_oldest.';

-- The oldest instant a tenant's readings may have: now() minus its raw retention.
-- PL/pgSQL rather than SQL: a SQL function with a sub-select is not inlined and is
-- re-planned on every call, which measured as doubling the cost of a one-reading
-- ingest statement; PL/pgSQL keeps its plan for the session.
CREATE FUNCTION toaster_telemetry_oldest(p_tenant text) RETURNS timestamptz
LANGUAGE plpgsql STABLE PARALLEL SAFE AS $$
BEGIN
    RETURN now() - make_interval(days => coalesce(
        (SELECT raw_days FROM tenant_retention WHERE tenant_id = p_tenant), 30));
END
$$;

CREATE TABLE telemetry (
    tenant_id     text             NOT NULL,
    device_id     text             NOT NULL,
    metric        text             NOT NULL,
    ts            timestamptz      NOT NULL,
    value         double precision NOT NULL,
    value_is_bool boolean          NOT NULL,
    PRIMARY KEY (tenant_id, device_id, metric, ts)
) PARTITION BY RANGE (ts);

COMMENT ON TABLE telemetry IS
    'Raw readings; one partition per UTC day (telemetry_YYYYMMDD), created by toaster_ensure_telemetry_partitions.';

-- Creates the daily partitions of the days [from_ts, to_ts] touch, and of today
-- through 7 days ahead, skipping those that exist. Returns how many it created. Safe
-- to call concurrently and repeatedly.
CREATE FUNCTION toaster_ensure_telemetry_partitions(from_ts timestamptz, to_ts timestamptz)
RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    first_day date;
    last_day  date;
    today     date := (now() AT TIME ZONE 'UTC')::date;
    day       date;
    part      text;
    created   integer := 0;
BEGIN
    IF from_ts IS NULL OR to_ts IS NULL OR to_ts < from_ts THEN
        RAISE EXCEPTION 'toaster_ensure_telemetry_partitions: invalid range % .. %', from_ts, to_ts
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    first_day := (from_ts AT TIME ZONE 'UTC')::date;
    last_day := (to_ts AT TIME ZONE 'UTC')::date;
    -- Ingest asks for the days of one batch, inside a retention window of at most
    -- 3650 days; anything wider is a mistake, not a request for thousands of tables.
    IF last_day - first_day > 3660 THEN
        RAISE EXCEPTION 'toaster_ensure_telemetry_partitions: range of % days is too wide',
            last_day - first_day
            USING ERRCODE = 'invalid_parameter_value';
    END IF;

    -- One creator at a time: the second caller waits, then finds the partitions there.
    PERFORM pg_advisory_xact_lock('telemetry'::regclass::oid::integer, 0);

    FOR day IN
        SELECT generate_series(first_day, last_day, interval '1 day')::date
        UNION
        SELECT generate_series(today, today + 7, interval '1 day')::date
        ORDER BY 1
    LOOP
        part := 'telemetry_' || to_char(day, 'YYYYMMDD');
        IF to_regclass(quote_ident(part)) IS NULL THEN
            BEGIN
                EXECUTE format(
                    'CREATE TABLE %I PARTITION OF telemetry FOR VALUES FROM (%L) TO (%L)',
                    part,
                    day::timestamp AT TIME ZONE 'UTC',
                    (day + 1)::timestamp AT TIME ZONE 'UTC');
                created := created + 1;
            EXCEPTION WHEN invalid_object_definition THEN
                -- Overlaps a partition made by hand under another name (say a week):
                -- that one already takes the day's rows.
                NULL;
            END;
        END IF;
    END LOOP;
    RETURN created;
END
$$;

SELECT toaster_ensure_telemetry_partitions(now() - interval '1 day', now());
