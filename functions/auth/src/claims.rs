//! Zero-touch provisioning. An admin creates a claim token bound to a model, with a
//! device quota and an expiry (`POST /v1/claims`); the token is shown once and stored
//! only as its SHA-256. A device presents it with its own id and public key
//! (`POST /v1/provision`, no other credential) and is registered in the claim's
//! tenant.
//!
//! Quota and expiry hold under races: one unit of quota is spent by a conditional
//! `UPDATE … WHERE used < quota AND expires_at > now()` in the same statement as the
//! device insert (data-modifying CTEs). Concurrent provisioning of the last slot
//! serialises on the claim's row; the loser re-checks `used` and matches nothing. If
//! the insert then fails (the device id is taken: a unique violation), the whole
//! statement fails and the unit is not spent.
//!
//! Provisioning takes no token, so its refusals are throttled per client address and
//! per claim token ([`toaster_platform::throttle`]); successes never count, so a fleet
//! behind one gateway is not slowed.
//!
//! Admins list their claims (`GET /v1/claims`, never the token: only its hash is
//! kept), read one, and revoke one (`DELETE /v1/claims/{id}`): provisioning then
//! refuses it like an expired one. The row stays, since devices and the audit log
//! name it.

use serde::{Deserialize, Serialize};
use serde_json::json;
use spin_sdk::http::{Request, Response};
use toaster_core::assertion::AUDIENCE;
use toaster_core::ids::{Channel, DeviceId, Model, Tag, TenantId};
use toaster_core::problem::{FieldError, Problem};
use toaster_core::token::Role;
use toaster_platform::auth;
use toaster_platform::db::{self, Db, DbValue};
use toaster_platform::kv::DeviceStatus;
use toaster_platform::query::{self, Query};
use toaster_platform::throttle::{Credential, Throttle};
use toaster_platform::{body, respond, time};

use crate::audit::{self, Actor};
use crate::devices;
use crate::error::AuthError;
use crate::secrets;

pub const MAX_QUOTA: u32 = 100_000;
pub const MIN_EXPIRY_SECS: u64 = 60;
pub const MAX_EXPIRY_SECS: u64 = 365 * 24 * 3600;
/// A claim token is `tclaim_` and 43 characters; anything much longer is not one.
const MAX_CLAIM_TOKEN_BYTES: usize = 128;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewClaim {
    model: Model,
    #[serde(default = "devices::default_channel")]
    channel: Channel,
    #[serde(default)]
    tags: Vec<Tag>,
    quota: u32,
    expires_in_secs: u64,
}

#[derive(Serialize)]
struct ClaimView {
    id: String,
    /// Shown only in the response to its creation.
    claim_token: String,
    model: String,
    channel: String,
    tags: Vec<Tag>,
    quota: u32,
    used: u32,
    expires_at: String,
}

/// `POST /v1/claims`
pub fn create(req: &Request) -> Result<Response, Problem> {
    let caller = auth::authenticate(req, &[Role::Admin])?;
    let tenant = caller.tenant()?;
    let new: NewClaim = body::json(req)?;
    let tags = devices::check_tags("/tags", new.tags)?;
    let mut errors = Vec::new();
    if !(1..=MAX_QUOTA).contains(&new.quota) {
        errors.push(FieldError::new(
            "/quota",
            format!("must be from 1 to {MAX_QUOTA}"),
        ));
    }
    if !(MIN_EXPIRY_SECS..=MAX_EXPIRY_SECS).contains(&new.expires_in_secs) {
        errors.push(FieldError::new(
            "/expires_in_secs",
            format!("must be from {MIN_EXPIRY_SECS} to {MAX_EXPIRY_SECS}"),
        ));
    }
    if !errors.is_empty() {
        return Err(Problem::unprocessable(errors));
    }

    let token = secrets::new_claim_token()?;
    let claim_id = secrets::new_claim_id()?;
    // Bounded above, so the product fits easily.
    let expires_ms = time::now_ms() + (new.expires_in_secs as i64) * 1000;
    let details = json!({
        "model": new.model, "channel": new.channel, "tags": tags,
        "quota": new.quota, "expires_at": time::rfc3339_ms(expires_ms),
    });
    let db = Db::open()?;
    db.try_execute(
        &format!(
            "WITH c AS (INSERT INTO claims (tenant_id, claim_id, token_hash, model, channel, tags, quota, expires_at, created_by) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, to_timestamp($8::int8 / 1000.0), $9) RETURNING tenant_id, claim_id) \
             {} SELECT tenant_id, $10::text, $9::text, 'claim.created', claim_id, $11::jsonb FROM c",
            audit::INSERT
        ),
        &[
            db::text(tenant.as_str()),
            db::text(claim_id.as_str()),
            db::bytea(secrets::claim_token_hash(&token)),
            db::text(new.model.as_str()),
            db::text(new.channel.as_str()),
            db::text_array_param(&tags),
            db::Param::Int32(new.quota as i32),
            db::int8(expires_ms),
            db::text(caller.subject.as_str()),
            db::text(Actor::from(&caller).role),
            db::jsonb(&details),
        ],
    )
    .map_err(|e| {
        if db::sqlstate(&e) == Some(db::FOREIGN_KEY_VIOLATION) {
            Problem::from(AuthError::NoTenant)
        } else {
            db::unavailable_or_internal(&e)
        }
    })?;
    let mut response = respond::json(
        201,
        &ClaimView {
            id: claim_id,
            claim_token: token,
            model: new.model.to_string(),
            channel: new.channel.to_string(),
            tags,
            quota: new.quota,
            used: 0,
            expires_at: time::rfc3339_ms(expires_ms),
        },
    );
    response.set_header("cache-control", "no-store");
    Ok(response)
}

