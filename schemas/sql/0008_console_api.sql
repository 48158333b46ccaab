-- 0008 console API: what the web console (and any API user) reads about a fleet at a
-- glance. Each addition belongs to the component named; every write is one statement.
--
-- 1. devices.last_seen_at (auth reads it, ingest writes it): the UTC minute of the
--    device's latest telemetry batch, for `GET /v1/devices?sort=last_seen` and the
--    fleet summary. See functions/ingest/src/store_batch.sql.
-- 2. ingest_minutes (aggregate reads it, ingest writes it): readings stored per tenant
--    and UTC minute, for the fleet summary's ingest rate. Kept two days.
-- 3. rollout_devices.stage (ota): the rollout's stage index when the device was first
--    offered it, for the per-stage progress of a rollout.
-- 4. An index for the audit log filtered by target (auth).

-- # 1. Last seen
--
-- Set by the ingest statement to date_bin('1 minute', now(), epoch) when it is NULL or
-- at least 60 s old, so at most one devices write per device and minute, and the
-- value is always the minute of the latest batch. The ingest statement skips the
-- write when another transaction holds the row (an admin changing the device): it
-- never waits on the registry, and the next batch writes it.
ALTER TABLE devices ADD COLUMN last_seen_at timestamptz;

-- `GET /v1/devices?sort=last_seen`: most recently seen first, never seen last, ties by
-- id (keyset pagination in that order).
CREATE INDEX devices_by_last_seen
    ON devices (tenant_id, last_seen_at DESC NULLS LAST, device_id);

-- # 2. Readings per minute
--
-- One row per (tenant, UTC minute of receipt, shard): the readings the ingest
-- statement inserted (a resent reading adds nothing). shard = hashtext(device_id) & 15
-- spreads concurrent batches of one tenant over 16 rows, so they seldom wait for one
-- another's row lock. Counts only: erasing a device leaves them.
CREATE TABLE ingest_minutes (
    tenant_id  text        NOT NULL,
    minute     timestamptz NOT NULL,
    shard      int2        NOT NULL CHECK (shard BETWEEN 0 AND 15),
    readings   int8        NOT NULL CHECK (readings >= 1),
    PRIMARY KEY (tenant_id, minute, shard)
) WITH (fillfactor = 70);

COMMENT ON TABLE ingest_minutes IS
    'Readings stored per tenant, UTC minute of receipt and shard; kept current by the ingest statement, 2 days kept.';

-- toaster_retention_run (0004) as it was, and it also deletes ingest_minutes rows
-- older than two days (of the tenant it runs for, or of every tenant).
CREATE OR REPLACE FUNCTION toaster_retention_run(p_tenant text)
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

        DELETE FROM ingest_minutes
        WHERE tenant_id = pol.tenant_id AND minute < now() - interval '2 days';
    END LOOP;
    RETURN NEXT;
END
$$;

-- # 3. The stage a device was offered a rollout at
--
-- Existing rows (offered before this migration) count as stage 0.
ALTER TABLE rollout_devices
    ADD COLUMN stage int2 NOT NULL DEFAULT 0 CHECK (stage BETWEEN 0 AND 19);

-- `GET /v1/ota/devices/{id}/rollouts`: a device's offers, newest first.
CREATE INDEX rollout_devices_history
    ON rollout_devices (tenant_id, device_id, offered_at DESC, rollout_id DESC);
DROP INDEX rollout_devices_by_device;

-- # 4. The audit log of one target (`GET /v1/audit?target=`), newest first.
CREATE INDEX audit_log_by_target ON audit_log (tenant_id, target, seq DESC);
