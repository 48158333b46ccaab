//! Audit entries for OTA changes, in the `audit_log` table of `0001_identity.sql`,
//! written by the change's own statement ([`INSERT`] in a data-modifying CTE, as the
//! `auth` component does), so an entry exists exactly when the change does.
//!
//! Actions: `firmware.created`, `rollout.created`, `rollout.advanced`,
//! `rollout.paused`, `rollout.resumed`, `rollout.aborted`, `rollout.halted`.

/// The head of an entry's insert, for a CTE of the statement that makes the change:
/// `a AS (INSERT … SELECT tenant, role, actor, action, target, details FROM changed)`.
pub const INSERT: &str =
    "INSERT INTO audit_log (tenant_id, actor_role, actor, action, target, details)";