/// A claim as listed: everything but the token, which is not kept.
#[derive(Serialize)]
struct ClaimSummary {
    id: String,
    model: String,
    channel: String,
    tags: Vec<String>,
    quota: i32,
    used: i32,
    /// `active`, `used_up`, `expired` or `revoked`: whether it can provision now.
    status: String,
    expires_at: String,
    created_at: String,
    created_by: String,
    revoked_at: Option<String>,
    #[serde(skip)]
    created_us: i64,
}

/// A claim's status, computed where it is read (`used_up` and `expired` change
/// without a write). Revoked wins over the others.
const CLAIM_STATUS: &str = "CASE WHEN revoked_at IS NOT NULL THEN 'revoked' \
     WHEN expires_at <= now() THEN 'expired' WHEN used >= quota THEN 'used_up' ELSE 'active' END";

fn claim_columns() -> String {
    format!(
        "SELECT claim_id, model, channel, tags, quota, used, \
         (extract(epoch from expires_at) * 1000)::int8, (extract(epoch from created_at) * 1000)::int8, \
         created_by, (extract(epoch from revoked_at) * 1000)::int8, {CLAIM_STATUS}, \
         (extract(epoch from created_at) * 1000000)::int8 FROM claims"
    )
}

impl ClaimSummary {
    fn from_row(row: &[DbValue]) -> Result<ClaimSummary, Problem> {
        Ok(ClaimSummary {
            id: db::column(row, 0)?,
            model: db::column(row, 1)?,
            channel: db::column(row, 2)?,
            tags: db::text_array(row, 3)?,
            quota: db::column(row, 4)?,
            used: db::column(row, 5)?,
            expires_at: time::rfc3339_ms(db::column(row, 6)?),
            created_at: time::rfc3339_ms(db::column(row, 7)?),
            created_by: db::column(row, 8)?,
            revoked_at: db::column::<Option<i64>>(row, 9)?.map(time::rfc3339_ms),
            status: db::column(row, 10)?,
            created_us: db::column(row, 11)?,
        })
    }
}

/// The list name in the claim list's cursors; the key is the last claim's creation
/// time (µs) and id: the list is newest first.
const CLAIM_CURSOR: &str = "claims";

fn claim_cursor(claim: &ClaimSummary) -> String {
    query::encode_cursor(CLAIM_CURSOR, &format!("{}/{}", claim.created_us, claim.id))
}

fn parse_claim_cursor(cursor: &str) -> Option<(i64, String)> {
    let key = query::decode_cursor(CLAIM_CURSOR, cursor)?;
    let (micros, id) = key.split_once('/')?;
    Some((
        micros.parse().ok()?,
        is_claim_id(id).then(|| id.to_owned())?,
    ))
}

