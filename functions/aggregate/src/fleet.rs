//! `GET /v1/fleet/summary` (admin): the tenant's fleet at a glance, in one statement.
//!
//! - `devices`: the devices that are not decommissioned (`total`), by model and by
//!   channel; `by_status` counts every device, decommissioned ones included (always
//!   the three statuses, zeros too).
//! - `seen`: devices (not decommissioned) whose `last_seen` (`devices.last_seen_at`,
//!   the UTC minute of the latest telemetry batch, written by the ingest statement) is
//!   at most 5 minutes, 1 hour, 24 hours before now.
//! - `ingest.minute_readings`: readings stored per UTC minute of receipt over the last
//!   60 minutes, oldest first, the current (partial) minute last, zeros included: the
//!   sums of the tenant's `ingest_minutes` shards (0008_console_api.sql).

use serde_json::{Map, Value, json};
use spin_sdk::http::{Request, Response};
use toaster_core::problem::Problem;
use toaster_core::token::Role;
use toaster_platform::db::{self, Db};
use toaster_platform::query::Query;
use toaster_platform::{auth, respond, time};

/// Minutes in `ingest.minute_readings`.
pub const MINUTES: i64 = 60;

const SUMMARY: &str = "\
WITH g AS (
    SELECT status, model, channel, count(*) AS n,
           count(*) FILTER (WHERE last_seen_at >= now() - interval '5 minutes') AS s5,
           count(*) FILTER (WHERE last_seen_at >= now() - interval '1 hour') AS s60,
           count(*) FILTER (WHERE last_seen_at >= now() - interval '24 hours') AS s1440
    FROM devices WHERE tenant_id = $1
    GROUP BY status, model, channel
), live AS (
    SELECT * FROM g WHERE status <> 'decommissioned'
), now_minute AS (
    SELECT date_bin(interval '1 minute', now(), timestamptz 'epoch') AS m
)
SELECT
    (SELECT coalesce(sum(n), 0)::int8 FROM live),
    (SELECT coalesce(jsonb_object_agg(status, n), '{}') FROM
        (SELECT status, sum(n) AS n FROM g GROUP BY status) s),
    (SELECT coalesce(jsonb_object_agg(model, n), '{}') FROM
        (SELECT model, sum(n) AS n FROM live GROUP BY model) s),
    (SELECT coalesce(jsonb_object_agg(channel, n), '{}') FROM
        (SELECT channel, sum(n) AS n FROM live GROUP BY channel) s),
    (SELECT coalesce(sum(s5), 0)::int8 FROM live),
    (SELECT coalesce(sum(s60), 0)::int8 FROM live),
    (SELECT coalesce(sum(s1440), 0)::int8 FROM live),
    (SELECT jsonb_agg(jsonb_build_array(
                (extract(epoch from g.minute) * 1000)::int8, coalesce(i.readings, 0))
            ORDER BY g.minute)
     FROM now_minute,
          generate_series(now_minute.m - ($2::int8 - 1) * interval '1 minute', now_minute.m,
                          interval '1 minute') AS g(minute)
     LEFT JOIN (SELECT minute, sum(readings)::int8 AS readings FROM ingest_minutes
                WHERE tenant_id = $1
                  AND minute >= date_bin(interval '1 minute', now(), timestamptz 'epoch')
                                - ($2::int8 - 1) * interval '1 minute'
                GROUP BY minute) i ON i.minute = g.minute)";

/// `GET /v1/fleet/summary`
pub fn summary(req: &Request) -> Result<Response, Problem> {
    let caller = auth::authenticate(req, &[Role::Admin])?;
    let tenant = caller.tenant()?;
    Query::parse(req.query())?.finish()?;
    let db = Db::open()?;
    let rows = db.query(SUMMARY, &[db::text(tenant.as_str()), db::int8(MINUTES)])?;
    let Some(row) = rows.rows.first() else {
        eprintln!("aggregate: the fleet summary returned no row");
        return Err(respond::internal());
    };
    let total: i64 = db::column(row, 0)?;
    let mut by_status = Map::new();
    for status in ["active", "disabled", "decommissioned"] {
        by_status.insert(status.to_owned(), json!(0));
    }
    if let Value::Object(counted) = db::column::<Value>(row, 1)? {
        by_status.extend(counted);
    }
    let by_model: Value = db::column(row, 2)?;
    let by_channel: Value = db::column(row, 3)?;
    let seen = [
        db::column::<i64>(row, 4)?,
        db::column::<i64>(row, 5)?,
        db::column::<i64>(row, 6)?,
    ];
    let minutes: Value = db::column(row, 7)?;
    let minute_readings = minutes
        .as_array()
        .map(|minutes| {
            minutes
                .iter()
                .filter_map(|pair| {
                    let ms = pair.get(0)?.as_i64()?;
                    let readings = pair.get(1)?.as_i64()?;
                    Some(json!({"minute": time::rfc3339_ms(ms), "readings": readings}))
                })
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    Ok(respond::json(
        200,
        &json!({
            "devices": {
                "total": total,
                "by_status": by_status,
                "by_model": by_model,
                "by_channel": by_channel,
            },
            "seen": {"last_5m": seen[0], "last_1h": seen[1], "last_24h": seen[2]},
            "ingest": {"minute_readings": minute_readings},
        }),
    ))
}
