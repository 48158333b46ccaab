//! A device's OTA history, `GET /v1/ota/devices/{device_id}/rollouts` (admin): every
//! rollout the device was offered, newest offer first, with its progress. A device the
//! tenant does not have (unknown, or another tenant's) is 404, as everywhere else; a
//! device never offered anything has an empty list.
//!
//! One statement: the device row, left-joined with one page of its offers, so that a
//! known device without offers still answers a row. Pages by keyset on
//! (`offered_at`, `rollout_id`), both descending; the cursor is opaque
//! ([`query::encode_cursor`]).

use serde::Serialize;
use spin_sdk::http::{Request, Response};
use toaster_core::ids::DeviceId;
use toaster_core::problem::Problem;
use toaster_core::token::Role;
use toaster_platform::db::{self, Db};
use toaster_platform::query::{self, Query};
use toaster_platform::router::path_segment;
use toaster_platform::{auth, respond, time};

use crate::error::OtaError;

/// The list name in this list's cursors; the key is `<offered_at in µs>/<rollout id>`.
const HISTORY_CURSOR: &str = "ota.device_rollouts";

#[derive(Serialize)]
struct Offer {
    rollout_id: String,
    firmware_id: String,
    version: String,
    from_version: String,
    state: String,
    timed_out: bool,
    error: Option<String>,
    stage: i64,
    offered_at: String,
    updated_at: String,
    #[serde(skip)]
    offered_us: i64,
}

/// The key of a page's last offer.
fn decode(cursor: &str) -> Option<(i64, String)> {
    let key = query::decode_cursor(HISTORY_CURSOR, cursor)?;
    let (us, id) = key.split_once('/')?;
    let us = us.parse::<i64>().ok()?;
    crate::is_id("ro_", id).then(|| (us, id.to_owned()))
}

/// `GET /v1/ota/devices/{device_id}/rollouts?limit=&cursor=`
pub fn list(req: &Request, device: &str) -> Result<Response, Problem> {
    let caller = auth::authenticate(req, &[Role::Admin])?;
    let tenant = caller.tenant()?;
    let device = path_segment(device)
        .and_then(|id| DeviceId::parse(&id).ok())
        .ok_or(OtaError::NotFound)?;
    let mut query = Query::parse(req.query())?;
    let cursor = query.take_parsed("cursor", |v| decode(v).ok_or(query::NOT_A_CURSOR))?;
    let limit = query.take_limit()?;
    query.finish()?;
    let (after_us, after_id) = cursor.unzip();

    let db = Db::open()?;
    let rows = db.query(
        "SELECT x.rollout_id, x.firmware_id, x.version, x.from_version, x.state, x.late, \
                x.error, x.stage::int8, x.offered_us, x.offered_ms, x.updated_ms \
         FROM devices dv \
         LEFT JOIN LATERAL ( \
           SELECT d.rollout_id, r.firmware_id, f.version, d.from_version, d.state, \
                  d.state IN ('offered', 'downloading', 'installing') \
                    AND d.offered_at + make_interval(secs => r.report_timeout_secs) \
                        <= clock_timestamp() AS late, \
                  d.error, d.stage, \
                  (extract(epoch from d.offered_at) * 1000000)::int8 AS offered_us, \
                  (extract(epoch from d.offered_at) * 1000)::int8 AS offered_ms, \
                  (extract(epoch from d.updated_at) * 1000)::int8 AS updated_ms \
           FROM rollout_devices d \
           JOIN rollouts r ON r.tenant_id = d.tenant_id AND r.rollout_id = d.rollout_id \
           JOIN firmware f ON f.tenant_id = r.tenant_id AND f.firmware_id = r.firmware_id \
           WHERE d.tenant_id = dv.tenant_id AND d.device_id = dv.device_id \
             AND ($3::int8 IS NULL \
                  OR (d.offered_at, d.rollout_id) < \
                     (timestamptz 'epoch' + $3 * interval '1 microsecond', $4::text)) \
           ORDER BY d.offered_at DESC, d.rollout_id DESC LIMIT $5 \
         ) x ON true \
         WHERE dv.tenant_id = $1 AND dv.device_id = $2 \
         ORDER BY x.offered_us DESC, x.rollout_id DESC",
        &[
            db::text(tenant.as_str()),
            db::text(device.as_str()),
            db::opt_int8(after_us),
            db::opt_text(after_id),
            db::int8(i64::from(limit) + 1),
        ],
    )?;
    if rows.rows.is_empty() {
        return Err(OtaError::NotFound.into());
    }
    let mut items = Vec::with_capacity(rows.rows.len());
    for row in &rows.rows {
        // The device without (more) offers: one row of NULLs.
        let Some(rollout_id) = db::column::<Option<String>>(row, 0)? else {
            continue;
        };
        items.push(Offer {
            rollout_id,
            firmware_id: db::column(row, 1)?,
            version: db::column(row, 2)?,
            from_version: db::column(row, 3)?,
            state: db::column(row, 4)?,
            timed_out: db::column(row, 5)?,
            error: db::column(row, 6)?,
            stage: db::column(row, 7)?,
            offered_us: db::column(row, 8)?,
            offered_at: time::rfc3339_ms(db::column(row, 9)?),
            updated_at: time::rfc3339_ms(db::column(row, 10)?),
        });
    }
    Ok(respond::page(items, limit, |o| {
        Some(query::encode_cursor(
            HISTORY_CURSOR,
            &format!("{}/{}", o.offered_us, o.rollout_id),
        ))
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_others_are_refused() {
        let cursor = query::encode_cursor(HISTORY_CURSOR, "1700000000123456/ro_0123456789abcdef");
        assert_eq!(
            decode(&cursor),
            Some((1_700_000_000_123_456, "ro_0123456789abcdef".to_owned()))
        );
        for bad in [
            "zzzz".to_owned(),
            query::encode_cursor("devices", "1/ro_0123456789abcdef"),
            query::encode_cursor(HISTORY_CURSOR, "x/ro_0123456789abcdef"),
            query::encode_cursor(HISTORY_CURSOR, "1/fw_0123456789abcdef"),
        ] {
            assert_eq!(decode(&bad), None, "{bad}");
        }
    }
}
