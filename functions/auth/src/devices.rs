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

    let details = json!({
        "model": new.model, "channel": new.channel, "tags": tags,
        "key": {"algorithm": key.algorithm().jws_alg(), "fingerprint": key.fingerprint()},
    });
    let db = Db::open()?;
    // One statement: the device, its current key and the audit entry, or (the id is
    // taken in the tenant: a unique violation) none of them.
    db.try_execute(
        &format!(
            "WITH d AS (INSERT INTO devices (tenant_id, device_id, model, channel, tags) \
             VALUES ($1, $2, $3, $4, $5) RETURNING tenant_id, device_id), \
             k AS (INSERT INTO device_keys (tenant_id, device_id, state, algorithm, public_key_pem, fingerprint) \
             SELECT tenant_id, device_id, 'current', $6, $7, $8 FROM d) \
             {} SELECT tenant_id, $9::text, $10::text, 'device.created', device_id, $11::jsonb FROM d",
            audit::INSERT
        ),
        &[
            db::text(tenant.as_str()),
            db::text(new.id.as_str()),
            db::text(new.model.as_str()),
            db::text(new.channel.as_str()),
            db::text_array_param(&tags),
            db::text(key.algorithm().jws_alg()),
            db::text(key.to_pem()),
            db::text(key.fingerprint()),
            db::text(Actor::from(&caller).role),
            db::text(caller.subject.as_str()),
            db::jsonb(&details),
        ],
    )
    .map_err(|e| insert_failed(&e))?;
    cache_state(tenant, &new.id, DeviceStatus::Active, 1);
    let view = load(&db, tenant, &new.id, true)?.ok_or_else(respond::internal)?;
    let mut response = respond::json(201, &view);
    response.set_header("location", format!("/v1/devices/{}", new.id));
    Ok(response)
}

/// The problem for a failed statement that inserts a device: 409 when the id is taken
/// in the tenant, 403 when the tenant does not exist (an admin token minted offline for
/// a tenant nobody created), else 503 or 500.
pub fn insert_failed(error: &spin_sdk::pg4::PgError) -> Problem {
    match db::sqlstate(error) {
        Some(db::UNIQUE_VIOLATION) => AuthError::DeviceExists.into(),
        Some(db::FOREIGN_KEY_VIOLATION) => AuthError::NoTenant.into(),
        _ => db::unavailable_or_internal(error),
    }
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
/// channel or tags. Applied in that order, in one statement ([`patch_once`]).
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
    let request = Patch {
        new_key: new_key.as_ref(),
        complete_rotation: patch.complete_rotation == Some(true),
        status: patch.status,
        channel: patch.channel.as_ref(),
        tags: tags.as_deref(),
    };
    let mut outcome = None;
    for _ in 0..MAX_ATTEMPTS {
        outcome = patch_once(&db, tenant, &device, &actor, &request)?;
        if outcome.is_some() {
            break;
        }
    }
    let Some((status, generation)) = outcome else {
        return Err(busy());
    };
    cache_state(tenant, &device, status, generation);
    let view = load(&db, tenant, &device, true)?.ok_or_else(Problem::not_found)?;
    Ok(respond::json(200, &view))
}

/// How often a change decided on a read is tried before giving up with 503 (see
/// [`patch_once`]). A miss means the device row changed between the read and the
/// write, which takes another writer at that very moment.
pub const MAX_ATTEMPTS: usize = 5;

/// 503: the device kept changing under [`MAX_ATTEMPTS`] attempts.
pub fn busy() -> Problem {
    Problem::unavailable(db::RETRY_AFTER_SECS)
        .with_detail("the device is being changed by other requests; retry later")
}

/// What a `PATCH` asks, validated.
struct Patch<'a> {
    new_key: Option<&'a DevicePublicKey>,
    complete_rotation: bool,
    status: Option<RequestedStatus>,
    channel: Option<&'a Channel>,
    tags: Option<&'a [Tag]>,
}

/// A key row to write (`jsonb_to_recordset` in [`patch_once`]); `created_us` `None`
/// for a key added now.
#[derive(Serialize)]
struct KeyWrite {
    state: &'static str,
    algorithm: String,
    public_key_pem: String,
    fingerprint: String,
    created_us: Option<i64>,
}

#[derive(Deserialize)]
struct StoredKey {
    algorithm: String,
    public_key_pem: String,
    fingerprint: String,
    created_us: i64,
}

/// What [`patch_once`] decides on: the device's status, key generation, row version,
/// current key's fingerprint and pending key. 404 if the tenant has no such device.
type PatchBasis = (DeviceStatus, i64, String, Option<String>, Option<KeyWrite>);

