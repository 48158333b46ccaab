//! A device's state documents: reads (with `If-None-Match`, answered from the
//! key-value marker when a device polls and nothing changed), merge-patch writes of
//! one side (`If-Match` → 412), and a desired patch to every device a selector names.
//!
//! Each write is one statement: `INSERT … ON CONFLICT DO UPDATE` on `device_state`, the
//! merge done by PostgreSQL (`control_merge_patch`, 0007_control.sql) on the row it
//! holds locked, so two concurrent patches to different members both survive, and a
//! result over a limit raises an error that aborts the statement (nothing written).

use serde_json::{Value, json};
use spin_sdk::http::{Request, Response};
use spin_sdk::pg4::{PgError, QueryError};
use toaster_core::control::state::{self as rules, Limits};
use toaster_core::ids::{DeviceId, TenantId};
use toaster_core::problem::{Problem, ProblemType};
use toaster_core::token::Role;
use toaster_platform::auth::{self, Caller};
use toaster_platform::db::{self, Db, Param};
use toaster_platform::query::Query;
use toaster_platform::{respond, time};

use crate::error::ControlError;
use crate::patch::{self, Precondition};
use crate::selector::Selector;
use crate::views::{STATE_COLUMNS, StateView};
use crate::{device_in_path, limits, marker, own};

/// Which document a write changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// Set by the tenant's admins: what the device should be.
    Desired,
    /// Set by the device: what it is.
    Reported,
}

impl Side {
    fn column(self) -> &'static str {
        match self {
            Side::Desired => "desired",
            Side::Reported => "reported",
        }
    }
}

/// `GET /v1/devices/{id}/state`: the device's state (admin).
pub fn get(req: &Request, device: &str) -> Result<Response, Problem> {
    let caller = auth::authenticate(req, &[Role::Admin])?;
    let tenant = caller.tenant()?;
    let device = device_in_path(device)?;
    let db = Db::open()?;
    let rows = db.query(
        &format!(
            "SELECT {STATE_COLUMNS} FROM devices d LEFT JOIN device_state s \
             ON s.tenant_id = d.tenant_id AND s.device_id = d.device_id \
             WHERE d.tenant_id = $1 AND d.device_id = $2"
        ),
        &[db::text(tenant.as_str()), db::text(device.as_str())],
    )?;
    let row = rows.rows.first().ok_or(ControlError::NotFound)?;
    let view = StateView::from_row(device.as_str(), row, 0)?;
    Ok(answer(req, &view))
}

/// `GET /v1/device/state`: the calling device's state. With `If-None-Match` naming
/// the current tag, 304 from the key-value marker, without PostgreSQL.
pub fn get_own(req: &Request) -> Result<Response, Problem> {
    let caller = auth::authenticate(req, &[Role::Device])?;
    let (tenant, device) = own(&caller)?;
    if let Some(condition) = req.header("if-none-match").and_then(|v| v.as_str()) {
        let fresh = marker::read(tenant, device).and_then(|m| m.fresh_state(time::now_ms()));
        if let Some(mark) = fresh {
            let tag = rules::etag(mark.desired, mark.reported);
            if rules::if_none_match(condition, &tag) {
                return Ok(not_modified(&tag));
            }
        }
    }
    let db = Db::open()?;
    let rows = db.query(
        &format!(
            "SELECT {STATE_COLUMNS} FROM (SELECT 1) AS one LEFT JOIN device_state s \
             ON s.tenant_id = $1 AND s.device_id = $2"
        ),
        &[db::text(tenant.as_str()), db::text(device.as_str())],
    )?;
    let row = rows.rows.first().ok_or_else(respond::internal)?;
    let view = StateView::from_row(device.as_str(), row, 0)?;
    marker::write(
        tenant,
        device,
        marker::state(view.desired_version, view.reported_version),
    );
    Ok(answer(req, &view))
}

/// `PATCH /v1/devices/{id}/state/desired`: an admin's merge patch of `desired`.
pub fn patch_desired(req: &Request, device: &str) -> Result<Response, Problem> {
    let caller = auth::authenticate(req, &[Role::Admin])?;
    let tenant = caller.tenant()?;
    let device = device_in_path(device)?;
    let limits = limits::state()?;
    let patch = patch::read(req, &limits)?;
    let precondition = patch::precondition(req, Side::Desired)?;
    let db = Db::open()?;
    let write = Write {
        tenant,
        device: &device,
        side: Side::Desired,
        patch: &patch,
        precondition,
        limits: &limits,
    };
    let view = write.run(&db, Some(&caller))?;
    marker::write(
        tenant,
        &device,
        marker::state(view.desired_version, view.reported_version),
    );
    Ok(written(&view))
}

