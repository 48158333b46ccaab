//! Commands as an admin sees them: send one to a device, or one to every device a
//! selector names (one statement); list a device's commands; read one; cancel one
//! before delivery; a fleet send's progress.
//!
//! A send is one `INSERT … SELECT` that checks the device (exists in the tenant, not
//! decommissioned) and its queue (`command_queue_limit` pending commands), and skips a
//! repeated `Idempotency-Key` (`ON CONFLICT DO NOTHING`), with its audit entry in the
//! same statement. The queue check counts in the statement's snapshot, so sends racing
//! to one device can pass it together: the cap can be exceeded by the sends in flight
//! at once (docs/control.md).

use serde::Deserialize;
use serde_json::{Map, Value, json};
use spin_sdk::http::{Request, Response};
use toaster_core::control::command::{self as rules, CommandName, Event, Outcome, Status};
use toaster_core::control::state as shape;
use toaster_core::ids::{DeviceId, TenantId};
use toaster_core::problem::Problem;
use toaster_core::token::Role;
use toaster_platform::auth;
use toaster_platform::db::{self, Db, Param};
use toaster_platform::query::{self, Query};
use toaster_platform::{body, respond};

use crate::error::ControlError;
use crate::selector::Selector;
use crate::views::{COMMAND_COLUMNS, CommandView};
use crate::{device_in_path, is_id, limits, marker, new_id};

/// The body of a send.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SendBody {
    name: String,
    parameters: Option<Value>,
    ttl_seconds: Option<u64>,
}

/// A send, checked.
struct Send {
    name: CommandName,
    parameters: Value,
    ttl_secs: u32,
    key: Option<String>,
}

impl Send {
    /// The body and `Idempotency-Key` of `req`, within the limits.
    fn read(req: &Request) -> Result<Send, Problem> {
        let max_bytes = limits::command_bytes()?;
        let raw: SendBody = body::json_limited(req, max_bytes.saturating_add(1024))?;
        let name = CommandName::parse(&raw.name)
            .map_err(|e| ControlError::invalid("/name", e.to_string()))?;
        let parameters = raw.parameters.unwrap_or_else(|| json!({}));
        let state_limits = limits::state()?;
        if !parameters.is_object() {
            return Err(ControlError::invalid("/parameters", "must be a JSON object").into());
        }
        shape::check_json(&parameters, &state_limits)
            .map_err(|e| ControlError::invalid("/parameters", e.to_string()))?;
        check_size("parameters", &parameters, max_bytes)?;
        let ttl_secs = rules::ttl_secs(raw.ttl_seconds)
            .map_err(|e| ControlError::invalid("/ttl_seconds", e))?;
        Ok(Send {
            name,
            parameters,
            ttl_secs,
            key: idempotency_key(req)?,
        })
    }
}

/// 413 when `value` is over `max` bytes as compact JSON.
pub fn check_size(what: &'static str, value: &Value, max: usize) -> Result<(), Problem> {
    let size = serde_json::to_vec(value).map_or(usize::MAX, |b| b.len());
    if size > max {
        return Err(ControlError::TooLarge { what, max }.into());
    }
    Ok(())
}

/// `Idempotency-Key`: 1 to 128 visible ASCII characters, or absent.
fn idempotency_key(req: &Request) -> Result<Option<String>, Problem> {
    let Some(raw) = req.header("idempotency-key") else {
        return Ok(None);
    };
    raw.as_str()
        .filter(|k| (1..=128).contains(&k.len()) && k.bytes().all(|b| b.is_ascii_graphic()))
        .map(|k| Some(k.to_owned()))
        .ok_or_else(|| {
            Problem::bad_request("Idempotency-Key must be 1 to 128 visible ASCII characters")
        })
}

