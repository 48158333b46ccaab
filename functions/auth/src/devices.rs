//! The device registry (admin of the tenant): register, list, read, change, and
//! decommission devices. A device of another tenant is indistinguishable from a
//! missing one (404): every statement filters by the caller's tenant.
//!
//! Key rotation: `PATCH {"public_key": PEM}` adds a `pending` key beside the
//! `current` one (both may log in); the rotation completes when the device logs in with
//! the pending key, or when an admin sends `{"complete_rotation": true}`. Completing
//! makes the pending key current, deletes the old one and bumps the key generation,
//! so tokens obtained with the old key stop working too. Disabling and
//! decommissioning bump the generation as well; every change is written through to
//! the key-value cache that `toaster_platform::auth` checks.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use spin_sdk::http::{Request, Response};
use toaster_core::assertion::DevicePublicKey;
use toaster_core::device::{self as lifecycle, DeviceAction, LifecycleError};
use toaster_core::ids::{Channel, DeviceId, Model, Tag, TenantId};
use toaster_core::problem::{FieldError, Problem};
use toaster_core::token::Role;
use toaster_platform::auth;
use toaster_platform::db::{self, Db, DbValue};
use toaster_platform::kv::{self, DeviceState, DeviceStatus, LastKnown, LastValue};
use toaster_platform::query::{self, Query};
use toaster_platform::{body, respond, time};

use crate::audit::{self, Actor};
use crate::error::AuthError;

/// Most tags a device (or a claim) may carry.
pub const MAX_TAGS: usize = 32;

pub fn default_channel() -> Channel {
    Channel::parse("stable").unwrap_or_else(|_| unreachable!("\"stable\" is a valid channel"))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewDevice {
    id: DeviceId,
    model: Model,
    #[serde(default = "default_channel")]
    channel: Channel,
    #[serde(default)]
    tags: Vec<Tag>,
    public_key: String,
}

/// `POST /v1/devices`
pub fn create(req: &Request) -> Result<Response, Problem> {
    let caller = auth::authenticate(req, &[Role::Admin])?;
    let tenant = caller.tenant()?;
    let new: NewDevice = body::json(req)?;
    let tags = check_tags("/tags", new.tags)?;
    let key = parse_key("/public_key", &new.public_key)?;

    let db = Db::open()?;
    db.transaction(|db| {
        let row = NewDeviceRow {
            tenant,
            id: &new.id,
            model: &new.model,
            channel: &new.channel,
            tags: &tags,
            key: &key,
            claim_id: None,
        };
        if !insert(db, &row)? {
            return Err(AuthError::DeviceExists.into());
        }
        audit::record(
            db,
            tenant,
            &Actor::from(&caller),
            "device.created",
            new.id.as_str(),
            json!({
                "model": new.model, "channel": new.channel, "tags": tags,
                "key": {"algorithm": key.algorithm().jws_alg(), "fingerprint": key.fingerprint()},
            }),
        )
    })?;
    cache_state(tenant, &new.id, DeviceStatus::Active, 1);
    let view = load(&db, tenant, &new.id, true)?.ok_or_else(respond::internal)?;
    let mut response = respond::json(201, &view);
    response.set_header("location", format!("/v1/devices/{}", new.id));
    Ok(response)
}

/// A device to register, by an admin or through a claim.
pub struct NewDeviceRow<'a> {
    pub tenant: &'a TenantId,
    pub id: &'a DeviceId,
    pub model: &'a Model,
    pub channel: &'a Channel,
    pub tags: &'a [Tag],
    pub key: &'a DevicePublicKey,
    pub claim_id: Option<&'a str>,
}