fn read_for_patch(db: &Db, tenant: &TenantId, device: &DeviceId) -> Result<PatchBasis, Problem> {
    let rows = db.query(
        "SELECT d.status, d.key_generation, d.xmin::text, \
         (SELECT k.fingerprint FROM device_keys k WHERE k.tenant_id = d.tenant_id \
          AND k.device_id = d.device_id AND k.state = 'current'), \
         (SELECT jsonb_build_object('algorithm', k.algorithm, 'public_key_pem', k.public_key_pem, \
          'fingerprint', k.fingerprint, 'created_us', (extract(epoch from k.created_at) * 1000000)::int8) \
          FROM device_keys k WHERE k.tenant_id = d.tenant_id AND k.device_id = d.device_id \
          AND k.state = 'pending') \
         FROM devices d WHERE d.tenant_id = $1 AND d.device_id = $2",
        &[db::text(tenant.as_str()), db::text(device.as_str())],
    )?;
    let row = rows.rows.first().ok_or_else(Problem::not_found)?;
    let status: String = db::column(row, 0)?;
    let status = DeviceStatus::parse(&status).ok_or_else(respond::internal)?;
    let generation: i64 = db::column(row, 1)?;
    let version: String = db::column(row, 2)?;
    let current: Option<String> = db::column(row, 3)?;
    let pending: Option<Value> = db::column(row, 4)?;
    let pending = pending
        .map(|v| {
            serde_json::from_value::<StoredKey>(v).map_err(|e| {
                eprintln!("auth: unreadable pending key: {e}");
                respond::internal()
            })
        })
        .transpose()?
        .map(|k| KeyWrite {
            state: "pending",
            algorithm: k.algorithm,
            public_key_pem: k.public_key_pem,
            fingerprint: k.fingerprint,
            created_us: Some(k.created_us),
        });
    Ok((status, generation, version, current, pending))
}