/// `POST /v1/devices/{id}/commands`: 201 with the queued command; with an
/// `Idempotency-Key` already used for this device, 200 with the command it made.
pub fn send(req: &Request, device: &str) -> Result<Response, Problem> {
    let caller = auth::authenticate(req, &[Role::Admin])?;
    let tenant = caller.tenant()?;
    let device = device_in_path(device)?;
    let send = Send::read(req)?;
    let queue = limits::queue()?;
    let id = new_id("cmd_")?;
    let db = Db::open()?;
    let sql = format!(
        "WITH ins AS (\
           INSERT INTO commands (tenant_id, device_id, command_id, name, parameters, \
                                 idempotency_key, created_by, expires_at) \
           SELECT d.tenant_id, d.device_id, $3, $4, $5::jsonb, $6, $7, \
                  now() + $8::int8 * interval '1 second' \
           FROM devices d \
           WHERE d.tenant_id = $1 AND d.device_id = $2 AND d.status <> 'decommissioned' \
             AND (SELECT count(*) FROM commands p WHERE p.tenant_id = $1 AND p.device_id = $2 \
                  AND p.status IN ('queued', 'delivered') AND p.expires_at > now()) < $9::int8 \
           ON CONFLICT (tenant_id, device_id, idempotency_key) \
             WHERE idempotency_key IS NOT NULL DO NOTHING \
           RETURNING *), \
         audit AS (INSERT INTO audit_log (tenant_id, actor_role, actor, action, target, details) \
           SELECT $1, 'admin', $7, 'command.sent', ins.device_id, \
           jsonb_build_object('command', ins.command_id, 'name', ins.name) FROM ins) \
         SELECT {COMMAND_COLUMNS} FROM ins c"
    );
    let rows = db.query(
        &sql,
        &[
            db::text(tenant.as_str()),
            db::text(device.as_str()),
            db::text(id),
            db::text(send.name.as_str()),
            db::jsonb(&send.parameters),
            db::opt_text(send.key.clone()),
            db::text(caller.subject.as_str()),
            db::int8(i64::from(send.ttl_secs)),
            db::int8(i64::from(queue)),
        ],
    )?;
    if let Some(row) = rows.rows.first() {
        let command = CommandView::from_row(row, 0)?;
        marker::write(tenant, &device, marker::commands(command.seq, true));
        let mut response = respond::json(201, &command);
        response.set_header(
            "location",
            format!("/v1/devices/{}/commands/{}", device.as_str(), command.id),
        );
        return Ok(response);
    }
    why_not_sent(&db, tenant, &device, &send, queue)
}

/// A send that inserted nothing: the command an earlier send with the same key made
/// (200), or why not (404, 409, 422, 429).
fn why_not_sent(
    db: &Db,
    tenant: &TenantId,
    device: &DeviceId,
    send: &Send,
    queue: u32,
) -> Result<Response, Problem> {
    if let Some(key) = &send.key {
        let rows = db.query(
            &format!(
                "SELECT {COMMAND_COLUMNS} FROM commands c WHERE c.tenant_id = $1 \
                 AND c.device_id = $2 AND c.idempotency_key = $3"
            ),
            &[
                db::text(tenant.as_str()),
                db::text(device.as_str()),
                db::text(key.as_str()),
            ],
        )?;
        if let Some(row) = rows.rows.first() {
            let earlier = CommandView::from_row(row, 0)?;
            if earlier.name != send.name.as_str() || earlier.parameters != send.parameters {
                return Err(ControlError::KeyReused.into());
            }
            return Ok(respond::json(200, &earlier));
        }
    }
    let rows = db.query(
        "SELECT status FROM devices WHERE tenant_id = $1 AND device_id = $2",
        &[db::text(tenant.as_str()), db::text(device.as_str())],
    )?;
    match rows.rows.first() {
        None => Err(ControlError::NotFound.into()),
        Some(row) if db::column::<String>(row, 0)? == "decommissioned" => {
            Err(ControlError::Decommissioned.into())
        }
        Some(_) => Err(ControlError::QueueFull { limit: queue }.into()),
    }
}

