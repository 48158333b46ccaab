//! Commands as a device sees them: fetch the pending ones (oldest first, a bounded
//! page; each fetched one is `delivered`), and post each one's result once.
//!
//! A fetch when nothing is pending is answered from the key-value marker, without
//! PostgreSQL. A fetch that reads PostgreSQL learns in the same statement the device's
//! newest command, so the marker it leaves ("nothing pending as of command N") cannot
//! hide a command sent after the read: that send's own marker names a newer command.

use serde::Deserialize;
use serde_json::{Value, json};
use spin_sdk::http::{Request, Response};
use toaster_core::control::command::{self as rules, Event, Outcome, Status};
use toaster_core::control::state as shape;
use toaster_core::ids::{DeviceId, TenantId};
use toaster_core::problem::Problem;
use toaster_core::token::Role;
use toaster_platform::auth;
use toaster_platform::db::{self, Db};
use toaster_platform::query::Query;
use toaster_platform::{body, respond, time};

use crate::commands::{check_size, load};
use crate::error::ControlError;
use crate::views::{COMMAND_COLUMNS, CommandView};
use crate::{is_id, limits, marker, own};

/// The largest page a fetch may ask for, and the default.
const MAX_PAGE: u32 = 100;
const DEFAULT_PAGE: u32 = 10;

/// `GET /v1/device/commands?limit=`: the calling device's pending commands.
pub fn fetch(req: &Request) -> Result<Response, Problem> {
    let caller = auth::authenticate(req, &[Role::Device])?;
    let (tenant, device) = own(&caller)?;
    let mut query = Query::parse(req.query())?;
    let limit = query
        .take_parsed("limit", |v| {
            v.parse::<u32>()
                .ok()
                .filter(|n| (1..=MAX_PAGE).contains(n))
                .ok_or_else(|| format!("must be an integer from 1 to {MAX_PAGE}"))
        })?
        .unwrap_or(DEFAULT_PAGE);
    query.finish()?;
    let idle = marker::read(tenant, device)
        .and_then(|m| m.fresh_commands(time::now_ms()))
        .is_some_and(|c| !c.pending);
    if idle {
        return Ok(page(&[]));
    }
    let db = Db::open()?;
    let rows = db.query(
        &format!(
            "WITH page AS (SELECT command_id FROM commands WHERE tenant_id = $1 AND device_id = $2 \
               AND status IN ('queued', 'delivered') AND expires_at > now() ORDER BY seq LIMIT $3), \
             fetched AS (UPDATE commands c SET status = 'delivered', delivered_at = now() \
               FROM page p WHERE c.tenant_id = $1 AND c.command_id = p.command_id \
               AND c.status = 'queued' RETURNING c.*), \
             items AS (SELECT * FROM fetched UNION ALL \
               SELECT c.* FROM commands c JOIN page p ON c.tenant_id = $1 \
               AND c.command_id = p.command_id WHERE c.status = 'delivered') \
             SELECT m.newest, {COMMAND_COLUMNS} FROM \
               (SELECT coalesce(max(seq), 0) AS newest FROM commands \
                WHERE tenant_id = $1 AND device_id = $2) m \
             LEFT JOIN items c ON true ORDER BY c.seq"
        ),
        &[
            db::text(tenant.as_str()),
            db::text(device.as_str()),
            db::int8(i64::from(limit)),
        ],
    )?;
    let mut newest = 0;
    let mut items = Vec::new();
    for row in &rows.rows {
        newest = db::column(row, 0)?;
        if db::column::<Option<String>>(row, 1)?.is_some() {
            items.push(CommandView::from_row(row, 1)?);
        }
    }
    marker::write(tenant, device, marker::commands(newest, !items.is_empty()));
    Ok(page(&items))
}

fn page(items: &[CommandView]) -> Response {
    let items: Vec<Value> = items.iter().map(CommandView::for_device).collect();
    respond::json(200, &json!({ "items": items }))
}

/// The body of a result.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ResultBody {
    status: String,
    output: Option<Value>,
}

/// `POST /v1/device/commands/{command}/result`: `succeeded`, `failed` or `rejected`,
/// with an optional JSON output. The same result again is 200 (a safe resend);
/// another one, or one for a command that is canceled or expired, is 409.
pub fn result(req: &Request, command: &str) -> Result<Response, Problem> {
    let caller = auth::authenticate(req, &[Role::Device])?;
    let (tenant, device) = own(&caller)?;
    if !is_id("cmd_", command) {
        return Err(ControlError::NotFound.into());
    }
    let max_bytes = limits::command_bytes()?;
    let raw: ResultBody = body::json_limited(req, max_bytes.saturating_add(1024))?;
    let status = Status::parse(&raw.status)
        .filter(|s| s.is_result())
        .ok_or_else(|| ControlError::invalid("/status", "must be succeeded, failed or rejected"))?;
    if let Some(output) = &raw.output {
        shape::check_json(output, &limits::state()?)
            .map_err(|e| ControlError::invalid("/output", e.to_string()))?;
        check_size("output", output, max_bytes)?;
    }
    let db = Db::open()?;
    let rows = db.query(
        &format!(
            "UPDATE commands c SET status = $4, output = $5::jsonb, finished_at = now(), \
               delivered_at = coalesce(delivered_at, now()) \
             WHERE c.tenant_id = $1 AND c.device_id = $2 AND c.command_id = $3 \
               AND c.status IN ('queued', 'delivered') AND c.expires_at > now() \
             RETURNING {COMMAND_COLUMNS}"
        ),
        &[
            db::text(tenant.as_str()),
            db::text(device.as_str()),
            db::text(command),
            db::text(status.as_str()),
            raw.output.as_ref().map_or_else(db::null, db::jsonb),
        ],
    )?;
    if let Some(row) = rows.rows.first() {
        return Ok(respond::json(
            200,
            &CommandView::from_row(row, 0)?.for_device(),
        ));
    }
    resend(&db, tenant, device, command, status, raw.output.as_ref())
}

/// A result that changed nothing: the same one again (200), or why not.
fn resend(
    db: &Db,
    tenant: &TenantId,
    device: &DeviceId,
    command: &str,
    status: Status,
    output: Option<&Value>,
) -> Result<Response, Problem> {
    let current = load(db, tenant, device, command)?;
    let now = Status::parse(&current.status).ok_or(ControlError::Corrupt("commands.status"))?;
    match rules::transition(now, Event::Result(status)) {
        Ok(Outcome::Unchanged) if current.output.as_ref() == output => {
            Ok(respond::json(200, &current.for_device()))
        }
        Ok(Outcome::Unchanged) => Err(ControlError::OtherOutput.into()),
        Ok(Outcome::Moves(_)) => Err(Problem::conflict(
            "the command changed while the result was stored; read it and retry",
        )),
        Err(refused) => Err(ControlError::Lifecycle(refused).into()),
    }
}
