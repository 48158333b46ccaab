//! The audit log: one row per admin change, written by the same SQL statement as the
//! change itself (a data-modifying CTE beside it, [`INSERT`]), so the log and the data
//! never disagree. `GET /v1/audit` lists the
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

/// The head of an entry's insert, for a CTE of the statement that makes the change:
/// `a AS (INSERT … SELECT tenant, role, actor, action, target, details FROM changed)`,
/// so an entry is written exactly when the change is, and not when it is refused.
pub const INSERT: &str =
    "INSERT INTO audit_log (tenant_id, actor_role, actor, action, target, details)";

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

/// `GET /v1/audit?action=&target=&actor=&limit=&cursor=`: the tenant's entries, newest
/// first. `action` is exact, or a prefix when it ends with `.` (`device.`); `target`
/// and `actor` (the subject's name) are exact. Filters and the cursor combine (the
/// cursor is the last entry's sequence number, whatever the filters).
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
    let action = query.take_parsed("action", parse_action)?;
    let target = query.take_parsed("target", |v| bounded(v, MAX_TARGET))?;
    let actor = query.take_parsed("actor", |v| bounded(v, MAX_ACTOR))?;
    query.finish()?;
    let (exact, prefix) = match action {
        Some(a) if a.ends_with('.') => (None, Some(a)),
        other => (other, None),
    };

    let db = Db::open()?;
    let rows = db.query(
        "SELECT seq, (extract(epoch from at) * 1000)::int8, actor_role, actor, action, target, details \
         FROM audit_log WHERE tenant_id = $1 AND ($2::int8 IS NULL OR seq < $2) \
         AND ($4::text IS NULL OR action = $4) \
         AND ($5::text IS NULL OR starts_with(action, $5)) \
         AND ($6::text IS NULL OR target = $6) \
         AND ($7::text IS NULL OR actor = $7) \
         ORDER BY seq DESC LIMIT $3",
        &[
            db::text(tenant.as_str()),
            db::opt_int8(cursor),
            db::int8(i64::from(limit) + 1),
            db::opt_text(exact),
            db::opt_text(prefix),
            db::opt_text(target),
            db::opt_text(actor),
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

/// Longest `action` filter: actions are short dotted names (`device.key_rotated`).
const MAX_ACTION: usize = 64;
/// Longest `target` filter: the longest thing audited is a device id (128).
const MAX_TARGET: usize = 256;
/// Longest `actor` filter: a subject's name.
const MAX_ACTOR: usize = 256;

/// `action`: 1 to 64 of `a-z`, `0-9`, `_` and `.`, starting with a letter.
fn parse_action(value: &str) -> Result<String, String> {
    let ok = (1..=MAX_ACTION).contains(&value.len())
        && value.starts_with(|c: char| c.is_ascii_lowercase())
        && value
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'_' | b'.'));
    if ok {
        Ok(value.to_owned())
    } else {
        Err(format!(
            "must be 1 to {MAX_ACTION} of a-z, 0-9, '_' and '.', starting with a letter \
             (ending with '.' for a prefix, such as device.)"
        ))
    }
}

/// A non-empty value of at most `max` bytes without control characters.
fn bounded(value: &str, max: usize) -> Result<String, String> {
    if (1..=max).contains(&value.len()) && !value.chars().any(char::is_control) {
        Ok(value.to_owned())
    } else {
        Err(format!(
            "must be 1 to {max} bytes without control characters"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn action_filters_are_dotted_names_or_prefixes() {
        for good in ["device.created", "device.", "d", "token.minted"] {
            assert_eq!(parse_action(good).as_deref(), Ok(good));
        }
        for bad in [
            "",
            ".device",
            "Device.created",
            "device created",
            &"a".repeat(65),
        ] {
            assert!(parse_action(bad).is_err(), "{bad:?}");
        }
        assert!(bounded("a\u{1}b", MAX_ACTOR).is_err());
        assert!(bounded("", MAX_TARGET).is_err());
        assert_eq!(
            bounded("alice@example.com", MAX_ACTOR).as_deref(),
            Ok("alice@example.com")
        );
    }
}