/// Inserts the device and its current key; `false` if the id is taken in the tenant.
/// Call inside a transaction.
pub fn insert(db: &Db, row: &NewDeviceRow<'_>) -> Result<bool, Problem> {
    let inserted = db
        .try_query(
            "INSERT INTO devices (tenant_id, device_id, model, channel, tags, claim_id) \
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (tenant_id, device_id) DO NOTHING \
             RETURNING 1",
            &[
                db::text(row.tenant.as_str()),
                db::text(row.id.as_str()),
                db::text(row.model.as_str()),
                db::text(row.channel.as_str()),
                db::text_array_param(row.tags),
                db::opt_text(row.claim_id),
            ],
        )
        .map_err(|e| {
            if db::sqlstate(&e) == Some(db::FOREIGN_KEY_VIOLATION) {
                // An admin token minted offline for a tenant nobody created.
                AuthError::NoTenant.into()
            } else {
                db::unavailable_or_internal(&e)
            }
        })?;
    if inserted.rows.is_empty() {
        return Ok(false);
    }
    insert_key(db, row.tenant, row.id, "current", row.key)?;
    Ok(true)
}

fn insert_key(
    db: &Db,
    tenant: &TenantId,
    device: &DeviceId,
    state: &str,
    key: &DevicePublicKey,
) -> Result<(), Problem> {
    db.execute(
        "INSERT INTO device_keys (tenant_id, device_id, state, algorithm, public_key_pem, fingerprint) \
         VALUES ($1, $2, $3, $4, $5, $6) \
         ON CONFLICT (tenant_id, device_id, state) DO UPDATE SET algorithm = excluded.algorithm, \
         public_key_pem = excluded.public_key_pem, fingerprint = excluded.fingerprint, created_at = now()",
        &[
            db::text(tenant.as_str()),
            db::text(device.as_str()),
            db::text(state),
            db::text(key.algorithm().jws_alg()),
            db::text(key.to_pem()),
            db::text(key.fingerprint()),
        ],
    )?;
    Ok(())
}

/// `GET /v1/devices?model=&channel=&tag=&status=&q=&sort=&limit=&cursor=`
///
/// Each item carries `last_seen` (`devices.last_seen_at`, the UTC minute of the
/// device's latest telemetry batch, which the ingest statement writes; null if never).
/// `q` keeps the devices whose id contains it. `sort=id` (the default) orders by id;
/// `sort=last_seen` most recently seen first, never seen last, ties by id. Both page
/// by keyset, with a cursor that names its order: one sort's cursor is 400 with the
/// other.
pub fn list(req: &Request) -> Result<Response, Problem> {
    let caller = auth::authenticate(req, &[Role::Admin])?;
    let tenant = caller.tenant()?;
    let mut query = Query::parse(req.query())?;
    let model = query.take_parsed("model", Model::parse)?;
    let channel = query.take_parsed("channel", Channel::parse)?;
    let tag = query.take_parsed("tag", Tag::parse)?;
    let status = query.take_parsed("status", |s| {
        DeviceStatus::parse(s).ok_or("must be active, disabled or decommissioned")
    })?;
    let search = query.take_parsed("q", parse_search)?;
    let sort = query
        .take_parsed("sort", |s| match s {
            "id" => Ok(Sort::Id),
            "last_seen" => Ok(Sort::LastSeen),
            _ => Err("must be id or last_seen"),
        })?
        .unwrap_or(Sort::Id);
    let cursor = query.take_parsed("cursor", |v| {
        ListCursor::decode(sort, v).ok_or(query::NOT_A_CURSOR)
    })?;
    let limit = query.take_limit()?;
    query.finish()?;

    let (after_seen, after_id) = match &cursor {
        None => (None, None),
        Some(c) => (c.seen_ms, Some(c.id.to_string())),
    };
    // $7 (the cursor's last_seen, ms) and $8 (its id) are both NULL on the first page.
    // With sort=last_seen a NULL $7 after the first page means the cursor's device was
    // never seen: what follows is the never-seen devices after its id.
    let (keyset, order) = match sort {
        // An id cursor has no last_seen: $7 is NULL (every parameter must be used).
        Sort::Id => (
            "$7::int8 IS NULL AND ($8::text IS NULL OR d.device_id > $8)",
            "d.device_id",
        ),
        Sort::LastSeen => (
            "($8::text IS NULL \
              OR ($7::int8 IS NULL AND d.last_seen_at IS NULL AND d.device_id > $8) \
              OR ($7::int8 IS NOT NULL AND (d.last_seen_at IS NULL \
                  OR d.last_seen_at < timestamptz 'epoch' + $7 * interval '1 millisecond' \
                  OR (d.last_seen_at = timestamptz 'epoch' + $7 * interval '1 millisecond' \
                      AND d.device_id > $8))))",
            "d.last_seen_at DESC NULLS LAST, d.device_id",
        ),
    };
    let db = Db::open()?;
    let sql = format!(
        "{DEVICE_COLUMNS}, NULL::jsonb, \
         (extract(epoch from d.last_seen_at) * 1000)::int8 FROM devices d WHERE d.tenant_id = $1 \
         AND ($2::text IS NULL OR d.model = $2) \
         AND ($3::text IS NULL OR d.channel = $3) \
         AND ($4::text IS NULL OR d.tags @> ARRAY[$4::text]) \
         AND ($5::text IS NULL OR d.status = $5) \
         AND ($6::text IS NULL OR strpos(d.device_id, $6) > 0) \
         AND {keyset} ORDER BY {order} LIMIT $9"
    );
    let rows = db.query(
        &sql,
        &[
            db::text(tenant.as_str()),
            db::opt_text(model.map(|m| m.to_string())),
            db::opt_text(channel.map(|c| c.to_string())),
            db::opt_text(tag.map(|t| t.to_string())),
            db::opt_text(status.map(|s| s.as_str())),
            db::opt_text(search),
            db::opt_int8(after_seen),
            db::opt_text(after_id),
            db::int8(i64::from(limit) + 1),
        ],
    )?;
    let items = rows
        .rows
        .iter()
        .map(|row| {
            let seen_ms: Option<i64> = db::column(row, 10)?;
            Ok(ListedDevice {
                device: DeviceView::from_row(row)?,
                last_seen: seen_ms.map(time::rfc3339_ms),
                seen_ms,
            })
        })
        .collect::<Result<Vec<_>, Problem>>()?;
    Ok(respond::page(items, limit, |d| {
        Some(
            ListCursor {
                id: d.device.id.clone(),
                seen_ms: d.seen_ms,
            }
            .encode(sort),
        )
    }))
}

