//! Device login: `POST /v1/auth/token` exchanges an RFC 7523 JWT-bearer assertion,
//! signed with the device's private key, for a short-lived access token.
//!
//! The body is the OAuth 2.0 form (`application/x-www-form-urlencoded`:
//! `grant_type=urn:ietf:params:oauth:grant-type:jwt-bearer&assertion=…`) or the same
//! two fields as JSON. Steps:
//!
//! 1. `peek_assertion`: the tenant (`iss`) and device (`sub`) it claims, unverified;
//! 2. the device's status and keys (`current`, and `pending` during a rotation);
//! 3. `verify_assertion` against the pending key, then the current one;
//! 4. the per-device rate limit (429, the only refusal that says why: the caller has
//!    just proven who it is);
//! 5. replay: the `jti` is recorded in `used_assertions` until the assertion would be
//!    refused as expired anyway, with one `INSERT … ON CONFLICT DO NOTHING`: of any
//!    number of concurrent exchanges of one assertion exactly one inserts, the others
//!    are refused ([`record_jti`]). If the database cannot be reached, 503;
//! 6. signed by the pending key → the rotation completes (generation + 1);
//! 7. an HS256 access token with the device's key generation, valid
//!    [`ACCESS_TOKEN_TTL_SECS`].
//!
//! Every refusal in 1–3 and 5 is the same 401 body; the reason goes to the log only.
//!
//! Before step 1 touches the database, the attempt is throttled
//! ([`toaster_platform::throttle`]): refusals from the client's address, and refusals
//! naming the claimed device's bucket, each have a budget; over either, 429. The
//! bucket counts whether or not the device exists, so the 429 says nothing about that
//! either.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::json;
use spin_sdk::http::{Request, Response};
use toaster_core::assertion::{AssertionError, DevicePublicKey, peek_assertion, verify_assertion};
use toaster_core::ids::{DeviceId, TenantId};
use toaster_core::problem::Problem;
use toaster_core::token::{AccessClaims, Role};
use toaster_platform::auth::{self, RateLimit};
use toaster_platform::db::{self, Db};
use toaster_platform::kv::DeviceStatus;
use toaster_platform::query::Query;
use toaster_platform::throttle::{Credential, Throttle};
use toaster_platform::{body, respond, time};

use crate::audit;
use crate::devices;
use crate::error::AuthError;

/// Device access tokens live 15 minutes: short enough that a stolen one is soon
/// useless even without revocation, long enough that a device signs an assertion only
/// a few times an hour.
pub const ACCESS_TOKEN_TTL_SECS: u64 = 15 * 60;
pub const GRANT_TYPE: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";
const MAX_BODY_BYTES: usize = 16 * 1024;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct JsonRequest {
    grant_type: String,
    assertion: String,
}

#[derive(Serialize)]
struct TokenResponse {
    access_token: String,
    token_type: &'static str,
    expires_in: u64,
}

/// Public keys nobody holds the private half of (generated once with openssl and
/// discarded), one per accepted algorithm.
const DECOY_KEYS: [&str; 2] = [
    "-----BEGIN PUBLIC KEY-----\nMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAERJ9pjq0cwivzYbr/ig/RxbMJb6OF\ntJaT1DHWvuUb1CqCbxlqopGTglaNSIatYTzynd+IOxg44T7oBGgHuoGGwg==\n-----END PUBLIC KEY-----\n",
    "-----BEGIN PUBLIC KEY-----\nMCowBQYDK2VwAyEAIQ96t2MNW3OPkqNFsz5iLbBeVLGSUmHd4HanHXaig3k=\n-----END PUBLIC KEY-----\n",
];

/// Spends on an unknown or disabled device the signature check a real device would
/// cost, so the time of a refusal does not tell which check failed.
fn decoy_verification(assertion: &str, tenant: &TenantId, now: u64) {
    let keys: Vec<DevicePublicKey> = DECOY_KEYS
        .iter()
        .filter_map(|pem| DevicePublicKey::from_pem(pem).ok())
        .collect();
    let _ = verify_assertion(assertion, &keys, tenant, now);
}

fn refused() -> Problem {
    AuthError::LoginRefused.into()
}

fn refuse_because(tenant: &str, device: &str, why: &str) -> Problem {
    eprintln!("auth: login refused for {tenant}/{device}: {why}");
    refused()
}

