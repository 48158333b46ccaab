//! The `ingest` component: `POST /v1/telemetry`, a device's batch of readings.
//!
//! A request goes: device token ([`auth::authenticate`]) → content type (415) → body
//! size (413, variable `max_body_bytes`) → the whole batch validated by
//! [`toaster_core::telemetry::parse_batch`] (400 / 422 naming every bad reading) → one
//! statement storing it ([`store`]) → `200 {"received", "stored", "duplicates"}`, sent
//! only once that statement has committed → the device's last-known values into the
//! key-value store ([`last_known`]).
//!
//! The tenant's retention window lives in PostgreSQL, and the hot path may make one
//! round trip: so the storing statement itself refuses a batch with a reading older
//! than the window, and only then is the batch parsed again against the real window
//! to name those readings in the 422.

// Functions stay under 100 lines (clippy.toml); tests may run longer.
#![cfg_attr(not(test), warn(clippy::too_many_lines))]

mod body;
mod last_known;
mod store;

use serde::Serialize;
use spin_sdk::http::{IncomingRequest, Method, Request, Response, ResponseOutparam};
use spin_sdk::http_component;
use toaster_core::ids::TenantId;
use toaster_core::problem::Problem;
use toaster_core::telemetry::{Batch, BatchError, BatchLimits, parse_batch};
use toaster_core::token::Role;
use toaster_platform::db::Db;
use toaster_platform::{auth, config, respond, router, serve, time};

/// The longest raw retention a tenant may have (`tenant_retention.raw_days`). Parsing
/// first admits anything this recent; the tenant's own window is applied by the
/// storing statement.
const MAX_RETENTION_MS: i64 = 3650 * 86_400_000;

#[http_component]
async fn handle(req: IncomingRequest, out: ResponseOutparam) {
    let response = answer(req).await;
    serve::write(out, &response);
}

async fn answer(req: IncomingRequest) -> Response {
    let uri = req.path_with_query().unwrap_or_default();
    let path = uri.split('?').next().unwrap_or_default().to_owned();
    let method = req.method();
    // The handler is the body's future, polled once routing has chosen it.
    let routed = router::dispatch(&method, &path, |segments, on| match *segments {
        ["v1", "telemetry"] => Some(on.post(|| post_telemetry(req, uri))),
        _ => None,
    });
    match routed {
        Ok(handler) => respond::outcome(handler.await),
        Err(problem) => respond::problem(&problem),
    }
}

/// What the device is told about its batch. `received` = `stored` + `duplicates`:
/// every reading is now stored exactly once, whether by this request or an earlier
/// one, so a device that resends after a lost response can drop the batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
struct Receipt {
    /// Readings in the request.
    received: u64,
    /// Readings this request stored.
    stored: u64,
    /// Readings that were already stored (by an earlier request, or earlier in this
    /// batch with the same metric and timestamp) and were left as they were.
    duplicates: u64,
}

async fn post_telemetry(req: IncomingRequest, uri: String) -> Result<Response, Problem> {
    // The head alone: the token is checked before a byte of the body is read.
    let head = Request::builder()
        .method(Method::Post)
        .uri(uri)
        .headers(req.headers())
        .build();
    let caller = auth::authenticate(&head, &[Role::Device])?;
    let tenant = caller.tenant()?.clone();
    let device = caller.device().cloned().ok_or_else(Problem::forbidden)?;

    let content_type = head.header("content-type").and_then(|v| v.as_str());
    if !content_type.is_some_and(toaster_platform::body::is_json) {
        return Err(Problem::unsupported_media_type("application/json"));
    }
    let limits = Limits::from_variables()?;
    let content_length = head.header("content-length").and_then(|v| v.as_str());
    let bytes = body::read_limited(req, content_length, limits.max_body_bytes).await?;

    let now_ms = time::now_ms();
    let batch = match parse_batch(&bytes, &limits.batch, now_ms, now_ms - MAX_RETENTION_MS) {
        Ok(batch) => batch,
        Err(BatchError::Invalid(errors)) => {
            return Err(refuse_with_retention(
                &bytes, &limits, now_ms, &tenant, errors,
            ));
        }
        Err(malformed) => return Err(malformed.into()),
    };

    let db = Db::open()?;
    let stored = match store::store_batch(&db, &tenant, &device, &batch.readings)? {
        store::Outcome::Stored(stored) => stored,
        store::Outcome::TooOld { oldest_ms } => {
            return Err(invalid_against(&bytes, &limits, now_ms, oldest_ms));
        }
    };
    let receipt = receipt(&batch, stored);
    last_known::record(&tenant, &device, &batch.readings, now_ms);
    Ok(respond::json(200, &receipt))
}

