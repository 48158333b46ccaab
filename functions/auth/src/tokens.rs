//! Operator and admin access tokens: listing them and revoking one.
//!
//! Every token carries an id (`jti`, [`TokenId`]). Tokens minted through the API
//! (`POST /v1/tenants/{id}/tokens`) are recorded in `access_tokens` when minted, so
//! they can be listed and revoked by id (`DELETE /v1/auth/tokens/{id}`). Tokens minted
//! elsewhere (`toaster token`, `toaster up`'s operator token) are known only to their
//! holder, who revokes one by presenting it (`POST /v1/auth/revoke`): it is verified,
//! then recorded as revoked.
//!
//! Revoking sets `revoked_at`, then rewrites the scope's revocation list in the
//! key-value store ([`auth::cache_revoked_tokens`]), which every component checks on
//! every operator or admin request ([`auth::authenticate`]): the token is refused on
//! its next call. Device tokens are not revoked here: disabling the device or
//! completing a key rotation revokes them (their key generation).
//!
//! Who may revoke: an operator any token; an admin its own tenant's admin tokens
//! (another tenant's token id is 404, like a missing one).

use serde::{Deserialize, Serialize};
use spin_sdk::http::{Request, Response};
use toaster_core::ids::TenantId;
use toaster_core::problem::Problem;
use toaster_core::token::{Rejection, Role, TokenError, TokenId, VerifiedToken};
use toaster_platform::auth::{self, Caller};
use toaster_platform::db::{self, Db, DbValue};
use toaster_platform::kv::TokenScope;
use toaster_platform::query::{self, Query};
use toaster_platform::{body, respond, time};

use crate::audit::{self, Actor};
use crate::error::AuthError;

/// Rows are deleted this long after their token expired: long enough that a token
/// still within verification's leeway stays revoked, short enough that the table
/// holds about the live tokens.
const KEEP_EXPIRED: &str = "1 day";
/// The list name in the tokens list's cursors.
const TOKEN_CURSOR: &str = "tokens";
/// A bearer token is a few hundred bytes; verification refuses over 4 KiB anyway.
const MAX_PRESENTED_BYTES: usize = 8 * 1024;

#[derive(Serialize)]
struct TokenView {
    id: String,
    role: String,
    tenant_id: Option<String>,
    subject: String,
    expires_at: String,
    /// `null` for tokens the API did not mint (recorded when revoked).
    created_at: Option<String>,
    created_by: Option<String>,
    revoked_at: Option<String>,
    revoked_by: Option<String>,
    #[serde(skip)]
    seq: i64,
}

const TOKEN_COLUMNS: &str = "SELECT token_id, tenant_id, role, subject, \
     (extract(epoch from expires_at) * 1000)::int8, (extract(epoch from minted_at) * 1000)::int8, \
     minted_by, (extract(epoch from revoked_at) * 1000)::int8, revoked_by, seq FROM access_tokens";

impl TokenView {
    fn from_row(row: &[DbValue]) -> Result<TokenView, Problem> {
        let at = |index| -> Result<Option<String>, Problem> {
            Ok(db::column::<Option<i64>>(row, index)?.map(time::rfc3339_ms))
        };
        Ok(TokenView {
            id: db::column(row, 0)?,
            tenant_id: db::column(row, 1)?,
            role: db::column(row, 2)?,
            subject: db::column(row, 3)?,
            expires_at: time::rfc3339_ms(db::column(row, 4)?),
            created_at: at(5)?,
            created_by: db::column(row, 6)?,
            revoked_at: at(7)?,
            revoked_by: db::column(row, 8)?,
            seq: db::column(row, 9)?,
        })
    }
}

/// A CTE deleting the rows of tokens that expired over [`KEEP_EXPIRED`] ago: they can
/// no longer be presented, revoked or not. Each statement that records a token runs it.
pub fn forget_expired_cte() -> String {
    format!(
        "forget AS (DELETE FROM access_tokens WHERE expires_at < now() - interval '{KEEP_EXPIRED}')"
    )
}

