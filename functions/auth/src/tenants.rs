//! Tenants (operator only): creating, listing and reading them, and minting admin
//! tokens for one. Minted tokens are recorded by id ([`crate::tokens`]) so they can be
//! listed and revoked.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::json;
use spin_sdk::http::{Request, Response};
use toaster_core::ids::TenantId;
use toaster_core::problem::{FieldError, Problem};
use toaster_core::token::{AccessClaims, Role};
use toaster_platform::auth;
use toaster_platform::db::{self, Db, DbValue};
use toaster_platform::query::{self, Query};
use toaster_platform::{body, respond, time};

use crate::audit::{self, Actor};
use crate::error::AuthError;
use crate::{secrets, tokens};

const MAX_NAME_CHARS: usize = 200;
const MAX_SUBJECT_BYTES: usize = 256;
/// Admin tokens: an hour unless asked otherwise, 30 days at most. Longer-lived
/// credentials belong to an identity provider, not to a bearer token.
const DEFAULT_ADMIN_TTL_SECS: u64 = 3600;
const MAX_ADMIN_TTL_SECS: u64 = 30 * 24 * 3600;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewTenant {
    /// Chosen by the operator, or generated.
    id: Option<TenantId>,
    name: String,
}

#[derive(Serialize)]
struct TenantView {
    id: String,
    name: String,
    created_at: String,
}

const TENANT_COLUMNS: &str =
    "SELECT tenant_id, name, (extract(epoch from created_at) * 1000)::int8 FROM tenants";

impl TenantView {
    fn from_row(row: &[DbValue]) -> Result<TenantView, Problem> {
        Ok(TenantView {
            id: db::column(row, 0)?,
            name: db::column(row, 1)?,
            created_at: time::rfc3339_ms(db::column(row, 2)?),
        })
    }
}

/// The list name in the tenant list's cursors: the key is a tenant id, which a client
/// may write by hand, so it is encoded ([`query::encode_cursor`]).
const TENANT_CURSOR: &str = "tenants";

/// `GET /v1/tenants?limit=&cursor=`: every tenant, by id.
pub fn list(req: &Request) -> Result<Response, Problem> {
    auth::authenticate(req, &[Role::Operator])?;
    let mut query = Query::parse(req.query())?;
    let cursor = query.take_parsed("cursor", |v| {
        query::decode_cursor(TENANT_CURSOR, v)
            .and_then(|id| TenantId::parse(&id).ok())
            .ok_or(query::NOT_A_CURSOR)
    })?;
    let limit = query.take_limit()?;
    query.finish()?;

    let db = Db::open()?;
    let rows = db.query(
        &format!(
            "{TENANT_COLUMNS} WHERE ($1::text IS NULL OR tenant_id > $1) ORDER BY tenant_id LIMIT $2"
        ),
        &[
            db::opt_text(cursor.map(|c| c.to_string())),
            db::int8(i64::from(limit) + 1),
        ],
    )?;
    let items = rows
        .rows
        .iter()
        .map(|row| TenantView::from_row(row))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(respond::page(items, limit, |t| {
        Some(query::encode_cursor(TENANT_CURSOR, &t.id))
    }))
}

/// `GET /v1/tenants/{id}`
pub fn get(req: &Request, tenant: &str) -> Result<Response, Problem> {
    auth::authenticate(req, &[Role::Operator])?;
    let tenant = tenant_in_path(tenant)?;
    let db = Db::open()?;
    let rows = db.query(
        &format!("{TENANT_COLUMNS} WHERE tenant_id = $1"),
        &[db::text(tenant.as_str())],
    )?;
    let row = rows.rows.first().ok_or(AuthError::NoSuchTenant)?;
    Ok(respond::json(200, &TenantView::from_row(row)?))
}

/// A tenant id from the path. One that cannot be an id names no tenant: 404.
fn tenant_in_path(raw: &str) -> Result<TenantId, Problem> {
    toaster_platform::router::path_segment(raw)
        .and_then(|t| TenantId::parse(&t).ok())
        .ok_or_else(Problem::not_found)
}