/// `POST /v1/auth/token`. Throttled ([`toaster_platform::throttle`]): refusals count
/// against the client's address and the claimed device's bucket, and either over its
/// budget is 429 before the database is touched.
pub fn exchange(req: &Request) -> Result<Response, Problem> {
    let mut throttle = Throttle::start(req)?;
    let outcome = exchange_throttled(req, &mut throttle);
    throttle.finish(outcome)
}

fn exchange_throttled(req: &Request, throttle: &mut Throttle) -> Result<Response, Problem> {
    let assertion = read_assertion(req)?;
    let claimed = peek_assertion(&assertion).map_err(|e| {
        eprintln!("auth: login refused: {:?}", e.rejection());
        refused()
    })?;
    let (tenant, device) = (claimed.iss, claimed.sub);
    throttle.credential(Credential::Device(&tenant, &device))?;
    let now = time::now_secs();

    let db = Db::open()?;
    let Some(record) = load_login_record(&db, &tenant, &device)? else {
        decoy_verification(&assertion, &tenant, now);
        return Err(refuse_because(
            tenant.as_str(),
            device.as_str(),
            "unknown device",
        ));
    };
    if record.status != DeviceStatus::Active {
        decoy_verification(&assertion, &tenant, now);
        return Err(refuse_because(
            tenant.as_str(),
            device.as_str(),
            record.status.as_str(),
        ));
    }
    let reason = |e: AssertionError| {
        refuse_because(
            tenant.as_str(),
            device.as_str(),
            &format!("{:?}", e.rejection()),
        )
    };
    let (verified, by_pending) = match &record.pending {
        Some(pending) => {
            match verify_assertion(&assertion, std::slice::from_ref(pending), &tenant, now) {
                Ok(verified) => (verified, true),
                Err(_) => (
                    verify_assertion(&assertion, &record.current, &tenant, now).map_err(reason)?,
                    false,
                ),
            }
        }
        None => (
            verify_assertion(&assertion, &record.current, &tenant, now).map_err(reason)?,
            false,
        ),
    };

    auth::check_rate(&RateLimit::from_variable()?, &tenant, &device, now)?;
    if !record_jti(
        &db,
        &tenant,
        &device,
        &verified.jti,
        now.saturating_add(verified.ttl_remaining(now)),
    )? {
        return Err(refuse_because(
            tenant.as_str(),
            device.as_str(),
            "jti replayed",
        ));
    }

    let generation = if by_pending {
        complete_rotation_at_login(&db, &tenant, &device, record.version)?
    } else {
        record.key_generation
    };
    // Write-through: the device's first call with this token needs no database read.
    devices::cache_state(&tenant, &device, DeviceStatus::Active, generation);
    token_response(&tenant, &device, generation)
}