/// `GET /v1/devices/{id}/commands?status=&limit=&cursor=`: newest first.
pub fn list(req: &Request, device: &str) -> Result<Response, Problem> {
    let caller = auth::authenticate(req, &[Role::Admin])?;
    let tenant = caller.tenant()?;
    let device = device_in_path(device)?;
    let mut query = Query::parse(req.query())?;
    let status = query.take_parsed("status", |s| {
        Status::parse(s).ok_or("must be a command status, such as queued or succeeded")
    })?;
    let cursor = query.take_parsed("cursor", |v| {
        query::decode_cursor(COMMAND_CURSOR, v)
            .and_then(|seq| seq.parse::<i64>().ok())
            .ok_or(query::NOT_A_CURSOR)
    })?;
    let limit = query.take_limit()?;
    query.finish()?;
    let db = Db::open()?;
    exists(&db, tenant, &device)?;
    let rows = db.query(
        &format!(
            "SELECT {COMMAND_COLUMNS} FROM commands c WHERE c.tenant_id = $1 AND c.device_id = $2 \
             AND ($3::int8 IS NULL OR c.seq < $3) \
             AND ($4::text IS NULL OR $4 = CASE WHEN c.status IN ('queued', 'delivered') \
                  AND c.expires_at <= now() THEN 'expired' ELSE c.status END) \
             ORDER BY c.seq DESC LIMIT $5"
        ),
        &[
            db::text(tenant.as_str()),
            db::text(device.as_str()),
            db::opt_int8(cursor),
            db::opt_text(status.map(Status::as_str)),
            db::int8(i64::from(limit) + 1),
        ],
    )?;
    let items = rows
        .rows
        .iter()
        .map(|row| CommandView::from_row(row, 0))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(respond::page(items, limit, |c| {
        Some(query::encode_cursor(COMMAND_CURSOR, &c.seq.to_string()))
    }))
}

/// The list name in command list cursors.
const COMMAND_CURSOR: &str = "commands";

/// 404 unless the device is in the tenant.
fn exists(db: &Db, tenant: &TenantId, device: &DeviceId) -> Result<(), Problem> {
    let rows = db.query(
        "SELECT 1 FROM devices WHERE tenant_id = $1 AND device_id = $2",
        &[db::text(tenant.as_str()), db::text(device.as_str())],
    )?;
    if rows.rows.is_empty() {
        return Err(ControlError::NotFound.into());
    }
    Ok(())
}

/// `GET /v1/devices/{id}/commands/{command}`.
pub fn get(req: &Request, device: &str, command: &str) -> Result<Response, Problem> {
    let caller = auth::authenticate(req, &[Role::Admin])?;
    let tenant = caller.tenant()?;
    let device = device_in_path(device)?;
    let command = load(&Db::open()?, tenant, &device, command)?;
    Ok(respond::json(200, &command))
}

/// The device's command `raw`, or 404.
pub fn load(
    db: &Db,
    tenant: &TenantId,
    device: &DeviceId,
    raw: &str,
) -> Result<CommandView, Problem> {
    if !is_id("cmd_", raw) {
        return Err(ControlError::NotFound.into());
    }
    let rows = db.query(
        &format!(
            "SELECT {COMMAND_COLUMNS} FROM commands c \
             WHERE c.tenant_id = $1 AND c.device_id = $2 AND c.command_id = $3"
        ),
        &[
            db::text(tenant.as_str()),
            db::text(device.as_str()),
            db::text(raw),
        ],
    )?;
    let row = rows.rows.first().ok_or(ControlError::NotFound)?;
    CommandView::from_row(row, 0)
}

