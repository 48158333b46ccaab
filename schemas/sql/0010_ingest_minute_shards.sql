-- 0010: `ingest_minutes` (0008) spread over 256 shards per tenant and minute instead
-- of 16. The ingest statement holds its shard row's lock until it commits, so batches
-- of a tenant that hash to one shard wait for each other's commit; with 16 shards,
-- 16 devices posting at once collided often enough to cost 13-15% of the component's
-- readings/s at 1-10 readings per batch, and 256 shards gave back about half of that
-- (BENCHMARKS.md, "Readings per minute: what the counter costs ingest"). The fleet
-- summary sums at most 60 x 256 rows per tenant. The number is free to grow: only the
-- CHECK and the ingest statements (`hashtext(device_id) & 255`) name it.
-- (0009 is kept for the single-statement rewrites of issue 27.)
ALTER TABLE ingest_minutes DROP CONSTRAINT ingest_minutes_shard_check;
ALTER TABLE ingest_minutes ADD CONSTRAINT ingest_minutes_shard_check CHECK (shard BETWEEN 0 AND 255);
