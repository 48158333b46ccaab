//! Readings, and the bounded buffer they wait in until a flush sends them.
//!
//! A reading is checked when it is made (metric name, a value within ±[`MAX_ABS_VALUE`]), because one bad
//! reading makes the server refuse its whole batch. The buffer holds at most its
//! capacity: a full buffer refuses the reading ([`TelemetryBuffer::try_push`]) or
//! makes the caller wait for room ([`TelemetryBuffer::push`]); it never grows. A
//! flush ([`crate::Device::flush`]) removes a batch only once the server has
//! committed it (or refused it for good), so a device that loses its network keeps
//! its readings.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use thiserror::Error;
use tokio::sync::Notify;

/// The longest metric name the server accepts.
pub const MAX_METRIC_LEN: usize = 128;

/// The largest magnitude of a reading's number the server accepts (its telemetry
/// schema's `minimum`/`maximum`): far beyond any measurement, and small enough that no
/// number of readings can overflow a rollup's sum (docs/aggregation.md).
pub const MAX_ABS_VALUE: f64 = 1e100;

/// A reading that cannot be sent.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ReadingError {
    #[error(
        "metric {0:?} must be one to four dot-separated lowercase identifiers, such as temp_c or motor.rpm"
    )]
    Metric(String),
    #[error("a reading's value must be a finite number from -1e100 to 1e100")]
    ValueOutOfRange,
    #[error("a reading's timestamp must be milliseconds after the Unix epoch")]
    Timestamp,
}

/// A number or a boolean (rollups count `true` as 1).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ReadingValue {
    Bool(bool),
    Number(f64),
}

impl From<f64> for ReadingValue {
    fn from(value: f64) -> Self {
        ReadingValue::Number(value)
    }
}

impl From<bool> for ReadingValue {
    fn from(value: bool) -> Self {
        ReadingValue::Bool(value)
    }
}

impl From<i32> for ReadingValue {
    fn from(value: i32) -> Self {
        ReadingValue::Number(f64::from(value))
    }
}

/// One measurement: a metric, when it was taken (Unix milliseconds) and its value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reading {
    metric: String,
    ts: i64,
    value: ReadingValue,
}

impl Reading {
    /// A reading taken at `ts_ms` (milliseconds since the Unix epoch).
    pub fn new(
        metric: &str,
        ts_ms: i64,
        value: impl Into<ReadingValue>,
    ) -> Result<Reading, ReadingError> {
        if !is_metric(metric) {
            return Err(ReadingError::Metric(metric.to_owned()));
        }
        if ts_ms < 0 {
            return Err(ReadingError::Timestamp);
        }
        let value = value.into();
        if let ReadingValue::Number(n) = value
            && (n.is_nan() || n.abs() > MAX_ABS_VALUE)
        {
            return Err(ReadingError::ValueOutOfRange);
        }
        Ok(Reading {
            metric: metric.to_owned(),
            ts: ts_ms,
            value,
        })
    }

    /// A reading taken now, by the system clock.
    pub fn now(metric: &str, value: impl Into<ReadingValue>) -> Result<Reading, ReadingError> {
        Reading::new(metric, now_ms(), value)
    }

    pub fn metric(&self) -> &str {
        &self.metric
    }

    /// Milliseconds since the Unix epoch.
    pub fn ts_ms(&self) -> i64 {
        self.ts
    }

    pub fn value(&self) -> ReadingValue {
        self.value
    }
}

/// Milliseconds since the Unix epoch by the system clock (0 before 1970).
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// `^[a-z][a-z0-9_]{0,62}(\.[a-z][a-z0-9_]{0,62}){0,3}$`, at most 128 bytes: the
/// server's rule (schemas/json/telemetry-batch.schema.json).
fn is_metric(name: &str) -> bool {
    if name.is_empty() || name.len() > MAX_METRIC_LEN {
        return false;
    }
    let segments: Vec<&str> = name.split('.').collect();
    segments.len() <= 4
        && segments.iter().all(|s| {
            let mut bytes = s.bytes();
            matches!(bytes.next(), Some(b'a'..=b'z'))
                && s.len() <= 63
                && bytes.all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'_'))
        })
}