/// `POST /v1/devices/{id}/commands/{command}/cancel`: only a queued command can be
/// canceled; canceling a canceled one again is 200.
pub fn cancel(req: &Request, device: &str, command: &str) -> Result<Response, Problem> {
    let caller = auth::authenticate(req, &[Role::Admin])?;
    let tenant = caller.tenant()?;
    let device = device_in_path(device)?;
    if !is_id("cmd_", command) {
        return Err(ControlError::NotFound.into());
    }
    let db = Db::open()?;
    let rows = db.query(
        &format!(
            "WITH c AS (UPDATE commands SET status = 'canceled', finished_at = now() \
               WHERE tenant_id = $1 AND device_id = $2 AND command_id = $3 \
               AND status = 'queued' AND expires_at > now() RETURNING *), \
             audit AS (INSERT INTO audit_log (tenant_id, actor_role, actor, action, target, details) \
               SELECT $1, 'admin', $4, 'command.canceled', c.device_id, \
               jsonb_build_object('command', c.command_id, 'name', c.name) FROM c) \
             SELECT {COMMAND_COLUMNS} FROM c"
        ),
        &[
            db::text(tenant.as_str()),
            db::text(device.as_str()),
            db::text(command),
            db::text(caller.subject.as_str()),
        ],
    )?;
    if let Some(row) = rows.rows.first() {
        return Ok(respond::json(200, &CommandView::from_row(row, 0)?));
    }
    let current = load(&db, tenant, &device, command)?;
    let status = Status::parse(&current.status).ok_or(ControlError::Corrupt("commands.status"))?;
    match rules::transition(status, Event::Cancel) {
        Ok(Outcome::Unchanged) => Ok(respond::json(200, &current)),
        // It was queued when read, so a fetch or an expiry came between: ask again.
        Ok(Outcome::Moves(_)) => Err(Problem::conflict(
            "the command changed while it was being canceled; read it and retry",
        )),
        Err(refused) => Err(ControlError::Lifecycle(refused).into()),
    }
}

/// `POST /v1/fleet/commands?model=&channel=&tag=` (or `all=true`): the same command
/// to every device the selector names, in one statement; devices whose queue is full
/// are skipped. With an `Idempotency-Key` already used, nothing new is queued and the
/// first send's batch is named.
pub fn send_fleet(req: &Request) -> Result<Response, Problem> {
    let caller = auth::authenticate(req, &[Role::Admin])?;
    let tenant = caller.tenant()?;
    let mut query = Query::parse(req.query())?;
    let selector = Selector::take(&mut query)?;
    query.finish()?;
    let send = Send::read(req)?;
    let queue = limits::queue()?;
    let batch = new_id("cb_")?;
    let (condition, selector_params) = selector.sql(10);
    let mut params: Vec<Param> = vec![
        db::text(tenant.as_str()),
        db::text(batch.as_str()),
        db::text(send.name.as_str()),
        db::jsonb(&send.parameters),
        db::opt_text(send.key.clone()),
        db::text(caller.subject.as_str()),
        db::int8(i64::from(send.ttl_secs)),
        db::int8(i64::from(queue)),
        db::jsonb(&selector.to_json()),
    ];
    params.extend(selector_params);
    let sql = fleet_sql(&condition);
    let db = Db::open()?;
    let rows = db.query(&sql, &params)?;
    let mut queued = 0usize;
    let mut selected = 0i64;
    for row in &rows.rows {
        selected = db::column(row, 0)?;
        let (Some(device), Some(seq)) = (
            db::column::<Option<String>>(row, 1)?,
            db::column::<Option<i64>>(row, 2)?,
        ) else {
            continue;
        };
        queued += 1;
        if let Ok(device) = DeviceId::parse(&device) {
            marker::write(tenant, &device, marker::commands(seq, true));
        }
    }
    let batch = match (&send.key, queued) {
        (Some(key), 0) => earlier_batch(&db, tenant, key)?.unwrap_or(batch),
        _ => batch,
    };
    Ok(respond::json(
        if queued > 0 { 201 } else { 200 },
        &json!({
            "batch_id": batch,
            "name": send.name.as_str(),
            "selector": selector.to_json(),
            "devices": selected,
            "queued": queued,
        }),
    ))
}