/// One attempt at a `PATCH`: reads the device (status, key generation, keys, and the
/// row version `xmin`), decides in Rust (lifecycle, rotation; 404 and 409 here), then
/// writes everything in one statement (device row, keys, audit entries) that applies
/// only if the row is still the version read. `None` when it was not (another write
/// came between): nothing was written, and the caller tries again. Every change to a
/// device's status, generation or keys updates its row, so the version covers them.
fn patch_once(
    db: &Db,
    tenant: &TenantId,
    device: &DeviceId,
    actor: &Actor,
    patch: &Patch<'_>,
) -> Result<Option<(DeviceStatus, i64)>, Problem> {
    let (mut status, mut generation, version, current, mut pending) =
        read_for_patch(db, tenant, device)?;
    if status == DeviceStatus::Decommissioned {
        return Err(LifecycleError::Decommissioned.into());
    }
    // The audit entries, in the order the changes apply.
    let mut entries: Vec<Value> = Vec::new();
    let mut writes: Vec<KeyWrite> = Vec::new();
    let mut deletes: Vec<&str> = Vec::new();
    if let Some(key) = patch.new_key {
        if current.as_deref() == Some(key.fingerprint().as_str()) {
            return Err(AuthError::AlreadyCurrentKey.into());
        }
        pending = Some(KeyWrite {
            state: "pending",
            algorithm: key.algorithm().jws_alg().to_owned(),
            public_key_pem: key.to_pem(),
            fingerprint: key.fingerprint(),
            created_us: None,
        });
        entries.push(json!({
            "action": "device.key_rotation_started",
            "details": {"algorithm": key.algorithm().jws_alg(), "fingerprint": key.fingerprint()},
        }));
    }
    if patch.complete_rotation {
        // The pending key (the one just added, if any) becomes current; the old
        // current key is overwritten, the pending row deleted.
        let Some(key) = pending.take() else {
            return Err(AuthError::NoRotation.into());
        };
        entries.push(json!({
            "action": "device.key_rotated",
            "details": {"fingerprint": key.fingerprint, "completed_by": "admin"},
        }));
        writes.push(KeyWrite {
            state: "current",
            ..key
        });
        deletes.push("pending");
        generation += 1;
    } else if patch.new_key.is_some() {
        writes.extend(pending.take());
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
            entries.push(json!({"action": what, "details": {}}));
        }
    }
    if patch.channel.is_some() || patch.tags.is_some() {
        entries.push(json!({
            "action": "device.updated",
            "details": {"channel": patch.channel, "tags": patch.tags},
        }));
    }
    let writes = serde_json::to_value(&writes).map_err(|_| respond::internal())?;
    let applied = db.query(
        &format!(
            "WITH d AS (UPDATE devices SET status = $3, key_generation = $4, \
             channel = coalesce($5, channel), tags = coalesce($6::text[], tags), updated_at = now() \
             WHERE tenant_id = $1 AND device_id = $2 AND xmin::text = $7 \
             RETURNING tenant_id, device_id), \
             k AS (INSERT INTO device_keys (tenant_id, device_id, state, algorithm, public_key_pem, fingerprint, created_at) \
             SELECT d.tenant_id, d.device_id, x.state, x.algorithm, x.public_key_pem, x.fingerprint, \
             coalesce(timestamptz 'epoch' + x.created_us * interval '1 microsecond', now()) \
             FROM d, jsonb_to_recordset($8::jsonb) AS x (state text, algorithm text, \
             public_key_pem text, fingerprint text, created_us int8) \
             ON CONFLICT (tenant_id, device_id, state) DO UPDATE SET algorithm = excluded.algorithm, \
             public_key_pem = excluded.public_key_pem, fingerprint = excluded.fingerprint, \
             created_at = excluded.created_at), \
             g AS (DELETE FROM device_keys k USING d WHERE k.tenant_id = d.tenant_id \
             AND k.device_id = d.device_id AND k.state = ANY ($9::text[])), \
             a AS ({} SELECT d.tenant_id, $10::text, $11::text, e.action, d.device_id, e.details \
             FROM d, ROWS FROM (jsonb_to_recordset($12::jsonb) AS (action text, details jsonb)) \
             WITH ORDINALITY AS e (action, details, n) ORDER BY e.n) \
             SELECT count(*) FROM d",
            audit::INSERT
        ),
        &[
            db::text(tenant.as_str()),
            db::text(device.as_str()),
            db::text(status.as_str()),
            db::int8(generation),
            db::opt_text(patch.channel.map(|c| c.to_string())),
            patch.tags.map_or(db::null(), db::text_array_param),
            db::text(version),
            db::jsonb(&writes),
            db::text_array_param(&deletes),
            db::text(actor.role),
            db::text(actor.name),
            db::jsonb(&Value::Array(entries)),
        ],
    )?;
    let row = applied.rows.first().ok_or_else(respond::internal)?;
    Ok((db::column::<i64>(row, 0)? > 0).then_some((status, generation)))
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

    // One statement. Decommissioning is allowed from every state
    // ([`lifecycle::transition`]): the generation goes up unless the device was
    // decommissioned already, and the entry is recorded every time (it may erase
    // data again). With `erase`, the details count what each table lost.
    let erased = if erase {
        "r AS (DELETE FROM rollout_devices WHERE tenant_id = $1 AND device_id = $2 \
           AND EXISTS (SELECT 1 FROM d) RETURNING 1), \
         t AS (DELETE FROM telemetry WHERE tenant_id = $1 AND device_id = $2 \
           AND EXISTS (SELECT 1 FROM d) RETURNING 1), \
         m AS (DELETE FROM rollup_minute WHERE tenant_id = $1 AND device_id = $2 \
           AND EXISTS (SELECT 1 FROM d) RETURNING 1), \
         h AS (DELETE FROM rollup_hour WHERE tenant_id = $1 AND device_id = $2 \
           AND EXISTS (SELECT 1 FROM d) RETURNING 1), \
         s AS (DELETE FROM device_state WHERE tenant_id = $1 AND device_id = $2 \
           AND EXISTS (SELECT 1 FROM d) RETURNING 1), \
         c AS (DELETE FROM commands WHERE tenant_id = $1 AND device_id = $2 \
           AND EXISTS (SELECT 1 FROM d) RETURNING 1),"
    } else {
        ""
    };
    let details = if erase {
        "jsonb_build_object('erase', true, \
         'rollout_rows_erased', (SELECT count(*) FROM r), \
         'telemetry_rows_erased', (SELECT count(*) FROM t), \
         'rollup_rows_erased', (SELECT count(*) FROM m) + (SELECT count(*) FROM h), \
         'state_rows_erased', (SELECT count(*) FROM s), \
         'command_rows_erased', (SELECT count(*) FROM c))"
    } else {
        "jsonb_build_object('erase', false)"
    };
    let db = Db::open()?;
    let rows = db.query(
        &format!(
            "WITH d AS (UPDATE devices SET status = 'decommissioned', \
             key_generation = key_generation + CASE WHEN status = 'decommissioned' THEN 0 ELSE 1 END, \
             updated_at = now() WHERE tenant_id = $1 AND device_id = $2 \
             RETURNING tenant_id, device_id, key_generation), \
             k AS (DELETE FROM device_keys WHERE tenant_id = $1 AND device_id = $2 \
             AND EXISTS (SELECT 1 FROM d)), \
             u AS (DELETE FROM used_assertions WHERE tenant_id = $1 AND device_id = $2 \
             AND EXISTS (SELECT 1 FROM d)), \
             {erased} \
             a AS ({} SELECT tenant_id, $3::text, $4::text, 'device.decommissioned', device_id, {details} \
             FROM d) \
             SELECT key_generation FROM d",
            audit::INSERT
        ),
        &[
            db::text(tenant.as_str()),
            db::text(device.as_str()),
            db::text(actor.role),
            db::text(actor.name),
        ],
    )?;
    let row = rows.rows.first().ok_or_else(Problem::not_found)?;
    let generation: i64 = db::column(row, 0)?;
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
