//! A device's last-known values and last-seen time, kept in the key-value store
//! under `last:{tenant}:{device}` ([`toaster_platform::kv::LastKnown`]) for
//! `GET /v1/devices/{id}`.
//!
//! Written after the batch is committed, best effort: the readings are safe in
//! PostgreSQL, and everything here can be rebuilt from them, so a store failure is
//! logged and the device still gets its 200. The read-modify-write is not atomic;
//! two concurrent batches of one device may lose one's update of a metric until that
//! metric's next reading.

use std::collections::BTreeMap;

use toaster_core::ids::{DeviceId, TenantId};
use toaster_core::telemetry::Reading;
use toaster_platform::kv::{self, LastKnown, LastReading};

/// Metrics kept per device. A device inventing new metric names in every batch must
/// not grow its entry without bound; the most recently read ones are kept.
pub const MAX_METRICS: usize = 256;

/// Merges the batch into the device's entry.
pub fn record(tenant: &TenantId, device: &DeviceId, readings: &[Reading], now_ms: i64) {
    let key = kv::last_key(tenant, device);
    let result = kv::open().and_then(|store| {
        let mut last = kv::get_json::<LastKnown>(&store, &key)?.unwrap_or_default();
        merge(&mut last, readings, now_ms);
        kv::set_json(&store, &key, &last)
    });
    if let Err(e) = result {
        eprintln!("ingest: cannot update {key}: {}", kv::describe(&e));
    }
}

/// `last_seen_ms` becomes the server's time of this batch (a device's clock may be
/// off, and a backfill of old readings is still contact); each metric keeps its
/// newest reading, and of two with the same timestamp the one stored first, as
/// PostgreSQL does.
pub fn merge(last: &mut LastKnown, readings: &[Reading], now_ms: i64) {
    last.last_seen_ms = last.last_seen_ms.max(now_ms);
    for reading in readings {
        let newer = LastReading {
            ts_ms: reading.ts_ms,
            value: reading.value.into(),
        };
        last.metrics
            .entry(reading.metric.as_str().to_owned())
            .and_modify(|current| {
                if newer.ts_ms > current.ts_ms {
                    *current = newer;
                }
            })
            .or_insert(newer);
    }
    if last.metrics.len() > MAX_METRICS {
        let mut by_age: Vec<(i64, String)> = last
            .metrics
            .iter()
            .map(|(name, reading)| (reading.ts_ms, name.clone()))
            .collect();
        by_age.sort_unstable_by(|a, b| b.cmp(a));
        let keep: BTreeMap<String, LastReading> = by_age
            .into_iter()
            .take(MAX_METRICS)
            .filter_map(|(_, name)| last.metrics.remove_entry(&name))
            .collect();
        last.metrics = keep;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use toaster_core::ids::MetricName;
    use toaster_core::telemetry::Value;
    use toaster_platform::kv::LastValue;

    fn reading(metric: &str, ts_ms: i64, value: Value) -> Reading {
        Reading {
            metric: MetricName::parse(metric).unwrap(),
            ts_ms,
            value,
        }
    }

    #[test]
    fn each_metric_keeps_its_newest_reading() {
        let mut last = LastKnown::default();
        merge(
            &mut last,
            &[
                reading("temp_c", 2_000, Value::Number(21.5)),
                reading("temp_c", 1_000, Value::Number(20.0)),
                reading("door.open", 1_500, Value::Bool(true)),
            ],
            10_000,
        );
        assert_eq!(last.last_seen_ms, 10_000);
        assert_eq!(last.metrics["temp_c"].ts_ms, 2_000);
        assert_eq!(last.metrics["temp_c"].value, LastValue::Number(21.5));
        assert_eq!(last.metrics["door.open"].value, LastValue::Bool(true));

        // A later batch with an older reading (a backfill) changes nothing but
        // last-seen; a same-timestamp resend keeps the first value.
        merge(
            &mut last,
            &[
                reading("temp_c", 1_999, Value::Number(0.0)),
                reading("door.open", 1_500, Value::Bool(false)),
            ],
            20_000,
        );
        assert_eq!(last.last_seen_ms, 20_000);
        assert_eq!(last.metrics["temp_c"].value, LastValue::Number(21.5));
        assert_eq!(last.metrics["door.open"].value, LastValue::Bool(true));

        // A request handled late (a slower replica) does not move last-seen back.
        merge(&mut last, &[], 15_000);
        assert_eq!(last.last_seen_ms, 20_000);
    }

    #[test]
    fn the_entry_is_bounded_to_the_newest_metrics() {
        let mut last = LastKnown::default();
        let readings: Vec<Reading> = (0..MAX_METRICS as i64 + 10)
            .map(|i| reading(&format!("m{i}"), i, Value::Number(1.0)))
            .collect();
        merge(&mut last, &readings, 0);
        assert_eq!(last.metrics.len(), MAX_METRICS);
        assert!(!last.metrics.contains_key("m0"));
        assert!(last.metrics.contains_key(&format!("m{}", MAX_METRICS + 9)));
    }
}