/// `PATCH /v1/device/state/reported`: the calling device's merge patch of `reported`.
pub fn patch_own(req: &Request, side: Side) -> Result<Response, Problem> {
    let caller = auth::authenticate(req, &[Role::Device])?;
    let (tenant, device) = own(&caller)?;
    let limits = limits::state()?;
    let patch = patch::read(req, &limits)?;
    let precondition = patch::precondition(req, side)?;
    let db = Db::open()?;
    let write = Write {
        tenant,
        device,
        side,
        patch: &patch,
        precondition,
        limits: &limits,
    };
    let view = write.run(&db, None)?;
    marker::write(
        tenant,
        device,
        marker::state(view.desired_version, view.reported_version),
    );
    Ok(written(&view))
}

/// One merge patch of one side of one device's state.
struct Write<'a> {
    tenant: &'a TenantId,
    device: &'a DeviceId,
    side: Side,
    patch: &'a Value,
    precondition: Precondition,
    limits: &'a Limits,
}

impl Write<'_> {
    /// Runs the write (audited when `admin` is given) and returns the state after it.
    fn run(&self, db: &Db, admin: Option<&Caller>) -> Result<StateView, Problem> {
        let version = match self.precondition {
            Precondition::None => None,
            Precondition::Version(v) => Some(v),
        };
        let mut params = vec![
            db::text(self.tenant.as_str()),
            db::text(self.device.as_str()),
            db::jsonb(self.patch),
            db::opt_int8(version),
            db::int8(time::now_ms()),
            int4(self.limits.max_bytes),
            int4(self.limits.max_keys),
        ];
        let audit = match admin {
            Some(caller) => {
                params.push(db::text(caller.role.as_str()));
                params.push(db::text(caller.subject.as_str()));
                ", audit AS (INSERT INTO audit_log (tenant_id, actor_role, actor, action, target, details) \
                 SELECT $1, $8, $9, 'state.desired_patched', w.device_id, \
                 jsonb_build_object('patch', $3::jsonb, 'version', w.desired_version) FROM w)"
            }
            None => "",
        };
        let target = "d.tenant_id = $1 AND d.device_id = $2 AND d.status <> 'decommissioned' \
             AND (coalesce($4::int8, 0) = 0 OR EXISTS (SELECT 1 FROM device_state e \
             WHERE e.tenant_id = $1 AND e.device_id = $2))";
        let sql = format!(
            "WITH w AS ({upsert}){audit} SELECT {columns} FROM w s",
            upsert = upsert(
                self.side,
                target,
                "WHERE $4::int8 IS NULL OR s.{side}_version = $4"
            ),
            columns = STATE_COLUMNS,
        );
        let rows = db.try_query(&sql, &params).map_err(limit_or_storage)?;
        match rows.rows.first() {
            Some(row) => StateView::from_row(self.device.as_str(), row, 0),
            None => Err(self.why_not(db)?.into()),
        }
    }

    /// Why the write matched no row: no such device, a decommissioned one, or a
    /// version `If-Match` did not name.
    fn why_not(&self, db: &Db) -> Result<ControlError, Problem> {
        let rows = db.query(
            &format!(
                "SELECT d.status, coalesce(s.{side}_version, 0) FROM devices d \
                 LEFT JOIN device_state s ON s.tenant_id = d.tenant_id AND s.device_id = d.device_id \
                 WHERE d.tenant_id = $1 AND d.device_id = $2",
                side = self.side.column()
            ),
            &[db::text(self.tenant.as_str()), db::text(self.device.as_str())],
        )?;
        let Some(row) = rows.rows.first() else {
            return Ok(ControlError::NotFound);
        };
        if db::column::<String>(row, 0)? == "decommissioned" {
            return Ok(ControlError::Decommissioned);
        }
        Ok(ControlError::VersionMismatch {
            current: db::column(row, 1)?,
        })
    }
}