/// A login signed with the pending key completes the rotation: the key generation the
/// new token carries. Refused if the device stopped being active.
///
/// One statement does it (the pending key copied over the current one, the pending row
/// deleted, the generation bumped, the entry audited) if the device row is still the
/// version (`xmin`) last read; otherwise nothing is written and the statement's own
/// read of the device decides: gone or no longer active is refused, no pending key
/// means another login completed the rotation a moment ago (its generation is
/// returned), else it is tried again against that version.
fn complete_rotation_at_login(
    db: &Db,
    tenant: &TenantId,
    device: &DeviceId,
    mut version: String,
) -> Result<i64, Problem> {
    for _ in 0..devices::MAX_ATTEMPTS {
        let rows = db.query(
            &format!(
                "WITH p AS (SELECT algorithm, public_key_pem, fingerprint, created_at FROM device_keys \
                 WHERE tenant_id = $1 AND device_id = $2 AND state = 'pending'), \
                 d AS (UPDATE devices SET key_generation = key_generation + 1, updated_at = now() \
                 WHERE tenant_id = $1 AND device_id = $2 AND status = 'active' AND xmin::text = $3 \
                 AND EXISTS (SELECT 1 FROM p) RETURNING tenant_id, device_id, key_generation), \
                 c AS (UPDATE device_keys k SET algorithm = p.algorithm, public_key_pem = p.public_key_pem, \
                 fingerprint = p.fingerprint, created_at = p.created_at FROM p, d \
                 WHERE k.tenant_id = d.tenant_id AND k.device_id = d.device_id AND k.state = 'current'), \
                 x AS (DELETE FROM device_keys k USING d WHERE k.tenant_id = d.tenant_id \
                 AND k.device_id = d.device_id AND k.state = 'pending'), \
                 a AS ({} SELECT d.tenant_id, 'device', d.device_id, 'device.key_rotated', d.device_id, \
                 jsonb_build_object('fingerprint', p.fingerprint, 'completed_by', 'device login') FROM d, p) \
                 SELECT s.status, s.key_generation, s.xmin::text, EXISTS (SELECT 1 FROM p), \
                 (SELECT key_generation FROM d) FROM devices s \
                 WHERE s.tenant_id = $1 AND s.device_id = $2",
                audit::INSERT
            ),
            &[
                db::text(tenant.as_str()),
                db::text(device.as_str()),
                db::text(version.as_str()),
            ],
        )?;
        let Some(row) = rows.rows.first() else {
            return Err(refuse_because(tenant.as_str(), device.as_str(), "gone"));
        };
        if let Some(generation) = db::column::<Option<i64>>(row, 4)? {
            return Ok(generation);
        }
        let status: String = db::column(row, 0)?;
        let status = DeviceStatus::parse(&status).ok_or_else(respond::internal)?;
        if status != DeviceStatus::Active {
            return Err(refuse_because(
                tenant.as_str(),
                device.as_str(),
                status.as_str(),
            ));
        }
        if !db::column::<bool>(row, 3)? {
            return db::column(row, 1);
        }
        version = db::column(row, 2)?;
    }
    Err(devices::busy())
}

/// 200 with a fresh device access token carrying `generation`, never cached.
fn token_response(
    tenant: &TenantId,
    device: &DeviceId,
    generation: i64,
) -> Result<Response, Problem> {
    let claims = AccessClaims::device(
        tenant.clone(),
        device,
        u64::try_from(generation).unwrap_or(0),
    );
    let token = auth::signer()?
        .mint(&claims, Duration::from_secs(ACCESS_TOKEN_TTL_SECS))
        .map_err(|e| {
            eprintln!("auth: cannot mint a device token: {e}");
            respond::internal()
        })?;
    let mut response = respond::json(
        200,
        &TokenResponse {
            access_token: token,
            token_type: "Bearer",
            expires_in: ACCESS_TOKEN_TTL_SECS,
        },
    );
    response.set_header("cache-control", "no-store");
    Ok(response)
}

/// `GET /v1/auth/me`: who the bearer token says the caller is, after every check a
/// device's call to any component gets (revocation, rate limit). For clients to test
/// their credentials.
pub fn whoami(req: &Request) -> Result<Response, Problem> {
    let caller = auth::authenticate(req, &[Role::Operator, Role::Admin, Role::Device])?;
    Ok(respond::json(
        200,
        &json!({
            "role": caller.role,
            "subject": caller.subject,
            "tenant_id": caller.tenant().ok(),
            "key_generation": caller.key_generation,
            "token_id": caller.token_id.as_str(),
            "expires_at": time::rfc3339_ms(i64::try_from(caller.expires_at).unwrap_or(i64::MAX / 1000) * 1000),
        }),
    ))
}

/// The assertion from the form or JSON body; 400 for a wrong `grant_type`.
fn read_assertion(req: &Request) -> Result<String, Problem> {
    let content_type = req
        .header("content-type")
        .and_then(|v| v.as_str())
        .unwrap_or("");
    let media_type = content_type.split(';').next().unwrap_or("").trim();
    let (grant_type, assertion) =
        if media_type.eq_ignore_ascii_case("application/x-www-form-urlencoded") {
            if req.body().len() > MAX_BODY_BYTES {
                return Err(Problem::payload_too_large(MAX_BODY_BYTES));
            }
            let text = std::str::from_utf8(req.body())
                .map_err(|_| Problem::bad_request("the form body is not UTF-8"))?;
            let mut form = Query::parse_limited(text, MAX_BODY_BYTES)?;
            // OAuth clients may send more (client_id, scope); they are ignored.
            (form.take("grant_type")?, form.take("assertion")?)
        } else if body::is_json(content_type) {
            let request: JsonRequest = body::json_limited(req, MAX_BODY_BYTES)?;
            (Some(request.grant_type), Some(request.assertion))
        } else {
            return Err(Problem::unsupported_media_type(
                "application/x-www-form-urlencoded or application/json",
            ));
        };
    match grant_type.as_deref() {
        Some(GRANT_TYPE) => {}
        Some(_) => {
            return Err(Problem::bad_request(format!(
                "grant_type must be {GRANT_TYPE}"
            )));
        }
        None => return Err(Problem::bad_request("grant_type is required")),
    }
    assertion
        .filter(|a| !a.is_empty())
        .ok_or_else(|| Problem::bad_request("assertion is required"))
}