/// A device list's order (`sort=`).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Sort {
    Id,
    LastSeen,
}

/// A device as the list shows it: the registry entry and when it was last seen.
#[derive(Serialize)]
struct ListedDevice {
    #[serde(flatten)]
    device: DeviceView,
    last_seen: Option<String>,
    #[serde(skip)]
    seen_ms: Option<i64>,
}

/// `q`: 1 to 128 of the characters a device id may hold (a leading `.` is fine here:
/// it is part of an id, not one).
fn parse_search(value: &str) -> Result<String, String> {
    let ok = (1..=DeviceId::MAX_LEN).contains(&value.len())
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'));
    if ok {
        Ok(value.to_owned())
    } else {
        Err(format!(
            "must be 1 to {} of A-Z, a-z, 0-9, '.', '_', ':' and '-'",
            DeviceId::MAX_LEN
        ))
    }
}

/// The key of the last device a page showed, in the page's order.
#[derive(Debug, PartialEq, Eq)]
struct ListCursor {
    id: String,
    /// With `sort=last_seen`: its `last_seen` (Unix ms), `None` if never seen.
    seen_ms: Option<i64>,
}

/// The list names in the device list's cursors, one per order. The key is the last
/// device shown (with `sort=last_seen`, its last-seen time first: `<ms>/<id>`, or
/// `never/<id>`), encoded ([`query::encode_cursor`]) because a bare id is something a
/// client may write: `?cursor=zzzz` would read as "the devices after zzzz", an empty
/// page.
const DEVICE_CURSOR: &str = "devices";
const DEVICE_SEEN_CURSOR: &str = "devices.last_seen";

impl ListCursor {
    fn encode(&self, sort: Sort) -> String {
        match sort {
            Sort::Id => query::encode_cursor(DEVICE_CURSOR, &self.id),
            Sort::LastSeen => {
                let seen = self
                    .seen_ms
                    .map_or_else(|| "never".to_owned(), |ms| ms.to_string());
                query::encode_cursor(DEVICE_SEEN_CURSOR, &format!("{seen}/{}", self.id))
            }
        }
    }