/// The server's answer to a batch: every reading of it is now stored exactly once,
/// `stored` by this request and `duplicates` already (by an earlier attempt whose
/// answer was lost, or earlier in the same batch).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Receipt {
    pub received: u64,
    pub stored: u64,
    pub duplicates: u64,
    /// Sends it took, 1 when the first one was answered (not part of the server's
    /// answer).
    #[serde(default, skip_serializing)]
    pub attempts: u32,
}

/// What a flush sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FlushReport {
    pub batches: u64,
    pub received: u64,
    pub stored: u64,
    pub duplicates: u64,
    /// Sends beyond the first of each batch.
    pub resends: u64,
}

impl FlushReport {
    pub(crate) fn add(&mut self, receipt: &Receipt) {
        self.batches += 1;
        self.received += receipt.received;
        self.stored += receipt.stored;
        self.duplicates += receipt.duplicates;
        self.resends += u64::from(receipt.attempts.saturating_sub(1));
    }
}

/// The buffer is full: the reading is handed back.
#[derive(Debug, Clone, PartialEq, Error)]
#[error("the telemetry buffer is full ({capacity} readings): flush before pushing more")]
pub struct BufferFull {
    pub reading: Reading,
    pub capacity: usize,
}

/// Readings waiting to be sent, at most `capacity` of them. Shared by reference: one
/// task may push while another flushes.
#[derive(Debug)]
pub struct TelemetryBuffer {
    queue: Mutex<VecDeque<Reading>>,
    capacity: usize,
    room: Notify,
    /// One flush at a time, so that two never send the same front batch.
    pub(crate) flushing: tokio::sync::Mutex<()>,
}

impl TelemetryBuffer {
    /// A buffer for at most `capacity` readings (at least 1).
    pub fn new(capacity: usize) -> TelemetryBuffer {
        let capacity = capacity.max(1);
        TelemetryBuffer {
            // Allocated as it fills: a large bound costs nothing until used.
            queue: Mutex::new(VecDeque::new()),
            capacity,
            room: Notify::new(),
            flushing: tokio::sync::Mutex::new(()),
        }
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }

    /// Adds a reading, or hands it back when the buffer is full.
    pub fn try_push(&self, reading: Reading) -> Result<(), BufferFull> {
        let mut queue = self.lock();
        if queue.len() >= self.capacity {
            return Err(BufferFull {
                reading,
                capacity: self.capacity,
            });
        }
        queue.push_back(reading);
        Ok(())
    }

    /// Adds a reading, waiting while the buffer is full until a flush makes room.
    pub async fn push(&self, mut reading: Reading) {
        loop {
            let room = self.room.notified();
            tokio::pin!(room);
            // Registered before the check, so a flush between the check and the wait
            // still wakes us.
            room.as_mut().enable();
            match self.try_push(reading) {
                Ok(()) => return,
                Err(full) => reading = full.reading,
            }
            room.await;
        }
    }

    /// A copy of the oldest `n` readings, left in place.
    pub(crate) fn front(&self, n: usize) -> Vec<Reading> {
        self.lock().iter().take(n).cloned().collect()
    }

