//! The `aggregate` component: time-series queries over the telemetry, and retention.
//! Routes on the full request path:
//!
//! | route | who | module |
//! |-------|-----|--------|
//! | `GET /v1/metrics/devices/{id}/{metric}?from&to&bucket&agg&fill` | admin, the device itself | [`series`] |
//! | `GET /v1/metrics/devices/{id}/{metric}/raw?from&to&limit&cursor` | admin, the device itself | [`readings`] |
//! | `GET /v1/metrics/devices/{id}/latest` | admin, the device itself | [`readings`] |
//! | `GET /v1/metrics/fleet/{metric}?from&to&bucket&agg&fill&model&channel&tag` | admin | [`series`] |
//! | `GET`, `PUT /v1/metrics/retention` | admin | [`retention`] |
//! | `POST /v1/metrics/retention/run` | admin (its tenant), operator (all) | [`retention`] |
//! | `GET /v1/fleet/summary` | admin | [`fleet`] |
//!
//! Aggregates are read from the 1-minute and 1-hour rollups that the ingest statement
//! keeps exactly current (see `docs/aggregation.md` and `schemas/sql/0004_rollups.sql`);
//! bucket edges are UTC, counted from the Unix epoch.
//!
//! `latest` is a valid metric name, but `/devices/{id}/latest` is the last-values route:
//! a device metric called `latest` can be read raw (`/devices/{id}/latest/raw`) and
//! through the fleet route, not as a device series.

// Functions stay under 100 lines (clippy.toml); tests may run longer.
#![cfg_attr(not(test), warn(clippy::too_many_lines))]

mod error;
mod fleet;
mod params;
mod readings;
mod retention;
mod series;

use spin_sdk::http::{IncomingRequest, Request, Response, ResponseOutparam};
use spin_sdk::http_component;
use toaster_core::ids::{DeviceId, MetricName, TenantId};
use toaster_core::problem::Problem;
use toaster_core::token::Role;
use toaster_platform::auth::{self, Caller};
use toaster_platform::db::{self, Db};
use toaster_platform::router::{self, path_segment};
use toaster_platform::serve;

use crate::error::AggregateError;

#[http_component]
async fn handle(req: IncomingRequest, out: ResponseOutparam) {
    serve::serve(req, out, route).await
}

fn route(req: &Request) -> Response {
    router::route(req, |path, on| match *path {
        ["v1", "metrics", "devices", device, "latest"] => {
            Some(on.get(|| readings::latest(req, device)))
        }
        ["v1", "metrics", "devices", device, metric] => {
            Some(on.get(|| series::device(req, device, metric)))
        }
        ["v1", "metrics", "devices", device, metric, "raw"] => {
            Some(on.get(|| readings::raw(req, device, metric)))
        }
        ["v1", "metrics", "fleet", metric] => Some(on.get(|| series::fleet(req, metric))),
        ["v1", "metrics", "retention"] => {
            Some(on.get(|| retention::get(req)).put(|| retention::put(req)))
        }
        ["v1", "metrics", "retention", "run"] => Some(on.post(|| retention::run(req))),
        ["v1", "fleet", "summary"] => Some(on.get(|| fleet::summary(req))),
        _ => None,
    })
}

/// Whose data a request reads: the caller's tenant and a device it may see, and the
/// session the check used, for the query that follows.
pub(crate) struct Subject {
    pub tenant: TenantId,
    pub device: DeviceId,
    pub db: Db,
}

/// Authenticates an admin or a device and resolves `{id}`: an admin reads any device
/// of its tenant, a device only itself. Another device, an unknown one or one of
/// another tenant are alike: 404.
pub(crate) fn device_subject(req: &Request, raw_device: &str) -> Result<Subject, Problem> {
    let caller = auth::authenticate(req, &[Role::Admin, Role::Device])?;
    let tenant = caller.tenant()?.clone();
    let device = path_segment(raw_device)
        .and_then(|id| DeviceId::parse(&id).ok())
        .ok_or(AggregateError::NoSuchDevice)?;
    let db = Db::open()?;
    check_device(&db, &caller, &tenant, &device)?;
    Ok(Subject { tenant, device, db })
}

fn check_device(
    db: &Db,
    caller: &Caller,
    tenant: &TenantId,
    device: &DeviceId,
) -> Result<(), Problem> {
    match caller.role {
        // authenticate() has checked that the device exists and is active.
        Role::Device if caller.device() == Some(device) => Ok(()),
        Role::Device => Err(AggregateError::NoSuchDevice.into()),
        _ => {
            let rows = db.query(
                "SELECT 1 FROM devices WHERE tenant_id = $1 AND device_id = $2",
                &[db::text(tenant.as_str()), db::text(device.as_str())],
            )?;
            if rows.rows.is_empty() {
                Err(AggregateError::NoSuchDevice.into())
            } else {
                Ok(())
            }
        }
    }
}

/// A `{metric}` path segment; 404 when it is not a metric name (no such resource).
pub(crate) fn metric_in_path(raw: &str) -> Result<MetricName, Problem> {
    path_segment(raw)
        .and_then(|name| MetricName::parse(&name).ok())
        .ok_or_else(|| AggregateError::NoSuchMetric.into())
}
