//! Audit entries for OTA changes, in the `audit_log` table of `0001_identity.sql`,
//! written by the change's own statement where it has been made one ([`INSERT`] in a
//! data-modifying CTE, as the `auth` component does), else inside its transaction.
//!
//! Actions: `firmware.created`, `rollout.created`, `rollout.advanced`,
//! `rollout.paused`, `rollout.resumed`, `rollout.aborted`, `rollout.halted`.

use serde_json::Value;
use toaster_core::ids::TenantId;
use toaster_core::problem::Problem;
use toaster_platform::auth::Caller;
use toaster_platform::db::{self, Db};

/// The head of an entry's insert, for a CTE of the statement that makes the change:
/// `a AS (INSERT … SELECT tenant, role, actor, action, target, details FROM changed)`.
pub const INSERT: &str =
    "INSERT INTO audit_log (tenant_id, actor_role, actor, action, target, details)";

/// Appends an entry by `caller` (an admin, or the device whose report halted a
/// rollout). Call inside the change's transaction.
pub fn record(
    db: &Db,
    tenant: &TenantId,
    caller: &Caller,
    action: &str,
    target: &str,
    details: Value,
) -> Result<(), Problem> {
    db.execute(
        "INSERT INTO audit_log (tenant_id, actor_role, actor, action, target, details) \
         VALUES ($1, $2, $3, $4, $5, $6)",
        &[
            db::text(tenant.as_str()),
            db::text(caller.role.as_str()),
            db::text(caller.subject.as_str()),
            db::text(action),
            db::text(target),
            db::jsonb(&details),
        ],
    )?;
    Ok(())
}