    fn decode(sort: Sort, cursor: &str) -> Option<ListCursor> {
        match sort {
            Sort::Id => {
                let key = query::decode_cursor(DEVICE_CURSOR, cursor)?;
                let id = DeviceId::parse(&key).ok()?;
                Some(ListCursor {
                    id: id.to_string(),
                    seen_ms: None,
                })
            }
            Sort::LastSeen => {
                let key = query::decode_cursor(DEVICE_SEEN_CURSOR, cursor)?;
                let (seen, id) = key.split_once('/')?;
                let seen_ms = match seen {
                    "never" => None,
                    ms => Some(ms.parse::<i64>().ok().filter(|ms| *ms >= 0)?),
                };
                let id = DeviceId::parse(id).ok()?;
                Some(ListCursor {
                    id: id.to_string(),
                    seen_ms,
                })
            }
        }
    }
}

/// `GET /v1/devices/{id}`: the registry entry, its keys, and the last-known values
/// ingest left in the key-value store (`last_seen`, `metrics`).
pub fn get(req: &Request, device: &str) -> Result<Response, Problem> {
    let caller = auth::authenticate(req, &[Role::Admin])?;
    let tenant = caller.tenant()?;
    let device = device_in_path(device)?;
    let db = Db::open()?;
    let view = load(&db, tenant, &device, true)?.ok_or_else(Problem::not_found)?;
    let mut body = serde_json::to_value(&view).map_err(|_| respond::internal())?;
    let last = last_known(tenant, &device);
    body["last_seen"] = json!(last.as_ref().map(|l| time::rfc3339_ms(l.last_seen_ms)));
    let metrics: BTreeMap<&str, Value> = last
        .as_ref()
        .map(|l| {
            l.metrics
                .iter()
                .map(|(name, reading)| {
                    let value = match reading.value {
                        LastValue::Bool(b) => json!(b),
                        LastValue::Number(n) => json!(n),
                    };
                    (
                        name.as_str(),
                        json!({"ts": time::rfc3339_ms(reading.ts_ms), "value": value}),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    body["metrics"] = json!(metrics);
    Ok(respond::json(200, &body))
}

fn last_known(tenant: &TenantId, device: &DeviceId) -> Option<LastKnown> {
    let key = kv::last_key(tenant, device);
    match kv::open().and_then(|store| kv::get_json::<LastKnown>(&store, &key)) {
        Ok(last) => last,
        Err(e) => {
            // Last-known values are a convenience; the registry entry is still right.
            eprintln!("auth: cannot read {key}: {}", kv::describe(&e));
            None
        }
    }
}

#[derive(Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
enum RequestedStatus {
    Active,
    Disabled,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DevicePatch {
    status: Option<RequestedStatus>,
    public_key: Option<String>,
    complete_rotation: Option<bool>,
    channel: Option<Channel>,
    tags: Option<Vec<Tag>>,
}

/// `PATCH /v1/devices/{id}`: enable/disable, start or complete a key rotation, change
/// channel or tags. Applied in that order, in one transaction.
pub fn patch(req: &Request, device: &str) -> Result<Response, Problem> {
    let caller = auth::authenticate(req, &[Role::Admin])?;
    let tenant = caller.tenant()?;
    let device = device_in_path(device)?;
    let patch: DevicePatch = body::json(req)?;
    let new_key = patch
        .public_key
        .as_deref()
        .map(|pem| parse_key("/public_key", pem))
        .transpose()?;
    let tags = patch.tags.map(|t| check_tags("/tags", t)).transpose()?;
    if patch.status.is_none()
        && new_key.is_none()
        && patch.complete_rotation.is_none()
        && patch.channel.is_none()
        && tags.is_none()
    {
        return Err(Problem::unprocessable(vec![FieldError::new(
            "",
            "name at least one of status, public_key, complete_rotation, channel, tags",
        )]));
    }
    let actor = Actor::from(&caller);

    let db = Db::open()?;
    let (status, generation) = db.transaction(|db| {
        let (mut status, mut generation) =
            lock(db, tenant, &device)?.ok_or_else(Problem::not_found)?;
        if status == DeviceStatus::Decommissioned {
            return Err(LifecycleError::Decommissioned.into());
        }
        if let Some(key) = &new_key {
            start_rotation(db, tenant, &device, &actor, key)?;
        }
        if patch.complete_rotation == Some(true) {
            finish_rotation(db, tenant, &device, &actor)?;
            generation += 1;
        }
        if let Some(requested) = patch.status {
            let action = match requested {
                RequestedStatus::Active => DeviceAction::Enable,
                RequestedStatus::Disabled => DeviceAction::Disable,
            };
            let change = lifecycle::transition(status, action)?;
            status = change.status;
            generation += i64::from(change.bump_generation);
            if let Some(what) = change.audit {
                audit::record(db, tenant, &actor, what, device.as_str(), json!({}))?;
            }
        }
        if patch.channel.is_some() || tags.is_some() {
            audit::record(
                db,
                tenant,
                &actor,
                "device.updated",
                device.as_str(),
                json!({"channel": patch.channel, "tags": tags}),
            )?;
        }
        db.execute(
            "UPDATE devices SET status = $3, key_generation = $4, \
             channel = coalesce($5, channel), tags = coalesce($6::text[], tags), updated_at = now() \
             WHERE tenant_id = $1 AND device_id = $2",
            &[
                db::text(tenant.as_str()),
                db::text(device.as_str()),
                db::text(status.as_str()),
                db::int8(generation),
                db::opt_text(patch.channel.as_ref().map(|c| c.to_string())),
                tags.as_deref()
                    .map_or(db::null(), db::text_array_param),
            ],
        )?;
        Ok((status, generation))
    })?;
    cache_state(tenant, &device, status, generation);
    let view = load(&db, tenant, &device, true)?.ok_or_else(Problem::not_found)?;
    Ok(respond::json(200, &view))
}

/// `PATCH {"public_key"}`: adds `key` as the device's pending key, audited. 409 if it
/// is already the current one. Inside the patch's transaction.
fn start_rotation(
    db: &Db,
    tenant: &TenantId,
    device: &DeviceId,
    actor: &Actor,
    key: &DevicePublicKey,
) -> Result<(), Problem> {
    let current = current_fingerprint(db, tenant, device)?;
    if current.as_deref() == Some(key.fingerprint().as_str()) {
        return Err(AuthError::AlreadyCurrentKey.into());
    }
    insert_key(db, tenant, device, "pending", key)?;
    audit::record(
        db,
        tenant,
        actor,
        "device.key_rotation_started",
        device.as_str(),
        json!({"algorithm": key.algorithm().jws_alg(), "fingerprint": key.fingerprint()}),
    )
}

/// `PATCH {"complete_rotation": true}`: the pending key becomes current, audited; the
/// caller bumps the key generation. 409 when no rotation is in progress.
fn finish_rotation(
    db: &Db,
    tenant: &TenantId,
    device: &DeviceId,
    actor: &Actor,
) -> Result<(), Problem> {
    let Some(fingerprint) = complete_rotation(db, tenant, device)? else {
        return Err(AuthError::NoRotation.into());
    };
    audit::record(
        db,
        tenant,
        actor,
        "device.key_rotated",
        device.as_str(),
        json!({"fingerprint": fingerprint, "completed_by": "admin"}),
    )
}

/// Makes the pending key current and deletes the old one; the pending key's
/// fingerprint, or `None` when no rotation is in progress. The caller bumps the key
/// generation. Call inside a transaction that holds the device's row lock.
pub fn complete_rotation(
    db: &Db,
    tenant: &TenantId,
    device: &DeviceId,
) -> Result<Option<String>, Problem> {
    let params = [db::text(tenant.as_str()), db::text(device.as_str())];
    let pending = db.query(
        "SELECT fingerprint FROM device_keys \
         WHERE tenant_id = $1 AND device_id = $2 AND state = 'pending'",
        &params,
    )?;
    let Some(row) = pending.rows.first() else {
        return Ok(None);
    };
    let fingerprint: String = db::column(row, 0)?;
    db.execute(
        "DELETE FROM device_keys WHERE tenant_id = $1 AND device_id = $2 AND state = 'current'",
        &params,
    )?;
    db.execute(
        "UPDATE device_keys SET state = 'current' \
         WHERE tenant_id = $1 AND device_id = $2 AND state = 'pending'",
        &params,
    )?;
    Ok(Some(fingerprint))
}

/// `DELETE /v1/devices/{id}[?erase=true]`: decommissions the device (its keys are
/// deleted, its tokens revoked, the `jti`s of its used assertions forgotten since it
/// can never log in again; the row stays so the id is not reused). With `erase=true`
/// its telemetry, OTA progress, state documents, commands and every key-value entry
/// go too.
pub fn delete(req: &Request, device: &str) -> Result<Response, Problem> {
    let caller = auth::authenticate(req, &[Role::Admin])?;
    let tenant = caller.tenant()?;
    let device = device_in_path(device)?;
    let mut query = Query::parse(req.query())?;
    let erase = query.take_bool("erase")?;
    query.finish()?;
    let actor = Actor::from(&caller);

    let db = Db::open()?;
    let generation = db.transaction(|db| {
        let (status, generation) = lock(db, tenant, &device)?.ok_or_else(Problem::not_found)?;
        let change = lifecycle::transition(status, DeviceAction::Decommission)?;
        let generation = generation + i64::from(change.bump_generation);
        let params = [db::text(tenant.as_str()), db::text(device.as_str())];
        db.execute(
            "UPDATE devices SET status = 'decommissioned', key_generation = $3, updated_at = now() \
             WHERE tenant_id = $1 AND device_id = $2",
            &[params[0].clone(), params[1].clone(), db::int8(generation)],
        )?;
        db.execute(
            "DELETE FROM device_keys WHERE tenant_id = $1 AND device_id = $2",
            &params,
        )?;
        db.execute(
            "DELETE FROM used_assertions WHERE tenant_id = $1 AND device_id = $2",
            &params,
        )?;
        let mut details = json!({"erase": erase});
        if erase {
            let rollout_rows = db.execute(
                "DELETE FROM rollout_devices WHERE tenant_id = $1 AND device_id = $2",
                &params,
            )?;
            details["rollout_rows_erased"] = json!(rollout_rows);
            let readings = db.execute(
                "DELETE FROM telemetry WHERE tenant_id = $1 AND device_id = $2",
                &params,
            )?;
            details["telemetry_rows_erased"] = json!(readings);
            // The rollups are aggregates of the erased readings: they go too.
            let mut rollups = 0;
            for table in ["rollup_minute", "rollup_hour"] {
                rollups += db.execute(
                    &format!("DELETE FROM {table} WHERE tenant_id = $1 AND device_id = $2"),
                    &params,
                )?;
            }
            details["rollup_rows_erased"] = json!(rollups);
            // Its state documents and commands (the control component's tables).
            let state_rows = db.execute(
                "DELETE FROM device_state WHERE tenant_id = $1 AND device_id = $2",
                &params,
            )?;
            details["state_rows_erased"] = json!(state_rows);
            let commands = db.execute(
                "DELETE FROM commands WHERE tenant_id = $1 AND device_id = $2",
                &params,
            )?;
            details["command_rows_erased"] = json!(commands);
        }
        let what = change.audit.unwrap_or("device.decommissioned");
        audit::record(db, tenant, &actor, what, device.as_str(), details)?;
        Ok(generation)
    })?;
    if erase {
        erase_cached(tenant, &device);
    } else {
        cache_state(tenant, &device, DeviceStatus::Decommissioned, generation);
    }
    Ok(respond::empty(204))
}

fn erase_cached(tenant: &TenantId, device: &DeviceId) {
    match kv::open() {
        Ok(store) => {
            for key in kv::device_keys(tenant, device) {
                if let Err(e) = store.delete(&key) {
                    eprintln!("auth: cannot erase {key}: {}", kv::describe(&e));
                }
            }
        }
        Err(e) => eprintln!("auth: cannot erase cached state: {}", kv::describe(&e)),
    }
}

/// Writes the committed state through to the cache the other components check.
pub fn cache_state(tenant: &TenantId, device: &DeviceId, status: DeviceStatus, generation: i64) {
    auth::cache_device_state(
        tenant,
        device,
        &DeviceState {
            status,
            key_generation: u64::try_from(generation).unwrap_or(0),
            checked_ms: time::now_ms(),
        },
    );
}

/// Locks the device's row for the transaction: its status and key generation.
pub fn lock(
    db: &Db,
    tenant: &TenantId,
    device: &DeviceId,
) -> Result<Option<(DeviceStatus, i64)>, Problem> {
    let rows = db.query(
        "SELECT status, key_generation FROM devices \
         WHERE tenant_id = $1 AND device_id = $2 FOR UPDATE",
        &[db::text(tenant.as_str()), db::text(device.as_str())],
    )?;
    let Some(row) = rows.rows.first() else {
        return Ok(None);
    };
    let status: String = db::column(row, 0)?;
    let status = DeviceStatus::parse(&status).ok_or_else(respond::internal)?;
    Ok(Some((status, db::column(row, 1)?)))
}

fn current_fingerprint(
    db: &Db,
    tenant: &TenantId,
    device: &DeviceId,
) -> Result<Option<String>, Problem> {
    let rows = db.query(
        "SELECT fingerprint FROM device_keys \
         WHERE tenant_id = $1 AND device_id = $2 AND state = 'current'",
        &[db::text(tenant.as_str()), db::text(device.as_str())],
    )?;
    rows.rows.first().map(|row| db::column(row, 0)).transpose()
}

/// A device id from the path. One that cannot be an id names no device: 404.
fn device_in_path(raw: &str) -> Result<DeviceId, Problem> {
    toaster_platform::router::path_segment(raw)
        .and_then(|id| DeviceId::parse(&id).ok())
        .ok_or_else(Problem::not_found)
}

/// Parses a public key field; 422 at `pointer` with the reason (never the key).
pub fn parse_key(pointer: &str, pem: &str) -> Result<DevicePublicKey, Problem> {
    DevicePublicKey::from_pem(pem)
        .map_err(|e| Problem::unprocessable(vec![FieldError::new(pointer, e.to_string())]))
}

/// At most [`MAX_TAGS`], duplicates removed, sorted.
pub fn check_tags(pointer: &str, mut tags: Vec<Tag>) -> Result<Vec<Tag>, Problem> {
    if tags.len() > MAX_TAGS {
        return Err(Problem::unprocessable(vec![FieldError::new(
            pointer,
            format!("at most {MAX_TAGS} tags"),
        )]));
    }
    tags.sort();
    tags.dedup();
    Ok(tags)
}

/// The registry columns, in [`DeviceView::from_row`]'s order; the caller appends the
/// keys column (or `NULL::jsonb`) and the rest of the statement.
const DEVICE_COLUMNS: &str = "SELECT d.device_id, d.model, d.channel, d.tags, d.status, \
     d.key_generation, d.claim_id, (extract(epoch from d.created_at) * 1000)::int8, \
     (extract(epoch from d.updated_at) * 1000)::int8";

const KEYS_COLUMN: &str = "(SELECT coalesce(jsonb_agg(jsonb_build_object(\
     'state', k.state, 'algorithm', k.algorithm, 'fingerprint', k.fingerprint, \
     'public_key', k.public_key_pem, \
     'created_ms', (extract(epoch from k.created_at) * 1000)::int8) ORDER BY k.state), '[]'::jsonb) \
     FROM device_keys k WHERE k.tenant_id = d.tenant_id AND k.device_id = d.device_id)";

/// One device with its keys (`with_keys`), or `None` if the tenant has no such device.
pub fn load(
    db: &Db,
    tenant: &TenantId,
    device: &DeviceId,
    with_keys: bool,
) -> Result<Option<DeviceView>, Problem> {
    let keys = if with_keys {
        KEYS_COLUMN
    } else {
        "NULL::jsonb"
    };
    let sql = format!(
        "{DEVICE_COLUMNS}, {keys} FROM devices d WHERE d.tenant_id = $1 AND d.device_id = $2"
    );
    let rows = db.query(
        &sql,
        &[db::text(tenant.as_str()), db::text(device.as_str())],
    )?;
    rows.rows
        .first()
        .map(|r| DeviceView::from_row(r))
        .transpose()
}

#[derive(Serialize)]
pub struct DeviceView {
    pub id: String,
    pub model: String,
    pub channel: String,
    pub tags: Vec<String>,
    pub status: String,
    pub key_generation: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub claim_id: Option<String>,
    pub created_at: String,
    pub updated_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub keys: Option<Vec<KeyView>>,
}

#[derive(Serialize)]
pub struct KeyView {
    state: String,
    algorithm: String,
    fingerprint: String,
    public_key: String,
    created_at: String,
}

#[derive(Deserialize)]
struct KeyRow {
    state: String,
    algorithm: String,
    fingerprint: String,
    public_key: String,
    created_ms: i64,
}

impl DeviceView {
    fn from_row(row: &[DbValue]) -> Result<DeviceView, Problem> {
        let keys: Option<Value> = db::column(row, 9)?;
        let keys = keys
            .map(|v| {
                serde_json::from_value::<Vec<KeyRow>>(v).map_err(|e| {
                    eprintln!("auth: unreadable keys column: {e}");
                    respond::internal()
                })
            })
            .transpose()?
            .map(|keys| {
                keys.into_iter()
                    .map(|k| KeyView {
                        state: k.state,
                        algorithm: k.algorithm,
                        fingerprint: k.fingerprint,
                        public_key: k.public_key,
                        created_at: time::rfc3339_ms(k.created_ms),
                    })
                    .collect()
            });
        Ok(DeviceView {
            id: db::column(row, 0)?,
            model: db::column(row, 1)?,
            channel: db::column(row, 2)?,
            tags: db::text_array(row, 3)?,
            status: db::column(row, 4)?,
            key_generation: db::column(row, 5)?,
            claim_id: db::column(row, 6)?,
            created_at: time::rfc3339_ms(db::column(row, 7)?),
            updated_at: time::rfc3339_ms(db::column(row, 8)?),
            keys,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_cursors_round_trip_in_their_own_sort_only() {
        let seen = ListCursor {
            id: "sn:01".to_owned(),
            seen_ms: Some(1_700_000_040_000),
        };
        let never = ListCursor {
            id: "sn-2".to_owned(),
            seen_ms: None,
        };
        let by_id = ListCursor {
            id: "sn-3".to_owned(),
            seen_ms: None,
        };
        for cursor in [&seen, &never] {
            let text = cursor.encode(Sort::LastSeen);
            assert_eq!(
                ListCursor::decode(Sort::LastSeen, &text).as_ref(),
                Some(cursor)
            );
            assert_eq!(ListCursor::decode(Sort::Id, &text), None, "{text}");
        }
        let text = by_id.encode(Sort::Id);
        assert_eq!(ListCursor::decode(Sort::Id, &text), Some(by_id));
        assert_eq!(ListCursor::decode(Sort::LastSeen, &text), None);
        for bad in [
            "zzzz".to_owned(),
            query::encode_cursor(DEVICE_SEEN_CURSOR, "sn-1"),
            query::encode_cursor(DEVICE_SEEN_CURSOR, "-5/sn-1"),
            query::encode_cursor(DEVICE_SEEN_CURSOR, "x/sn-1"),
            query::encode_cursor(DEVICE_SEEN_CURSOR, "never/.sn"),
        ] {
            assert_eq!(ListCursor::decode(Sort::LastSeen, &bad), None, "{bad}");
        }
    }

    #[test]
    fn a_search_is_made_of_id_characters() {
        assert_eq!(parse_search(".x:1_-").as_deref(), Ok(".x:1_-"));
        for bad in ["", "a b", "a/b", "é", &"a".repeat(129)] {
            assert!(parse_search(bad).is_err(), "{bad:?}");
        }
    }
}
