//! The audit log: one row per admin change, written in the same transaction as the
//! change itself, so the log and the data never disagree. `GET /v1/audit` lists the
//! caller's tenant's entries, newest first, with a cursor.
//!
//! Actions: `tenant.created`, `token.minted`, `token.revoked`, `device.created`,
//! `device.updated`, `device.disabled`, `device.enabled`,
//! `device.key_rotation_started`, `device.key_rotated`, `device.decommissioned`,
//! `claim.created`, `claim.revoked`, `device.provisioned`. The revocation of an
//! operator token, which belongs to no tenant, is logged rather than audited.

use serde::Serialize;
use serde_json::Value;
use spin_sdk::http::{Request, Response};
use toaster_core::ids::TenantId;
use toaster_core::problem::Problem;
use toaster_core::token::Role;
use toaster_platform::auth::{self, Caller};
use toaster_platform::db::{self, Db};
use toaster_platform::query::Query;
use toaster_platform::{respond, time};

/// Who made a change: a token's role and subject, or a claim token (by its id).
pub struct Actor<'a> {
    pub role: &'a str,
    pub name: &'a str,
}

impl<'a> From<&'a Caller> for Actor<'a> {
    fn from(caller: &'a Caller) -> Self {
        Actor {
            role: caller.role.as_str(),
            name: &caller.subject,
        }
    }
}

/// Appends an entry. Call inside the change's transaction.
pub fn record(
    db: &Db,
    tenant: &TenantId,
    actor: &Actor<'_>,
    action: &str,
    target: &str,
    details: Value,
) -> Result<(), Problem> {
    db.execute(
        "INSERT INTO audit_log (tenant_id, actor_role, actor, action, target, details) \
         VALUES ($1, $2, $3, $4, $5, $6)",
        &[
            db::text(tenant.as_str()),
            db::text(actor.role),
            db::text(actor.name),
            db::text(action),
            db::text(target),
            db::jsonb(&details),
        ],
    )?;
    Ok(())
}

#[derive(Serialize)]
struct Entry {
    id: String,
    at: String,
    actor: EntryActor,
    action: String,
    target: String,
    details: Value,
}

#[derive(Serialize)]
struct EntryActor {
    role: String,
    name: String,
}

/// `GET /v1/audit?limit=&cursor=`
pub fn list(req: &Request) -> Result<Response, Problem> {
    let caller = auth::authenticate(req, &[Role::Admin])?;
    let tenant = caller.tenant()?;
    let mut query = Query::parse(req.query())?;
    let limit = query.take_limit()?;
    let cursor = query.take_parsed("cursor", |v| {
        v.parse::<i64>()
            .ok()
            .filter(|n| *n > 0)
            .ok_or("not a cursor this endpoint returned")
    })?;
    query.finish()?;

    let db = Db::open()?;
    let rows = db.query(
        "SELECT seq, (extract(epoch from at) * 1000)::int8, actor_role, actor, action, target, details \
         FROM audit_log WHERE tenant_id = $1 AND ($2::int8 IS NULL OR seq < $2) \
         ORDER BY seq DESC LIMIT $3",
        &[
            db::text(tenant.as_str()),
            db::opt_int8(cursor),
            db::int8(i64::from(limit) + 1),
        ],
    )?;
    let mut items = Vec::with_capacity(rows.rows.len());
    for row in &rows.rows {
        let seq: i64 = db::column(row, 0)?;
        items.push(Entry {
            id: seq.to_string(),
            at: time::rfc3339_ms(db::column(row, 1)?),
            actor: EntryActor {
                role: db::column(row, 2)?,
                name: db::column(row, 3)?,
            },
            action: db::column(row, 4)?,
            target: db::column(row, 5)?,
            details: db::column(row, 6)?,
        });
    }
    Ok(respond::page(items, limit, |e| Some(e.id.clone())))
}