/// The statement of a fleet send: the devices selected (counted), the commands
/// inserted for those with room, one audit entry. One row per queued command, or one
/// row of NULLs when none was: `(selected, device_id, seq)`.
fn fleet_sql(condition: &str) -> String {
    format!(
        "WITH target AS (SELECT d.tenant_id, d.device_id FROM devices d \
           WHERE d.tenant_id = $1 AND {condition}), \
         ins AS (\
           INSERT INTO commands (tenant_id, device_id, command_id, name, parameters, \
                                 idempotency_key, batch_id, created_by, expires_at) \
           SELECT t.tenant_id, t.device_id, 'cmd_' || substr(md5(gen_random_uuid()::text), 1, 16), \
                  $3, $4::jsonb, $5, $2, $6, now() + $7::int8 * interval '1 second' \
           FROM target t \
           WHERE (SELECT count(*) FROM commands p WHERE p.tenant_id = t.tenant_id \
                  AND p.device_id = t.device_id AND p.status IN ('queued', 'delivered') \
                  AND p.expires_at > now()) < $8::int8 \
           ON CONFLICT (tenant_id, device_id, idempotency_key) \
             WHERE idempotency_key IS NOT NULL DO NOTHING \
           RETURNING device_id, seq), \
         audit AS (INSERT INTO audit_log (tenant_id, actor_role, actor, action, target, details) \
           SELECT $1, 'admin', $6, 'command.sent_fleet', 'fleet', \
           jsonb_build_object('batch', $2::text, 'name', $3::text, 'selector', $9::jsonb, \
             'devices', (SELECT count(*) FROM target), 'queued', (SELECT count(*) FROM ins))) \
         SELECT (SELECT count(*) FROM target), ins.device_id, ins.seq \
         FROM (SELECT 1) AS one LEFT JOIN ins ON true"
    )
}

/// The batch of the commands an earlier fleet send with `key` made.
fn earlier_batch(db: &Db, tenant: &TenantId, key: &str) -> Result<Option<String>, Problem> {
    let rows = db.query(
        "SELECT batch_id FROM commands WHERE tenant_id = $1 AND idempotency_key = $2 \
         AND batch_id IS NOT NULL ORDER BY seq LIMIT 1",
        &[db::text(tenant.as_str()), db::text(key)],
    )?;
    match rows.rows.first() {
        Some(row) => db::column(row, 0),
        None => Ok(None),
    }
}

/// `GET /v1/fleet/commands/{batch}`: how a fleet send's commands stand, counted by
/// status.
pub fn batch(req: &Request, batch: &str) -> Result<Response, Problem> {
    let caller = auth::authenticate(req, &[Role::Admin])?;
    let tenant = caller.tenant()?;
    if !is_id("cb_", batch) {
        return Err(ControlError::NotFound.into());
    }
    let db = Db::open()?;
    let rows = db.query(
        "SELECT c.name, CASE WHEN c.status IN ('queued', 'delivered') AND c.expires_at <= now() \
                THEN 'expired' ELSE c.status END AS shown, count(*) \
         FROM commands c WHERE c.tenant_id = $1 AND c.batch_id = $2 GROUP BY 1, 2",
        &[db::text(tenant.as_str()), db::text(batch)],
    )?;
    if rows.rows.is_empty() {
        return Err(ControlError::NotFound.into());
    }
    let mut name = String::new();
    let mut statuses = Map::new();
    let mut total = 0i64;
    for row in &rows.rows {
        name = db::column(row, 0)?;
        let count: i64 = db::column(row, 2)?;
        total += count;
        statuses.insert(db::column(row, 1)?, json!(count));
    }
    Ok(respond::json(
        200,
        &json!({"batch_id": batch, "name": name, "commands": total, "statuses": statuses}),
    ))
}
