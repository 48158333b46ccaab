-- 0004 rollups: 1-minute and 1-hour aggregates of the telemetry, and retention of raw,
-- minute and hour data per tenant. Owned by the `aggregate` component; the rollups are
-- written by the ingest statement (functions/ingest/src/store_batch.sql). The choice
-- and its measurements are in docs/aggregation.md.
--
-- # Rollup tables
--
-- One row per (tenant, device, metric, bucket), bucket = the start of a UTC minute or
-- hour (date_bin from the Unix epoch, so independent of the session's TimeZone):
-- the number of readings, their sum, min and max, and the first and last reading by
-- timestamp. Booleans count as 1 and 0, as in `telemetry.value`.
--
-- They are kept exactly current by the statement that stores a batch: it upserts the
-- rollups from the rows its INSERT actually inserted (RETURNING of ON CONFLICT DO
-- NOTHING), so a resent reading, which inserts nothing, adds nothing, and a late
-- reading lands in its own (old) bucket in the same transaction. Readings are never
-- updated, so count/sum/min/max/first/last only ever merge.
--
-- Not partitioned: a minute row stands for up to 60 k readings of a 1 kHz sensor, and
-- much more often for 1 to 60; retention deletes rows (see toaster_retention_run).
-- fillfactor leaves room on each page so that the upsert's UPDATE stays HOT (no index
-- change: none of the updated columns is indexed).
--
-- The second index serves fleet queries (one tenant, one metric, a time range, every
-- device); device queries use the primary key.

CREATE TABLE rollup_minute (
    tenant_id   text             NOT NULL,
    device_id   text             NOT NULL,
    metric      text             NOT NULL,
    bucket      timestamptz      NOT NULL,
    readings    int8             NOT NULL CHECK (readings >= 1),
    total       double precision NOT NULL,
    low         double precision NOT NULL,
    high        double precision NOT NULL,
    first_ts    timestamptz      NOT NULL,
    first_value double precision NOT NULL,
    last_ts     timestamptz      NOT NULL,
    last_value  double precision NOT NULL,
    PRIMARY KEY (tenant_id, device_id, metric, bucket)
) WITH (fillfactor = 80);

CREATE INDEX rollup_minute_fleet ON rollup_minute (tenant_id, metric, bucket);

CREATE TABLE rollup_hour (LIKE rollup_minute INCLUDING ALL) WITH (fillfactor = 80);

COMMENT ON TABLE rollup_minute IS
    'Telemetry per UTC minute and (tenant, device, metric); kept current by the ingest statement.';
COMMENT ON TABLE rollup_hour IS
    'Telemetry per UTC hour and (tenant, device, metric); kept current by the ingest statement.';

-- # Retention
--
-- Days of raw, minute and hour data per tenant. A tenant without a row keeps 30 days
-- raw (as 0002 decided), 90 days of minutes and 730 days of hours. Finer data is never
-- kept longer than coarser data, so wherever raw readings exist their minute and hour
-- rollups exist too, and a query answers the same from any of them.

ALTER TABLE tenant_retention
    ADD COLUMN minute_days integer NOT NULL DEFAULT 90,
    ADD COLUMN hour_days   integer NOT NULL DEFAULT 730;

UPDATE tenant_retention
SET minute_days = greatest(minute_days, raw_days),
    hour_days = greatest(hour_days, raw_days);

ALTER TABLE tenant_retention
    ADD CONSTRAINT tenant_retention_minute_days CHECK (minute_days BETWEEN 1 AND 3650),
    ADD CONSTRAINT tenant_retention_hour_days CHECK (hour_days BETWEEN 1 AND 3650),
    ADD CONSTRAINT tenant_retention_coarser_lasts_longer
        CHECK (raw_days <= minute_days AND minute_days <= hour_days);

COMMENT ON TABLE tenant_retention IS
    'Retention per tenant in days of raw, minute and hour data; absent means 30/90/730. See toaster_retention_run.';

-- Removes every tenant's data past its retention (p_tenant NULL), or one tenant's.
--
-- - Raw readings: a daily partition telemetry_YYYYMMDD is dropped when the whole day
--   is past the raw retention of EVERY tenant (the longest window decides), whoever
--   runs this: what it removes is past everyone's policy. Otherwise the tenant's rows
--   older than toaster_telemetry_oldest(tenant) are deleted (the same bound ingest
--   refuses readings by).
-- - Rollups: a minute (hour) row is deleted once its whole bucket ends at or before
--   now() minus the tenant's minute_days (hour_days).
--
-- One run at a time (advisory lock); safe to repeat. Dropping a partition takes an
-- ACCESS EXCLUSIVE lock on telemetry for an instant: ingest waits, it does not fail.
CREATE FUNCTION toaster_retention_run(p_tenant text)
RETURNS TABLE (
    tenant_count        int8,
    partitions_dropped  text[],
    raw_rows_deleted    int8,
    minute_rows_deleted int8,
    hour_rows_deleted   int8
)
LANGUAGE plpgsql AS $$
DECLARE
    longest_raw   integer;
    drop_before   date;
    part          text;
    pol        record;
    deleted       int8;
BEGIN
    PERFORM pg_advisory_xact_lock('telemetry'::regclass::oid::integer, 1);
    tenant_count := 0;
    partitions_dropped := '{}';
    raw_rows_deleted := 0;
    minute_rows_deleted := 0;
    hour_rows_deleted := 0;

    SELECT coalesce(max(coalesce(r.raw_days, 30)), 30) INTO longest_raw
    FROM tenants t LEFT JOIN tenant_retention r USING (tenant_id);
    -- Day d covers [d, d + 1); it may go when d + 1 <= now() - longest_raw.
    drop_before := ((now() - make_interval(days => longest_raw)) AT TIME ZONE 'UTC')::date;
    FOR part IN
        SELECT c.relname::text
        FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
        WHERE i.inhparent = 'telemetry'::regclass
          AND c.relname ~ '^telemetry_[0-9]{8}$'
          AND to_date(substr(c.relname, 11), 'YYYYMMDD') < drop_before
        ORDER BY 1
    LOOP
        EXECUTE format('DROP TABLE %I', part);
        partitions_dropped := partitions_dropped || part;
    END LOOP;

    FOR pol IN
        SELECT t.tenant_id,
               coalesce(r.minute_days, 90) AS minute_days,
               coalesce(r.hour_days, 730) AS hour_days
        FROM tenants t LEFT JOIN tenant_retention r USING (tenant_id)
        WHERE p_tenant IS NULL OR t.tenant_id = p_tenant
        ORDER BY t.tenant_id
    LOOP
        tenant_count := tenant_count + 1;
        DELETE FROM telemetry
        WHERE tenant_id = pol.tenant_id AND ts < toaster_telemetry_oldest(pol.tenant_id);
        GET DIAGNOSTICS deleted = ROW_COUNT;
        raw_rows_deleted := raw_rows_deleted + deleted;

        DELETE FROM rollup_minute
        WHERE tenant_id = pol.tenant_id
          AND bucket <= now() - make_interval(days => pol.minute_days) - interval '1 minute';
        GET DIAGNOSTICS deleted = ROW_COUNT;
        minute_rows_deleted := minute_rows_deleted + deleted;

        DELETE FROM rollup_hour
        WHERE tenant_id = pol.tenant_id
          AND bucket <= now() - make_interval(days => pol.hour_days) - interval '1 hour';
        GET DIAGNOSTICS deleted = ROW_COUNT;
        hour_rows_deleted := hour_rows_deleted + deleted;
    END LOOP;
    RETURN NEXT;
END
$$;