struct LoginRecord {
    status: DeviceStatus,
    key_generation: i64,
    /// The device row's version (`xmin`), for [`complete_rotation_at_login`].
    version: String,
    current: Vec<DevicePublicKey>,
    pending: Option<DevicePublicKey>,
}

/// The device's status, generation and keys in one round trip.
fn load_login_record(
    db: &Db,
    tenant: &TenantId,
    device: &DeviceId,
) -> Result<Option<LoginRecord>, Problem> {
    let rows = db.query(
        "SELECT d.status, d.key_generation, k.state, k.public_key_pem, d.xmin::text \
         FROM devices d LEFT JOIN device_keys k \
           ON k.tenant_id = d.tenant_id AND k.device_id = d.device_id \
         WHERE d.tenant_id = $1 AND d.device_id = $2",
        &[db::text(tenant.as_str()), db::text(device.as_str())],
    )?;
    let Some(first) = rows.rows.first() else {
        return Ok(None);
    };
    let status: String = db::column(first, 0)?;
    let mut record = LoginRecord {
        status: DeviceStatus::parse(&status).ok_or_else(respond::internal)?,
        key_generation: db::column(first, 1)?,
        version: db::column(first, 4)?,
        current: Vec::new(),
        pending: None,
    };
    for row in &rows.rows {
        let state: Option<String> = db::column(row, 2)?;
        let pem: Option<String> = db::column(row, 3)?;
        let (Some(state), Some(pem)) = (state, pem) else {
            continue;
        };
        let key = DevicePublicKey::from_pem(&pem).map_err(|e| {
            eprintln!("auth: a stored device key does not parse: {e}");
            respond::internal()
        })?;
        match state.as_str() {
            "pending" => record.pending = Some(key),
            _ => record.current.push(key),
        }
    }
    Ok(Some(record))
}

/// Records the assertion's `jti` until `expires_at` (Unix seconds); `false` if it is
/// already recorded: a replay.
///
/// One statement, so it is atomic: the primary key lets exactly one of any number of
/// concurrent exchanges of the same `jti` insert, and the others get no row back. The
/// same statement deletes the device's expired rows, which bounds the table by each
/// device's live assertions. Rows another login is deleting are skipped rather than
/// waited for (`SKIP LOCKED`): cleanup never blocks or deadlocks a login, and the next
/// login deletes what was skipped. This `jti`'s own row is never deleted here, so
/// whether the conflict is seen does not depend on the order PostgreSQL runs the two
/// parts in; an expired row of it only refuses an assertion already past its expiry.
fn record_jti(
    db: &Db,
    tenant: &TenantId,
    device: &DeviceId,
    jti: &str,
    expires_at: u64,
) -> Result<bool, Problem> {
    let rows = db.query(
        "WITH expired AS ( \
           DELETE FROM used_assertions \
           WHERE tenant_id = $1 AND device_id = $2 AND jti IN ( \
             SELECT jti FROM used_assertions \
             WHERE tenant_id = $1 AND device_id = $2 AND expires_at < now() AND jti <> $3 \
             FOR UPDATE SKIP LOCKED)) \
         INSERT INTO used_assertions (tenant_id, device_id, jti, expires_at) \
         VALUES ($1, $2, $3, to_timestamp($4::int8)) \
         ON CONFLICT DO NOTHING \
         RETURNING 1",
        &[
            db::text(tenant.as_str()),
            db::text(device.as_str()),
            db::text(jti),
            db::int8(i64::try_from(expires_at).unwrap_or(i64::MAX)),
        ],
    )?;
    Ok(!rows.rows.is_empty())
}