/// `GET /v1/auth/tokens?tenant=&role=&include_expired=&limit=&cursor=`: newest first.
/// An admin sees its tenant's tokens; an operator every recorded one.
pub fn list(req: &Request) -> Result<Response, Problem> {
    let caller = auth::authenticate(req, &[Role::Operator, Role::Admin])?;
    let mut query = Query::parse(req.query())?;
    let tenant = query.take_parsed("tenant", TenantId::parse)?;
    let role = query.take_parsed("role", |r| match r {
        "operator" | "admin" => Ok(r.to_owned()),
        _ => Err("must be operator or admin"),
    })?;
    let include_expired = query.take_bool("include_expired")?;
    let cursor = query.take_parsed("cursor", |v| {
        query::decode_cursor(TOKEN_CURSOR, v)
            .and_then(|seq| seq.parse::<i64>().ok())
            .filter(|seq| *seq > 0)
            .ok_or(query::NOT_A_CURSOR)
    })?;
    let limit = query.take_limit()?;
    query.finish()?;
    // An admin's list is its tenant's, whatever it asks for.
    let own = match caller.role {
        Role::Admin => Some(caller.tenant()?.to_string()),
        _ => None,
    };

    let db = Db::open()?;
    let rows = db.query(
        &format!(
            "{TOKEN_COLUMNS} WHERE ($1::text IS NULL OR tenant_id = $1) \
             AND ($2::text IS NULL OR tenant_id = $2) \
             AND ($3::text IS NULL OR role = $3) \
             AND ($4 OR expires_at > now()) \
             AND ($5::int8 IS NULL OR seq < $5) \
             ORDER BY seq DESC LIMIT $6"
        ),
        &[
            db::opt_text(own),
            db::opt_text(tenant.map(|t| t.to_string())),
            db::opt_text(role),
            db::boolean(include_expired),
            db::opt_int8(cursor),
            db::int8(i64::from(limit) + 1),
        ],
    )?;
    let items = rows
        .rows
        .iter()
        .map(|row| TokenView::from_row(row))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(respond::page(items, limit, |t| {
        Some(query::encode_cursor(TOKEN_CURSOR, &t.seq.to_string()))
    }))
}

