//! Zero-touch provisioning. An admin creates a claim token bound to a model, with a
//! device quota and an expiry (`POST /v1/claims`); the token is shown once and stored
//! only as its SHA-256. A device presents it with its own id and public key
//! (`POST /v1/provision`, no other credential) and is registered in the claim's
//! tenant.
//!
//! Quota and expiry hold under races: one unit of quota is spent by a single
//! conditional `UPDATE … WHERE used < quota AND expires_at > now()` in the same
//! transaction as the device insert. Concurrent provisioning of the last slot
//! serialises on the claim's row; the loser re-reads `used` and matches nothing. If
//! the insert then fails (the device id is taken), the transaction rolls back and the
//! unit is not spent.
//!
//! Provisioning takes no token, so its refusals are throttled per client address and
//! per claim token ([`toaster_platform::throttle`]); successes never count, so a fleet
//! behind one gateway is not slowed.

use serde::{Deserialize, Serialize};
use serde_json::json;
use spin_sdk::http::{Request, Response};
use toaster_core::assertion::AUDIENCE;
use toaster_core::ids::{Channel, DeviceId, Model, Tag, TenantId};
use toaster_core::problem::{FieldError, Problem};
use toaster_core::token::Role;
use toaster_platform::auth;
use toaster_platform::db::{self, Db};
use toaster_platform::kv::DeviceStatus;
use toaster_platform::throttle::{Credential, Throttle};
use toaster_platform::{body, respond, time};

use crate::audit::{self, Actor};
use crate::devices::{self, NewDeviceRow};
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
    let db = Db::open()?;
    db.transaction(|db| {
        db.try_execute(
            "INSERT INTO claims (tenant_id, claim_id, token_hash, model, channel, tags, quota, expires_at, created_by) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, to_timestamp($8::int8 / 1000.0), $9)",
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
            ],
        )
        .map_err(|e| {
            if db::sqlstate(&e) == Some(db::FOREIGN_KEY_VIOLATION) {
                Problem::forbidden().with_detail("the token's tenant does not exist")
            } else {
                db::unavailable_or_internal(&e)
            }
        })?;
        audit::record(
            db,
            tenant,
            &Actor::from(&caller),
            "claim.created",
            &claim_id,
            json!({
                "model": new.model, "channel": new.channel, "tags": tags,
                "quota": new.quota, "expires_at": time::rfc3339_ms(expires_ms),
            }),
        )
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
    let refused =
        || Problem::unauthorized().with_detail("the claim token is invalid, expired or used up");
    if request.claim_token.len() > MAX_CLAIM_TOKEN_BYTES
        || !request.claim_token.starts_with(secrets::CLAIM_TOKEN_PREFIX)
    {
        return Err(refused());
    }
    throttle.credential(Credential::Claim(&request.claim_token))?;
    let hash = secrets::claim_token_hash(&request.claim_token);

    let db = Db::open()?;
    let (tenant, view) = db.transaction(|db| {
        let claimed = db.query(
            "UPDATE claims SET used = used + 1 \
             WHERE token_hash = $1 AND used < quota AND expires_at > now() \
             RETURNING tenant_id, claim_id, model, channel, tags",
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

        let new = NewDeviceRow {
            tenant: &tenant,
            id: &request.device_id,
            model: &model,
            channel: &channel,
            tags: &tags,
            key: &key,
            claim_id: Some(&claim_id),
        };
        if !devices::insert(db, &new)? {
            return Err(Problem::conflict("a device with this id exists"));
        }
        audit::record(
            db,
            &tenant,
            &Actor {
                role: "claim",
                name: &claim_id,
            },
            "device.provisioned",
            request.device_id.as_str(),
            json!({
                "claim_id": claim_id, "model": model, "channel": channel, "tags": tags,
                "key": {"algorithm": key.algorithm().jws_alg(), "fingerprint": key.fingerprint()},
            }),
        )?;
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
        Ok((tenant, view))
    })?;
    devices::cache_state(&tenant, &request.device_id, DeviceStatus::Active, 1);
    Ok(respond::json(201, &view))
}