    /// Drops the oldest `n` readings (sent or refused for good) and wakes pushers.
    pub(crate) fn remove_front(&self, n: usize) {
        {
            let mut queue = self.lock();
            let n = n.min(queue.len());
            queue.drain(..n);
        }
        self.room.notify_waiters();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<Reading>> {
        // A panic while holding this lock cannot leave the queue half-changed.
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Duration;

    fn reading(i: i64) -> Reading {
        Reading::new("temp_c", 1_700_000_000_000 + i, i as f64).unwrap()
    }

    #[test]
    fn metric_names_follow_the_server_rule() {
        for good in ["temp_c", "motor.rpm", "door.open", "a", "a.b.c.d", "x9_"] {
            assert!(Reading::new(good, 0, 1.0).is_ok(), "{good}");
        }
        let long_segment = "a".repeat(64);
        for bad in [
            "",
            "Temp",
            "9lives",
            "_x",
            "a..b",
            "a.b.c.d.e",
            "temp-c",
            "temp c",
            ".a",
            "a.",
            long_segment.as_str(),
        ] {
            assert_eq!(
                Reading::new(bad, 0, 1.0),
                Err(ReadingError::Metric(bad.to_owned())),
                "{bad}"
            );
        }
    }

    #[test]
    fn values_must_be_within_1e100_and_times_after_1970() {
        for bad in [
            f64::NAN,
            f64::INFINITY,
            -f64::INFINITY,
            1.0000001e100,
            -f64::MAX,
        ] {
            assert_eq!(
                Reading::new("x", 0, bad),
                Err(ReadingError::ValueOutOfRange),
                "{bad}"
            );
        }
        assert!(Reading::new("x", 0, 1e100).is_ok());
        assert!(Reading::new("x", 0, -1e100).is_ok());
        assert_eq!(Reading::new("x", -1, 1.0), Err(ReadingError::Timestamp));
        assert!(Reading::new("x", 0, true).is_ok());
    }

    #[test]
    fn readings_serialise_as_the_schema_wants() {
        let r = Reading::new("door.open", 1_795_255_200_123, true).unwrap();
        assert_eq!(
            serde_json::to_string(&r).unwrap(),
            r#"{"metric":"door.open","ts":1795255200123,"value":true}"#
        );
        let r = Reading::new("temp_c", 5, 21.5).unwrap();
        assert_eq!(
            serde_json::to_string(&r).unwrap(),
            r#"{"metric":"temp_c","ts":5,"value":21.5}"#
        );
    }

    #[test]
    fn a_full_buffer_refuses_and_hands_the_reading_back() {
        let buffer = TelemetryBuffer::new(3);
        for i in 0..3 {
            buffer.try_push(reading(i)).unwrap();
        }
        let full = buffer.try_push(reading(3)).unwrap_err();
        assert_eq!(full.reading, reading(3));
        assert_eq!(full.capacity, 3);
        assert_eq!(buffer.len(), 3);
        // Room again once the front is gone, and the order is kept.
        buffer.remove_front(2);
        buffer.try_push(reading(3)).unwrap();
        assert_eq!(buffer.front(10), vec![reading(2), reading(3)]);
    }

    #[test]
    fn the_buffer_never_holds_more_than_its_capacity() {
        let buffer = TelemetryBuffer::new(100);
        let refused = (0..10_000)
            .filter(|i| buffer.try_push(reading(*i)).is_err())
            .count();
        assert_eq!(buffer.len(), 100);
        assert_eq!(refused, 9_900);
        assert_eq!(TelemetryBuffer::new(0).capacity(), 1);
    }

    #[test]
    fn front_copies_without_removing() {
        let buffer = TelemetryBuffer::new(10);
        for i in 0..5 {
            buffer.try_push(reading(i)).unwrap();
        }
        assert_eq!(buffer.front(2), vec![reading(0), reading(1)]);
        assert_eq!(buffer.len(), 5);
        buffer.remove_front(99);
        assert!(buffer.is_empty());
    }

    #[tokio::test]
    async fn push_waits_for_room_instead_of_growing() {
        let buffer = Arc::new(TelemetryBuffer::new(2));
        buffer.push(reading(0)).await;
        buffer.push(reading(1)).await;
        let pusher = {
            let buffer = buffer.clone();
            tokio::spawn(async move { buffer.push(reading(2)).await })
        };
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(
            !pusher.is_finished(),
            "push must wait while the buffer is full"
        );
        assert_eq!(buffer.len(), 2);
        buffer.remove_front(1);
        tokio::time::timeout(Duration::from_secs(5), pusher)
            .await
            .expect("push resumes once there is room")
            .unwrap();
        assert_eq!(buffer.front(2), vec![reading(1), reading(2)]);
    }
}
