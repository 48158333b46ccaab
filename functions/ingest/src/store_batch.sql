-- Stores one batch of one device's readings in one statement (one round trip), and
-- folds the readings it stored into the 1-minute and 1-hour rollups.
--
-- $1 tenant_id, $2 device_id, and three arrays of equal length, one element per
-- reading: $3 metric (text[]), $4 ts in Unix milliseconds (int8[]), $5 value (text[]:
-- a float8 literal, or 'true' / 'false'). The interface has no float or boolean array
-- parameter; a double written with its shortest round-trip digits reads back exactly.
--
-- Returns `stored`, the rows inserted (the rest of the batch was already there), and
-- `oldest_ms`, the start of the tenant's retention window. If any reading is older
-- than that, nothing is written (`stored` is 0) and the caller answers 422.
-- A row outside every partition raises SQLSTATE 23514: see 0002_telemetry.sql.
--
-- Rollups (0004_rollups.sql) are built from `stored`, the rows the INSERT actually
-- inserted: a resent reading inserts nothing and so adds nothing, and a late one
-- lands in its own bucket. Buckets are UTC minutes and hours (date_bin from the
-- epoch). Upserts go in key order, so two batches of one device touching the same
-- buckets wait for each other instead of deadlocking. Data-modifying CTEs always run
-- to completion, whether or not the final SELECT reads them.
--
-- Two more writes for the fleet view (0008_console_api.sql):
-- - `ingest_minutes`: the number of rows inserted is added to the tenant's row for the
--   UTC minute of receipt (now(), date_bin from the epoch) and the device's shard
--   (hashtext(device_id) & 255, 0010_ingest_minute_shards.sql); nothing when nothing was inserted;
-- - `devices.last_seen_at`: set to the minute of receipt when it is NULL or at least
--   60 s old (so most batches write nothing there), for any batch within the
--   retention window, resent or not. The row is locked with SKIP LOCKED: when another
--   transaction holds it (an admin changing the device, a concurrent batch of the
--   device doing this same write) the write is skipped rather than waited for.
WITH policy AS (
    SELECT floor(extract(epoch FROM toaster_telemetry_oldest($1)) * 1000)::int8 AS oldest_ms
),
stored AS (
    INSERT INTO telemetry (tenant_id, device_id, metric, ts, value, value_is_bool)
    SELECT $1, $2, r.metric, timestamptz 'epoch' + r.ts_ms * interval '1 millisecond',
           CASE r.value WHEN 'true' THEN 1 WHEN 'false' THEN 0 ELSE r.value::float8 END,
           r.value IN ('true', 'false')
    FROM unnest($3::text[], $4::int8[], $5::text[]) AS r(metric, ts_ms, value)
    WHERE (SELECT min(t) FROM unnest($4::int8[]) AS t) >= (SELECT oldest_ms FROM policy)
    ON CONFLICT DO NOTHING
    RETURNING metric, ts, value
),
minutes AS (
    SELECT metric, date_bin(interval '1 minute', ts, timestamptz 'epoch') AS bucket,
           count(*) AS readings, sum(value) AS total, min(value) AS low, max(value) AS high,
           min(ts) AS first_ts, (array_agg(value ORDER BY ts))[1] AS first_value,
           max(ts) AS last_ts, (array_agg(value ORDER BY ts DESC))[1] AS last_value
    FROM stored
    GROUP BY 1, 2
),
hours AS (
    SELECT metric, date_bin(interval '1 hour', bucket, timestamptz 'epoch') AS bucket,
           sum(readings)::int8 AS readings, sum(total) AS total, min(low) AS low,
           max(high) AS high,
           min(first_ts) AS first_ts, (array_agg(first_value ORDER BY first_ts))[1] AS first_value,
           max(last_ts) AS last_ts, (array_agg(last_value ORDER BY last_ts DESC))[1] AS last_value
    FROM minutes
    GROUP BY 1, 2
),
minute_rollup AS (
    INSERT INTO rollup_minute AS o (tenant_id, device_id, metric, bucket, readings, total, low,
                                    high, first_ts, first_value, last_ts, last_value)
    SELECT $1, $2, metric, bucket, readings, total, low, high, first_ts, first_value, last_ts,
           last_value
    FROM minutes
    ORDER BY metric, bucket
    ON CONFLICT (tenant_id, device_id, metric, bucket) DO UPDATE SET
        readings = o.readings + excluded.readings,
        total = o.total + excluded.total,
        low = least(o.low, excluded.low),
        high = greatest(o.high, excluded.high),
        first_ts = least(o.first_ts, excluded.first_ts),
        first_value = CASE WHEN excluded.first_ts < o.first_ts
                           THEN excluded.first_value ELSE o.first_value END,
        last_ts = greatest(o.last_ts, excluded.last_ts),
        last_value = CASE WHEN excluded.last_ts > o.last_ts
                          THEN excluded.last_value ELSE o.last_value END
),
hour_rollup AS (
    INSERT INTO rollup_hour AS o (tenant_id, device_id, metric, bucket, readings, total, low,
                                  high, first_ts, first_value, last_ts, last_value)
    SELECT $1, $2, metric, bucket, readings, total, low, high, first_ts, first_value, last_ts,
           last_value
    FROM hours
    ORDER BY metric, bucket
    ON CONFLICT (tenant_id, device_id, metric, bucket) DO UPDATE SET
        readings = o.readings + excluded.readings,
        total = o.total + excluded.total,
        low = least(o.low, excluded.low),
        high = greatest(o.high, excluded.high),
        first_ts = least(o.first_ts, excluded.first_ts),
        first_value = CASE WHEN excluded.first_ts < o.first_ts
                           THEN excluded.first_value ELSE o.first_value END,
        last_ts = greatest(o.last_ts, excluded.last_ts),
        last_value = CASE WHEN excluded.last_ts > o.last_ts
                          THEN excluded.last_value ELSE o.last_value END
),
receipt AS (
    SELECT date_bin(interval '1 minute', now(), timestamptz 'epoch') AS minute
),
seen AS (
    UPDATE devices AS d SET last_seen_at = (SELECT minute FROM receipt)
    WHERE d.tenant_id = $1 AND d.device_id = $2
      AND d.device_id IN (
        SELECT device_id FROM devices
        WHERE tenant_id = $1 AND device_id = $2
          AND (last_seen_at IS NULL OR last_seen_at <= now() - interval '60 seconds')
          AND (SELECT min(t) FROM unnest($4::int8[]) AS t) >= (SELECT oldest_ms FROM policy)
        FOR NO KEY UPDATE SKIP LOCKED
      )
),
ingest_minute AS (
    INSERT INTO ingest_minutes AS o (tenant_id, minute, shard, readings)
    SELECT $1, (SELECT minute FROM receipt), (hashtext($2) & 255)::int2, count(*)
    FROM stored
    HAVING count(*) > 0
    ON CONFLICT (tenant_id, minute, shard) DO UPDATE SET readings = o.readings + excluded.readings
)
SELECT (SELECT count(*) FROM stored) AS stored, (SELECT oldest_ms FROM policy) AS oldest_ms