/// `clm_` and 16 hex digits ([`secrets::new_claim_id`]).
fn is_claim_id(text: &str) -> bool {
    text.strip_prefix("clm_").is_some_and(|hex| {
        hex.len() == 16
            && hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

/// `GET /v1/claims?status=&limit=&cursor=`: the tenant's claims, newest first.
pub fn list(req: &Request) -> Result<Response, Problem> {
    let caller = auth::authenticate(req, &[Role::Admin])?;
    let tenant = caller.tenant()?;
    let mut query = Query::parse(req.query())?;
    let status = query.take_parsed("status", |s| match s {
        "active" | "used_up" | "expired" | "revoked" => Ok(s.to_owned()),
        _ => Err("must be active, used_up, expired or revoked"),
    })?;
    let cursor = query.take_parsed("cursor", |v| {
        parse_claim_cursor(v).ok_or(query::NOT_A_CURSOR)
    })?;
    let limit = query.take_limit()?;
    query.finish()?;
    let (after_us, after_id) = cursor.unzip();

    let db = Db::open()?;
    let rows = db.query(
        &format!(
            "{} WHERE tenant_id = $1 AND ($2::text IS NULL OR {CLAIM_STATUS} = $2) \
             AND ($3::int8 IS NULL OR ((extract(epoch from created_at) * 1000000)::int8, claim_id) < ($3, $4::text)) \
             ORDER BY created_at DESC, claim_id DESC LIMIT $5",
            claim_columns()
        ),
        &[
            db::text(tenant.as_str()),
            db::opt_text(status),
            db::opt_int8(after_us),
            db::opt_text(after_id),
            db::int8(i64::from(limit) + 1),
        ],
    )?;
    let items = rows
        .rows
        .iter()
        .map(|row| ClaimSummary::from_row(row))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(respond::page(items, limit, |c| Some(claim_cursor(c))))
}

/// `GET /v1/claims/{id}`
pub fn get(req: &Request, claim: &str) -> Result<Response, Problem> {
    let caller = auth::authenticate(req, &[Role::Admin])?;
    let tenant = caller.tenant()?;
    let claim = claim_in_path(claim)?;
    let db = Db::open()?;
    let rows = db.query(
        &format!("{} WHERE tenant_id = $1 AND claim_id = $2", claim_columns()),
        &[db::text(tenant.as_str()), db::text(claim.as_str())],
    )?;
    let row = rows.rows.first().ok_or_else(Problem::not_found)?;
    Ok(respond::json(200, &ClaimSummary::from_row(row)?))
}

/// `DELETE /v1/claims/{id}`: revokes the claim; devices it provisioned stay.
/// Idempotent: 204 again, without a second audit entry.
pub fn revoke(req: &Request, claim: &str) -> Result<Response, Problem> {
    let caller = auth::authenticate(req, &[Role::Admin])?;
    let tenant = caller.tenant()?;
    let claim = claim_in_path(claim)?;
    let db = Db::open()?;
    // Revoked once: a second revocation (or the loser of two at once, which re-checks
    // `revoked_at` after the winner's commit) updates nothing and audits nothing.
    let rows = db.query(
        &format!(
            "WITH r AS (UPDATE claims SET revoked_at = now(), revoked_by = $3 \
             WHERE tenant_id = $1 AND claim_id = $2 AND revoked_at IS NULL RETURNING used, quota), \
             a AS ({} SELECT $1::text, $4::text, $3::text, 'claim.revoked', $2::text, \
             jsonb_build_object('used', used, 'quota', quota) FROM r) \
             SELECT EXISTS (SELECT 1 FROM claims WHERE tenant_id = $1 AND claim_id = $2)",
            audit::INSERT
        ),
        &[
            db::text(tenant.as_str()),
            db::text(claim.as_str()),
            db::text(caller.subject.as_str()),
            db::text(Actor::from(&caller).role),
        ],
    )?;
    let row = rows.rows.first().ok_or_else(respond::internal)?;
    if !db::column::<bool>(row, 0)? {
        return Err(Problem::not_found());
    }
    Ok(respond::empty(204))
}

/// A claim id from the path. One that cannot be an id names no claim: 404.
fn claim_in_path(raw: &str) -> Result<String, Problem> {
    toaster_platform::router::path_segment(raw)
        .filter(|id| is_claim_id(id))
        .ok_or_else(Problem::not_found)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Provision {
    claim_token: String,
    device_id: DeviceId,
    public_key: String,
    /// Added to the claim's tags.
    #[serde(default)]
    tags: Vec<Tag>,
}

#[derive(Serialize)]
struct Provisioned {
    tenant_id: String,
    device_id: String,
    model: String,
    channel: String,
    tags: Vec<Tag>,
    status: &'static str,
    key_generation: i64,
    /// What the device needs next: where to exchange assertions, and their `aud`.
    token_endpoint: &'static str,
    audience: &'static str,
}

/// `POST /v1/provision`. Throttled ([`toaster_platform::throttle`]): refused attempts
/// count against the client's address and the claim token's bucket, and either over
/// its budget is 429 before the database is touched.
pub fn provision(req: &Request) -> Result<Response, Problem> {
    let mut throttle = Throttle::start(req)?;
    let outcome = provision_throttled(req, &mut throttle);
    throttle.finish(outcome)
}

fn provision_throttled(req: &Request, throttle: &mut Throttle) -> Result<Response, Problem> {
    let request: Provision = body::json(req)?;
    let key = devices::parse_key("/public_key", &request.public_key)?;
    let refused = || Problem::from(AuthError::ClaimRefused);
    if request.claim_token.len() > MAX_CLAIM_TOKEN_BYTES
        || !request.claim_token.starts_with(secrets::CLAIM_TOKEN_PREFIX)
    {
        return Err(refused());
    }
    throttle.credential(Credential::Claim(&request.claim_token))?;
    let hash = secrets::claim_token_hash(&request.claim_token);

    let db = Db::open()?;
    // The claim as it is now, to refuse early and to merge its tags; the statement
    // below checks its quota, expiry and revocation again as it spends a unit. A
    // claim's tenant, model, channel and tags never change.
    let claimed = db.query(
        "SELECT tenant_id, claim_id, model, channel, tags FROM claims \
         WHERE token_hash = $1 AND used < quota AND expires_at > now() AND revoked_at IS NULL",
        &[db::bytea(hash)],
    )?;
    let Some(row) = claimed.rows.first() else {
        return Err(refused());
    };
    let stored = |e| {
        eprintln!("auth: a claim holds an invalid value: {e}");
        respond::internal()
    };
    let tenant = TenantId::parse(&db::column::<String>(row, 0)?).map_err(stored)?;
    let claim_id: String = db::column(row, 1)?;
    let model = Model::parse(&db::column::<String>(row, 2)?).map_err(stored)?;
    let channel = Channel::parse(&db::column::<String>(row, 3)?).map_err(stored)?;
    let mut tags = db::text_array(row, 4)?
        .iter()
        .map(|t| Tag::parse(t))
        .collect::<Result<Vec<_>, _>>()
        .map_err(stored)?;
    tags.extend(request.tags.iter().cloned());
    let tags = devices::check_tags("/tags", tags)?;

    let details = json!({
        "claim_id": claim_id, "model": model, "channel": channel, "tags": tags,
        "key": {"algorithm": key.algorithm().jws_alg(), "fingerprint": key.fingerprint()},
    });
    // One statement: the unit spent, the device and its key inserted, the entry
    // audited. A taken device id is a unique violation that undoes all of it.
    let provisioned = db
        .try_query(
            &format!(
                "WITH c AS (UPDATE claims SET used = used + 1 \
                 WHERE tenant_id = $1 AND claim_id = $2 \
                 AND used < quota AND expires_at > now() AND revoked_at IS NULL \
                 RETURNING tenant_id, claim_id), \
                 d AS (INSERT INTO devices (tenant_id, device_id, model, channel, tags, claim_id) \
                 SELECT tenant_id, $3, $4, $5, $6, claim_id FROM c RETURNING tenant_id, device_id), \
                 k AS (INSERT INTO device_keys (tenant_id, device_id, state, algorithm, public_key_pem, fingerprint) \
                 SELECT tenant_id, device_id, 'current', $7, $8, $9 FROM d), \
                 a AS ({} SELECT tenant_id, 'claim', $2::text, 'device.provisioned', device_id, $10::jsonb FROM d) \
                 SELECT count(*) FROM d",
                audit::INSERT
            ),
            &[
                db::text(tenant.as_str()),
                db::text(claim_id.as_str()),
                db::text(request.device_id.as_str()),
                db::text(model.as_str()),
                db::text(channel.as_str()),
                db::text_array_param(&tags),
                db::text(key.algorithm().jws_alg()),
                db::text(key.to_pem()),
                db::text(key.fingerprint()),
                db::jsonb(&details),
            ],
        )
        .map_err(|e| devices::insert_failed(&e))?;
    let row = provisioned.rows.first().ok_or_else(respond::internal)?;
    if db::column::<i64>(row, 0)? == 0 {
        // Spent, expired or revoked since it was read.
        return Err(refused());
    }
    let view = Provisioned {
        tenant_id: tenant.to_string(),
        device_id: request.device_id.to_string(),
        model: model.to_string(),
        channel: channel.to_string(),
        tags,
        status: DeviceStatus::Active.as_str(),
        key_generation: 1,
        token_endpoint: "/v1/auth/token",
        audience: AUDIENCE,
    };
    devices::cache_state(&tenant, &request.device_id, DeviceStatus::Active, 1);
    Ok(respond::json(201, &view))
}
