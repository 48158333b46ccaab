-- Stores a batch of exactly one reading: store_batch.sql without its GROUP BY. With
-- one row there is nothing to aggregate, and the sorts and ordered aggregates that
-- fold a batch into its buckets were most of the statement's cost (measured with
-- pgbench, docs/aggregation.md). Same parameters, same result, same rules: the row
-- and its two rollup rows are written, or (older than the tenant's retention, or
-- already stored) nothing is. The fleet-view writes (`ingest_minutes`,
-- `devices.last_seen_at`) are store_batch.sql's.
--
-- $1 tenant_id, $2 device_id, $3 metric (text[1]), $4 ts in Unix ms (int8[1]),
-- $5 value (text[1]: a float8 literal, or 'true' / 'false').
WITH policy AS (
    SELECT floor(extract(epoch FROM toaster_telemetry_oldest($1)) * 1000)::int8 AS oldest_ms
),
stored AS (
    INSERT INTO telemetry (tenant_id, device_id, metric, ts, value, value_is_bool)
    SELECT $1, $2, ($3::text[])[1], timestamptz 'epoch' + ($4::int8[])[1] * interval '1 millisecond',
           CASE ($5::text[])[1] WHEN 'true' THEN 1 WHEN 'false' THEN 0
                ELSE (($5::text[])[1])::float8 END,
           ($5::text[])[1] IN ('true', 'false')
    WHERE ($4::int8[])[1] >= (SELECT oldest_ms FROM policy)
    ON CONFLICT DO NOTHING
    RETURNING metric, ts, value
),
minute_rollup AS (
    INSERT INTO rollup_minute AS o (tenant_id, device_id, metric, bucket, readings, total, low,
                                    high, first_ts, first_value, last_ts, last_value)
    SELECT $1, $2, metric, date_bin(interval '1 minute', ts, timestamptz 'epoch'), 1, value,
           value, value, ts, value, ts, value
    FROM stored
    ON CONFLICT (tenant_id, device_id, metric, bucket) DO UPDATE SET
        readings = o.readings + 1,
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
    SELECT $1, $2, metric, date_bin(interval '1 hour', ts, timestamptz 'epoch'), 1, value,
           value, value, ts, value, ts, value
    FROM stored
    ON CONFLICT (tenant_id, device_id, metric, bucket) DO UPDATE SET
        readings = o.readings + 1,
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
          AND ($4::int8[])[1] >= (SELECT oldest_ms FROM policy)
        FOR NO KEY UPDATE SKIP LOCKED
      )
),
ingest_minute AS (
    INSERT INTO ingest_minutes AS o (tenant_id, minute, shard, readings)
    SELECT $1, (SELECT minute FROM receipt), (hashtext($2) & 255)::int2, 1
    FROM stored
    ON CONFLICT (tenant_id, minute, shard) DO UPDATE SET readings = o.readings + 1
)
SELECT (SELECT count(*) FROM stored) AS stored, (SELECT oldest_ms FROM policy) AS oldest_ms
