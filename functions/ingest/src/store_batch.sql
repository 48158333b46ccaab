-- Stores one batch of one device's readings in one statement (one round trip).
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
    RETURNING 1
)
SELECT (SELECT count(*) FROM stored) AS stored, (SELECT oldest_ms FROM policy) AS oldest_ms