/// `DELETE /v1/auth/tokens/{id}`: revokes a token the API minted (or one already
/// recorded). Idempotent: 204 again, without a second audit entry.
pub fn revoke(req: &Request, raw_id: &str) -> Result<Response, Problem> {
    let caller = auth::authenticate(req, &[Role::Operator, Role::Admin])?;
    let token_id = toaster_platform::router::path_segment(raw_id)
        .and_then(|id| TokenId::parse(&id))
        .ok_or_else(not_recorded)?;
    // An admin may revoke only its own tenant's tokens: another's, or an operator
    // token, is filtered out like a missing one ($3).
    let own = match caller.role {
        Role::Operator => None,
        _ => Some(caller.tenant()?.to_string()),
    };
    let db = Db::open()?;
    // Revoked once: a second revocation (or the loser of two at once, which re-checks
    // `revoked_at` after the winner's commit) updates nothing and audits nothing.
    let rows = db.query(
        &format!(
            "WITH t AS (SELECT tenant_id, role, subject FROM access_tokens \
             WHERE token_id = $1 AND ($3::text IS NULL OR tenant_id = $3)), \
             r AS (UPDATE access_tokens SET revoked_at = now(), revoked_by = $2 \
             WHERE token_id = $1 AND ($3::text IS NULL OR tenant_id = $3) AND revoked_at IS NULL \
             RETURNING tenant_id, role, subject), \
             a AS ({} SELECT tenant_id, $4::text, $2::text, 'token.revoked', $1::text, \
             jsonb_build_object('role', role, 'subject', subject) FROM r WHERE tenant_id IS NOT NULL) \
             SELECT t.tenant_id, t.role, t.subject, EXISTS (SELECT 1 FROM r) FROM t",
            audit::INSERT
        ),
        &[
            db::text(token_id.as_str()),
            db::text(caller.subject.as_str()),
            db::opt_text(own),
            db::text(Actor::from(&caller).role),
        ],
    )?;
    let row = rows.rows.first().ok_or_else(not_recorded)?;
    let tenant: Option<String> = db::column(row, 0)?;
    let subject: String = db::column(row, 2)?;
    let revoked_now: bool = db::column(row, 3)?;
    let scope = stored_scope(tenant.as_deref())?;
    if revoked_now {
        log_operator_revocation(&caller, &scope, &token_id, &subject);
    }
    auth::cache_revoked_tokens(&db, &scope);
    Ok(respond::empty(204))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Presented {
    /// The access token to revoke, as its holder has it.
    token: String,
}

/// `POST /v1/auth/revoke {"token": "…"}`: revokes the token presented, wherever it
/// was minted. 204 also when it has expired (it is refused already). The caller may
/// present its own token.
pub fn revoke_presented(req: &Request) -> Result<Response, Problem> {
    let caller = auth::authenticate(req, &[Role::Operator, Role::Admin])?;
    let presented: Presented = body::json_limited(req, MAX_PRESENTED_BYTES)?;
    let verified = match auth::signer()?.verify(presented.token.trim()) {
        Ok(verified) => verified,
        Err(TokenError::Rejected(Rejection::Expired)) => return Ok(respond::empty(204)),
        Err(TokenError::Rejected(_)) => {
            return Err(unprocessable_token(
                "is not an access token of this deployment (malformed, or signed with another key)",
            ));
        }
        Err(e) => {
            eprintln!("auth: cannot verify a presented token: {e}");
            return Err(respond::internal());
        }
    };
    let scope = presented_scope(&verified)?;
    if !may_revoke(&caller, &scope)? {
        return Err(AuthError::ForeignToken.into());
    }
    let claims = &verified.claims;
    let tenant = scope.tenant().map(|t| t.to_string());
    let db = Db::open()?;
    // Recorded as revoked (or its row marked so), audited in its tenant's log, and old
    // rows forgotten, in one statement; already revoked: nothing changes.
    let rows = db.query(
        &format!(
            "WITH {}, \
             r AS (INSERT INTO access_tokens (token_id, tenant_id, role, subject, expires_at, revoked_at, revoked_by) \
             VALUES ($1, $2, $3, $4, to_timestamp($5::int8), now(), $6) \
             ON CONFLICT (token_id) DO UPDATE SET revoked_at = now(), revoked_by = excluded.revoked_by \
             WHERE access_tokens.revoked_at IS NULL \
             RETURNING 1), \
             a AS ({} SELECT $2::text, $7::text, $6::text, 'token.revoked', $1::text, \
             jsonb_build_object('role', $3::text, 'subject', $4::text) FROM r WHERE $2::text IS NOT NULL) \
             SELECT count(*) FROM r",
            forget_expired_cte(),
            audit::INSERT
        ),
        &[
            db::text(verified.token_id.as_str()),
            db::opt_text(tenant),
            db::text(claims.role.as_str()),
            db::text(claims.sub.as_str()),
            db::int8(i64::try_from(verified.expires_at).unwrap_or(i64::MAX)),
            db::text(caller.subject.as_str()),
            db::text(Actor::from(&caller).role),
        ],
    )?;
    let row = rows.rows.first().ok_or_else(respond::internal)?;
    if db::column::<i64>(row, 0)? > 0 {
        log_operator_revocation(&caller, &scope, &verified.token_id, &claims.sub);
    }
    auth::cache_revoked_tokens(&db, &scope);
    Ok(respond::empty(204))
}

/// The revocation list a presented token belongs to; device tokens are 422.
fn presented_scope(verified: &VerifiedToken) -> Result<TokenScope, Problem> {
    match (verified.claims.role, &verified.claims.tenant) {
        (Role::Operator, _) => Ok(TokenScope::Operator),
        (Role::Admin, Some(tenant)) => Ok(TokenScope::Tenant(tenant.clone())),
        _ => Err(unprocessable_token(
            "is a device token: disable the device or complete a key rotation \
             (PATCH /v1/devices/{id}) to revoke its tokens",
        )),
    }
}

/// The scope of a stored row (`tenant_id`, NULL for operators).
fn stored_scope(tenant: Option<&str>) -> Result<TokenScope, Problem> {
    match tenant {
        None => Ok(TokenScope::Operator),
        Some(tenant) => TenantId::parse(tenant)
            .map(TokenScope::Tenant)
            .map_err(|e| {
                eprintln!("auth: access_tokens holds an invalid tenant id: {e}");
                respond::internal()
            }),
    }
}

/// Operators may revoke any token; admins their own tenant's.
fn may_revoke(caller: &Caller, scope: &TokenScope) -> Result<bool, Problem> {
    Ok(match caller.role {
        Role::Operator => true,
        _ => scope.tenant() == Some(caller.tenant()?),
    })
}

/// A revocation is audited in the token's tenant's log, by the statement that revokes
/// it. Operator tokens belong to no tenant, and the audit log is per tenant: their
/// revocation is logged instead.
fn log_operator_revocation(caller: &Caller, scope: &TokenScope, token_id: &TokenId, subject: &str) {
    if scope.tenant().is_none() {
        eprintln!(
            "auth: operator token {token_id} (subject {subject:?}) revoked by {} {:?}",
            caller.role, caller.subject
        );
    }
}

fn not_recorded() -> Problem {
    AuthError::NotRecorded.into()
}

fn unprocessable_token(detail: &'static str) -> Problem {
    AuthError::InvalidToken(detail).into()
}