fn receipt(batch: &Batch, stored: u64) -> Receipt {
    let received = (batch.readings.len() + batch.duplicates) as u64;
    Receipt {
        received,
        stored,
        duplicates: received.saturating_sub(stored),
    }
}

/// The 422 for a batch the first pass found invalid. That pass admitted any
/// timestamp within [`MAX_RETENTION_MS`]; readings older than the tenant's own
/// window are named too when the database says where the window starts. If it
/// cannot (storage down), the errors already found still make a correct 422.
fn refuse_with_retention(
    body: &[u8],
    limits: &Limits,
    now_ms: i64,
    tenant: &TenantId,
    errors: Vec<toaster_core::problem::FieldError>,
) -> Problem {
    let readings_checked = errors.iter().any(|e| e.pointer.starts_with("/readings/"));
    if !readings_checked {
        return Problem::unprocessable(errors);
    }
    match Db::open().and_then(|db| store::oldest_ms(&db, tenant)) {
        Ok(oldest_ms) => invalid_against(body, limits, now_ms, oldest_ms),
        Err(_) => Problem::unprocessable(errors),
    }
}

/// Parses `body` again against the tenant's window: the 422 naming every bad reading.
fn invalid_against(body: &[u8], limits: &Limits, now_ms: i64, oldest_ms: i64) -> Problem {
    match parse_batch(body, &limits.batch, now_ms, oldest_ms) {
        Err(error) => error.into(),
        Ok(_) => {
            // The statement compares the same milliseconds against the same bound, so
            // this means the two disagree on the rule: our bug, not the device's.
            eprintln!("ingest: the database refused a batch as too old that parses as recent");
            respond::internal()
        }
    }
}

/// The component's variables.
struct Limits {
    /// `max_body_bytes`: the largest request body, default 1 MiB.
    max_body_bytes: usize,
    /// `max_batch_readings`: the most readings per batch, default 5,000.
    batch: BatchLimits,
}

impl Limits {
    /// spin.toml's defaults for variables the component was not granted; a bad value
    /// is a 500 naming it ([`config::get`]).
    fn from_variables() -> Result<Limits, Problem> {
        Ok(Limits {
            max_body_bytes: config::get("max_body_bytes", toaster_core::config::byte_size)?,
            batch: BatchLimits {
                max_readings: config::get("max_batch_readings", |text| {
                    toaster_core::config::count(text).map(|n| n as usize)
                })?,
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use toaster_core::ids::MetricName;
    use toaster_core::telemetry::{Reading, Value};

    fn batch(unique: usize, duplicates: usize) -> Batch {
        let reading = |i: usize| Reading {
            metric: MetricName::parse("m").unwrap(),
            ts_ms: i as i64,
            value: Value::Number(1.0),
        };
        Batch {
            readings: (0..unique).map(reading).collect(),
            duplicates,
        }
    }

    #[test]
    fn the_receipt_accounts_for_every_reading() {
        assert_eq!(
            receipt(&batch(3, 0), 3),
            Receipt {
                received: 3,
                stored: 3,
                duplicates: 0
            }
        );
        // Resent: nothing new. Two repeats inside the batch count as duplicates too.
        assert_eq!(
            receipt(&batch(3, 2), 0),
            Receipt {
                received: 5,
                stored: 0,
                duplicates: 5
            }
        );
        assert_eq!(
            receipt(&batch(4, 1), 2),
            Receipt {
                received: 5,
                stored: 2,
                duplicates: 3
            }
        );
    }

    #[test]
    fn the_receipt_has_the_documented_names() {
        let json = serde_json::to_value(receipt(&batch(2, 0), 1)).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"received": 2, "stored": 1, "duplicates": 1})
        );
    }

    #[test]
    fn the_retention_bound_is_the_schemas_longest_window() {
        // The bound is read from the migration, so changing either side alone fails.
        let migration = include_str!("../../../schemas/sql/0002_telemetry.sql");
        let (_, rest) = migration
            .split_once("CHECK (raw_days BETWEEN 1 AND ")
            .expect("the raw_days check");
        let max_days: i64 = rest[..rest.find(')').unwrap()].parse().unwrap();
        assert_eq!(MAX_RETENTION_MS, max_days * 86_400_000);
    }
}
