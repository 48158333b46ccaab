//! Retention: how many days of raw, minute and hour data a tenant keeps
//! (`tenant_retention`, set by its admin), and the run that removes what is past it
//! (`toaster_retention_run` in `schemas/sql/0004_rollups.sql`). Nothing runs it on a
//! timer here: Spin components only run on requests, so a scheduler (cron, a
//! Kubernetes CronJob) calls `POST /v1/metrics/retention/run`; see
//! docs/aggregation.md.

use serde::{Deserialize, Serialize};
use serde_json::json;
use spin_sdk::http::{Request, Response};
use toaster_core::problem::{FieldError, Problem};
use toaster_core::token::Role;
use toaster_platform::db::{self, Db};
use toaster_platform::{auth, body, respond};

use crate::error::AggregateError;

/// Bounds of every field, as the table's CHECK constraints have them.
const MAX_DAYS: u32 = 3650;

/// A tenant's policy; also the body of `PUT /v1/metrics/retention`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    pub raw_days: u32,
    pub minute_days: u32,
    pub hour_days: u32,
}

impl Policy {
    /// A tenant without a row.
    pub const DEFAULT: Policy = Policy {
        raw_days: 30,
        minute_days: 90,
        hour_days: 730,
    };

    fn check(&self) -> Result<(), Problem> {
        let mut errors = Vec::new();
        for (name, days) in [
            ("raw_days", self.raw_days),
            ("minute_days", self.minute_days),
            ("hour_days", self.hour_days),
        ] {
            if !(1..=MAX_DAYS).contains(&days) {
                errors.push(FieldError::new(
                    format!("/{name}"),
                    format!("must be from 1 to {MAX_DAYS}"),
                ));
            }
        }
        if errors.is_empty() && self.minute_days < self.raw_days {
            errors.push(FieldError::new(
                "/minute_days",
                "must be at least raw_days: minute rollups outlive the readings they sum",
            ));
        }
        if errors.is_empty() && self.hour_days < self.minute_days {
            errors.push(FieldError::new(
                "/hour_days",
                "must be at least minute_days: hour rollups outlive minute rollups",
            ));
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(AggregateError::Policy(errors).into())
        }
    }
}

/// `GET /v1/metrics/retention`: the caller's tenant's policy.
pub fn get(req: &Request) -> Result<Response, Problem> {
    let caller = auth::authenticate(req, &[Role::Admin])?;
    let tenant = caller.tenant()?;
    let db = Db::open()?;
    let rows = db.query(
        "SELECT raw_days, minute_days, hour_days FROM tenant_retention WHERE tenant_id = $1",
        &[db::text(tenant.as_str())],
    )?;
    let policy = match rows.rows.first() {
        None => Policy::DEFAULT,
        Some(row) => Policy {
            raw_days: days(row, 0)?,
            minute_days: days(row, 1)?,
            hour_days: days(row, 2)?,
        },
    };
    Ok(respond::json(200, &policy))
}

fn days(row: &[db::DbValue], index: usize) -> Result<u32, Problem> {
    let value: i32 = db::column(row, index)?;
    u32::try_from(value).map_err(|_| respond::internal())
}

/// `PUT /v1/metrics/retention`: replaces the caller's tenant's policy. It applies to
/// ingest at once (readings older than `raw_days` are refused) and to the next run.
pub fn put(req: &Request) -> Result<Response, Problem> {
    let caller = auth::authenticate(req, &[Role::Admin])?;
    let tenant = caller.tenant()?;
    let policy: Policy = body::json(req)?;
    policy.check()?;
    let db = Db::open()?;
    db.try_execute(
        "INSERT INTO tenant_retention (tenant_id, raw_days, minute_days, hour_days) \
         VALUES ($1, $2::int8, $3::int8, $4::int8) ON CONFLICT (tenant_id) DO UPDATE SET \
         raw_days = excluded.raw_days, minute_days = excluded.minute_days, \
         hour_days = excluded.hour_days",
        &[
            db::text(tenant.as_str()),
            db::int8(i64::from(policy.raw_days)),
            db::int8(i64::from(policy.minute_days)),
            db::int8(i64::from(policy.hour_days)),
        ],
    )
    .map_err(|e| {
        if db::sqlstate(&e) == Some(db::FOREIGN_KEY_VIOLATION) {
            AggregateError::NoTenant.into()
        } else {
            db::unavailable_or_internal(&e)
        }
    })?;
    Ok(respond::json(200, &policy))
}

/// `POST /v1/metrics/retention/run`: an admin's run removes its tenant's rows past
/// the policy; an operator's, every tenant's. Either drops the daily raw partitions
/// that are past every tenant's raw retention.
pub fn run(req: &Request) -> Result<Response, Problem> {
    let caller = auth::authenticate(req, &[Role::Admin, Role::Operator])?;
    let tenant = match caller.role {
        Role::Operator => None,
        _ => Some(caller.tenant()?.clone()),
    };
    let db = Db::open()?;
    let rows = db.query(
        "SELECT tenant_count, partitions_dropped, raw_rows_deleted, minute_rows_deleted, \
         hour_rows_deleted FROM toaster_retention_run($1::text)",
        &[db::opt_text(tenant.as_ref().map(|t| t.as_str()))],
    )?;
    let Some(row) = rows.rows.first() else {
        eprintln!("aggregate: the retention run returned no row");
        return Err(respond::internal());
    };
    let tenants: i64 = db::column(row, 0)?;
    let dropped = db::text_array(row, 1)?;
    let raw: i64 = db::column(row, 2)?;
    let minute: i64 = db::column(row, 3)?;
    let hour: i64 = db::column(row, 4)?;
    Ok(respond::json(
        200,
        &json!({
            "tenant": tenant,
            "tenants": tenants,
            "partitions_dropped": dropped,
            "raw_rows_deleted": raw,
            "minute_rows_deleted": minute,
            "hour_rows_deleted": hour,
        }),
    ))
}