/// The upsert of `side` for the devices `target` names (a condition on `devices d`),
/// `$3` the patch, `$5` now in Unix ms, `$6`/`$7` the size and members limits;
/// `condition` guards the update of an existing row. Returns `device_state` columns.
///
/// Both paths check the result's limits. The insert path's document (the patch
/// without its `null`s) is contained in the update path's, so when a row exists and
/// the insert path's check fails, the update's would have too.
fn upsert(side: Side, target: &str, condition: &str) -> String {
    let side = side.column();
    let condition = condition.replace("{side}", side);
    format!(
        "INSERT INTO device_state AS s (tenant_id, device_id, {side}, {side}_version, {side}_times) \
         SELECT d.tenant_id, d.device_id, n.doc, (n.doc <> '{{}}')::int, \
                control_member_times('{{}}', n.doc, '{{}}', $5::int8) \
         FROM devices d CROSS JOIN LATERAL \
              (SELECT control_checked(control_merge_patch('{{}}', $3::jsonb), \
                                      $6::int4, $7::int4) AS doc) n \
         WHERE {target} \
         ON CONFLICT (tenant_id, device_id) DO UPDATE SET ({side}, {side}_version, {side}_times) = \
           (SELECT n.doc, s.{side}_version + (n.doc <> s.{side})::int, \
                   control_member_times(s.{side}, n.doc, s.{side}_times, $5::int8) \
            FROM (SELECT control_checked(control_merge_patch(s.{side}, $3::jsonb), \
                                         $6::int4, $7::int4) AS doc) n) \
         {condition} \
         RETURNING s.*"
    )
}

/// A limit `control_checked` raised (413 or 422, naming it), or the storage's error.
fn limit_or_storage(error: PgError) -> Problem {
    let message = match &error {
        PgError::QueryFailed(QueryError::DbError(e)) => e.message.clone(),
        _ => String::new(),
    };
    match db::sqlstate(&error) {
        Some("TCBIG") => Problem::of(ProblemType::PayloadTooLarge).with_detail(message),
        Some("TCKEY") => {
            Problem::unprocessable(vec![toaster_core::problem::FieldError::new("", message)])
        }
        _ => db::unavailable_or_internal(&error),
    }
}

/// `PATCH /v1/fleet/state/desired?model=&channel=&tag=` (or `all=true`): one desired
/// patch for every device the selector names, in one statement; the answer counts
/// them. A device whose result would break a limit aborts the whole change.
pub fn patch_fleet(req: &Request) -> Result<Response, Problem> {
    let caller = auth::authenticate(req, &[Role::Admin])?;
    let tenant = caller.tenant()?;
    let mut query = Query::parse(req.query())?;
    let selector = Selector::take(&mut query)?;
    query.finish()?;
    let limits = limits::state()?;
    let patch = patch::read(req, &limits)?;
    let (condition, selector_params) = selector.sql(8);
    let mut params: Vec<Param> = vec![
        db::text(tenant.as_str()),
        db::text(caller.role.as_str()),
        db::jsonb(&patch),
        db::text(caller.subject.as_str()),
        db::int8(time::now_ms()),
        int4(limits.max_bytes),
        int4(limits.max_keys),
    ];
    params.extend(selector_params);
    params.push(db::jsonb(&selector.to_json()));
    let sql = format!(
        "WITH w AS ({upsert}), \
         audit AS (INSERT INTO audit_log (tenant_id, actor_role, actor, action, target, details) \
           SELECT $1, $2, $4, 'state.desired_patched_fleet', 'fleet', \
           jsonb_build_object('selector', $11::jsonb, 'patch', $3::jsonb, \
                              'devices', (SELECT count(*) FROM w))) \
         SELECT w.device_id, w.desired_version, w.reported_version FROM w",
        upsert = upsert(
            Side::Desired,
            &format!("d.tenant_id = $1 AND {condition}"),
            ""
        ),
    );
    let db = Db::open()?;
    let rows = db.try_query(&sql, &params).map_err(limit_or_storage)?;
    for row in &rows.rows {
        let device: String = db::column(row, 0)?;
        if let Ok(device) = DeviceId::parse(&device) {
            marker::write(
                tenant,
                &device,
                marker::state(db::column(row, 1)?, db::column(row, 2)?),
            );
        }
    }
    Ok(respond::json(
        200,
        &json!({"devices": rows.rows.len(), "selector": selector.to_json()}),
    ))
}

/// 200 with the state and its `ETag`, or 304 when `If-None-Match` names it.
fn answer(req: &Request, view: &StateView) -> Response {
    let tag = view.etag();
    let matches = req
        .header("if-none-match")
        .and_then(|v| v.as_str())
        .is_some_and(|condition| rules::if_none_match(condition, &tag));
    if matches {
        return not_modified(&tag);
    }
    written(view)
}

/// 200 with the state and its `ETag` (a write's answer, whatever `If-None-Match`).
fn written(view: &StateView) -> Response {
    let mut response = respond::json(200, view);
    response.set_header("etag", view.etag());
    response.set_header("cache-control", "no-cache");
    response
}

fn not_modified(tag: &str) -> Response {
    Response::builder()
        .status(304)
        .header("etag", tag)
        .header("cache-control", "no-cache")
        .body(Vec::new())
        .build()
}

fn int4(value: usize) -> Param {
    Param::Int32(i32::try_from(value).unwrap_or(i32::MAX))
}
