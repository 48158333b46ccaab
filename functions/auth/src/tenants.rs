//! Tenants (operator only): creating one, and minting admin tokens for it.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::json;
use spin_sdk::http::{Request, Response};
use toaster_core::ids::TenantId;
use toaster_core::problem::{FieldError, Problem};
use toaster_core::token::{AccessClaims, Role};
use toaster_platform::auth;
use toaster_platform::db::{self, Db};
use toaster_platform::{body, respond, time};

use crate::audit::{self, Actor};
use crate::secrets;

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
    let created_ms = db.transaction(|db| {
        let rows = db.query(
            "INSERT INTO tenants (tenant_id, name, created_by) VALUES ($1, $2, $3) \
             ON CONFLICT (tenant_id) DO NOTHING \
             RETURNING (extract(epoch from created_at) * 1000)::int8",
            &[
                db::text(id.as_str()),
                db::text(new.name.as_str()),
                db::text(caller.subject.as_str()),
            ],
        )?;
        let Some(row) = rows.rows.first() else {
            return Err(Problem::conflict("a tenant with this id exists"));
        };
        let created_ms: i64 = db::column(row, 0)?;
        audit::record(
            db,
            &id,
            &Actor::from(&caller),
            "tenant.created",
            id.as_str(),
            json!({"name": new.name}),
        )?;
        Ok(created_ms)
    })?;
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
}

/// `POST /v1/tenants/{id}/tokens`
pub fn mint_admin_token(req: &Request, tenant: &str) -> Result<Response, Problem> {
    let caller = auth::authenticate(req, &[Role::Operator])?;
    let tenant = crate::path_segment(tenant)
        .and_then(|t| TenantId::parse(&t).ok())
        .ok_or_else(Problem::not_found)?;
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

    let db = Db::open()?;
    let token = db.transaction(|db| {
        let exists = db.query(
            "SELECT 1 FROM tenants WHERE tenant_id = $1",
            &[db::text(tenant.as_str())],
        )?;
        if exists.rows.is_empty() {
            return Err(Problem::not_found().with_detail("no such tenant"));
        }
        let claims = AccessClaims::admin(tenant.clone(), request.subject.clone());
        let token = signer
            .mint(&claims, Duration::from_secs(ttl_secs))
            .map_err(|e| {
                eprintln!("auth: cannot mint an admin token: {e}");
                respond::internal()
            })?;
        audit::record(
            db,
            &tenant,
            &Actor::from(&caller),
            "token.minted",
            &request.subject,
            json!({"role": "admin", "ttl_secs": ttl_secs}),
        )?;
        Ok(token)
    })?;
    let mut response = respond::json(
        201,
        &TokenResponse {
            access_token: token,
            token_type: "Bearer",
            expires_in: ttl_secs,
            tenant_id: tenant.to_string(),
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