/// `POST /v1/tenants`
pub fn create(req: &Request) -> Result<Response, Problem> {
    let caller = auth::authenticate(req, &[Role::Operator])?;
    let new: NewTenant = body::json(req)?;
    check_text("/name", &new.name, MAX_NAME_CHARS)?;
    let id = match new.id {
        Some(id) => id,
        None => TenantId::parse(&secrets::new_tenant_id()?).map_err(|e| {
            eprintln!("auth: generated an invalid tenant id: {e}");
            respond::internal()
        })?,
    };

    let db = Db::open()?;
    let rows = db.query(
        &format!(
            "WITH t AS (INSERT INTO tenants (tenant_id, name, created_by) VALUES ($1, $2, $3) \
             ON CONFLICT (tenant_id) DO NOTHING RETURNING tenant_id, created_at), \
             a AS ({} SELECT tenant_id, $4::text, $3::text, 'tenant.created', tenant_id, $5::jsonb FROM t) \
             SELECT (extract(epoch from created_at) * 1000)::int8 FROM t",
            audit::INSERT
        ),
        &[
            db::text(id.as_str()),
            db::text(new.name.as_str()),
            db::text(caller.subject.as_str()),
            db::text(Actor::from(&caller).role),
            db::jsonb(&json!({"name": new.name})),
        ],
    )?;
    let row = rows.rows.first().ok_or(AuthError::TenantExists)?;
    let created_ms: i64 = db::column(row, 0)?;
    Ok(respond::json(
        201,
        &TenantView {
            id: id.to_string(),
            name: new.name,
            created_at: time::rfc3339_ms(created_ms),
        },
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenRequest {
    /// Who the token is for: a person or a system, shown in the audit log.
    subject: String,
    ttl_secs: Option<u64>,
}

#[derive(Serialize)]
struct TokenResponse {
    access_token: String,
    token_type: &'static str,
    expires_in: u64,
    tenant_id: String,
    /// What `DELETE /v1/auth/tokens/{id}` and the audit log name it by.
    token_id: String,
}

/// `POST /v1/tenants/{id}/tokens`
pub fn mint_admin_token(req: &Request, tenant: &str) -> Result<Response, Problem> {
    let caller = auth::authenticate(req, &[Role::Operator])?;
    let tenant = tenant_in_path(tenant)?;
    let request: TokenRequest = body::json(req)?;
    if request.subject.is_empty() || request.subject.len() > MAX_SUBJECT_BYTES {
        return Err(Problem::unprocessable(vec![FieldError::new(
            "/subject",
            format!("must be 1 to {MAX_SUBJECT_BYTES} bytes long"),
        )]));
    }
    check_text("/subject", &request.subject, MAX_SUBJECT_BYTES)?;
    let ttl_secs = request.ttl_secs.unwrap_or(DEFAULT_ADMIN_TTL_SECS);
    if !(60..=MAX_ADMIN_TTL_SECS).contains(&ttl_secs) {
        return Err(Problem::unprocessable(vec![FieldError::new(
            "/ttl_secs",
            format!("must be from 60 to {MAX_ADMIN_TTL_SECS} seconds"),
        )]));
    }
    let signer = auth::signer()?;

    let claims = AccessClaims::admin(tenant.clone(), request.subject.clone());
    let issued = signer
        .issue(&claims, Duration::from_secs(ttl_secs))
        .map_err(|e| {
            eprintln!("auth: cannot mint an admin token: {e}");
            respond::internal()
        })?;
    let db = Db::open()?;
    // One statement: the token recorded (so it can be listed and revoked) and audited,
    // if the tenant exists; the token is handed out only then.
    let rows = db.query(
        &format!(
            "WITH t AS (SELECT tenant_id FROM tenants WHERE tenant_id = $1), \
             {}, \
             i AS (INSERT INTO access_tokens (token_id, tenant_id, role, subject, expires_at, minted_at, minted_by) \
             SELECT $2, tenant_id, 'admin', $3, to_timestamp($4::int8), now(), $5 FROM t), \
             a AS ({} SELECT tenant_id, $6::text, $5::text, 'token.minted', $3::text, $7::jsonb FROM t) \
             SELECT count(*) FROM t",
            tokens::forget_expired_cte(),
            audit::INSERT
        ),
        &[
            db::text(tenant.as_str()),
            db::text(issued.token_id.as_str()),
            db::text(request.subject.as_str()),
            db::int8(i64::try_from(issued.expires_at).unwrap_or(i64::MAX)),
            db::text(caller.subject.as_str()),
            db::text(Actor::from(&caller).role),
            db::jsonb(&json!({
                "role": "admin", "ttl_secs": ttl_secs, "token_id": issued.token_id.as_str(),
            })),
        ],
    )?;
    let row = rows.rows.first().ok_or_else(respond::internal)?;
    if db::column::<i64>(row, 0)? == 0 {
        return Err(AuthError::NoSuchTenant.into());
    }
    let mut response = respond::json(
        201,
        &TokenResponse {
            access_token: issued.token,
            token_type: "Bearer",
            expires_in: ttl_secs,
            tenant_id: tenant.to_string(),
            token_id: issued.token_id.to_string(),
        },
    );
    response.set_header("cache-control", "no-store");
    Ok(response)
}

/// Free text (names, subjects): 1 to `max` characters, no control characters.
pub fn check_text(pointer: &str, text: &str, max: usize) -> Result<(), Problem> {
    let detail = if text.trim().is_empty() {
        Some("must not be empty".to_owned())
    } else if text.chars().count() > max {
        Some(format!("must be at most {max} characters long"))
    } else if text.chars().any(char::is_control) {
        Some("must not contain control characters".to_owned())
    } else {
        None
    };
    match detail {
        Some(detail) => Err(Problem::unprocessable(vec![FieldError::new(
            pointer, detail,
        )])),
        None => Ok(()),
    }
}
