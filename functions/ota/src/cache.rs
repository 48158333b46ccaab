//! The tenant's active rollouts in the key-value store, under `ota:{tenant}`: what the
//! device check reads so that a device outside every cohort costs one key-value read
//! and no PostgreSQL round trip.
//!
//! The entry is per tenant rather than per (tenant, model): a device token names the
//! tenant and the device but not the model, and reading the model from anywhere would
//! be a second read. The entry holds every active rollout of the tenant (at most one
//! per model and channel) with what the check needs before going to PostgreSQL:
//! cohort percentage, version range, target version. Model, channel and tags are
//! checked by the offer statement against the registry.
//!
//! Invalidated (deleted) after every committed rollout change. The value may still be
//! stale (a lost delete, or a rebuild racing with a change), so entries older than
//! [`MAX_AGE_MS`] are rebuilt; and staleness can only withhold an offer, never make
//! one: the offer statement re-checks the rollout's state in PostgreSQL, and a stage
//! only grows, so a stale percentage is a smaller cohort.
//!
//! The check path only reads: a rebuild leaves out the rollouts that the halt rule
//! says must halt (the counts come with the same query), so nothing more is offered
//! from them, but it does not halt them. The halt itself is written where reports and
//! timeouts are processed: a report, a read of the rollout, an action on it
//! ([`crate::rollouts`]).

use serde::{Deserialize, Serialize};
use toaster_core::ids::{DeviceId, TenantId};
use toaster_core::ota::{FirmwareVersion, HaltRule, Tally, VersionRange, in_cohort, is_offerable};
use toaster_core::problem::Problem;
use toaster_platform::db::{self, Db};
use toaster_platform::{kv, time};

/// An entry older than this is rebuilt from PostgreSQL.
pub const MAX_AGE_MS: i64 = 10_000;

/// `ota:{tenant}`.
pub fn key(tenant: &TenantId) -> String {
    format!("ota:{tenant}")
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ActiveRollouts {
    /// When this was read from PostgreSQL (Unix ms).
    pub built_ms: i64,
    pub rollouts: Vec<ActiveRollout>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ActiveRollout {
    pub id: String,
    pub model: String,
    pub channel: String,
    /// The selector's version range.
    pub versions: String,
    /// The current stage's percentage.
    pub percent: u8,
    /// The firmware's version.
    pub version: String,
}

impl ActiveRollout {
    /// Whether the device may be offered this rollout, as far as the cache can tell:
    /// in the cohort, its version in the range, and the firmware newer than it.
    pub fn may_offer(&self, device: &DeviceId, current: &FirmwareVersion) -> bool {
        if !in_cohort(&self.id, device, self.percent) {
            return false;
        }
        let (Ok(range), Ok(target)) = (
            VersionRange::parse(&self.versions),
            FirmwareVersion::parse(&self.version),
        ) else {
            eprintln!("ota: cached rollout {} is unreadable", self.id);
            return false;
        };
        is_offerable(&range, current, &target)
    }
}

/// The tenant's active rollouts that may still offer: from the store when fresh, else
/// from PostgreSQL (then cached). Opens `conn` when it has to go to PostgreSQL, for the
/// caller to reuse.
///
/// A rebuild leaves out each rollout the halt rule says must halt (devices that went
/// silent past their deadline count as failed), within [`MAX_AGE_MS`] of the counts
/// crossing the threshold. It writes nothing to PostgreSQL: the halt is recorded by the
/// next report or read of the rollout.
pub fn active(tenant: &TenantId, conn: &mut Option<Db>) -> Result<Vec<ActiveRollout>, Problem> {
    let key = key(tenant);
    let store = match kv::open() {
        Ok(store) => Some(store),
        Err(e) => {
            eprintln!("ota: key-value store unavailable: {}", kv::describe(&e));
            None
        }
    };
    let now = time::now_ms();
    if let Some(store) = &store {
        match kv::get_json::<ActiveRollouts>(store, &key) {
            Ok(Some(entry)) if (0..=MAX_AGE_MS).contains(&(now - entry.built_ms)) => {
                return Ok(entry.rollouts);
            }
            Ok(_) => {}
            Err(e) => eprintln!("ota: cannot read {key}: {}", kv::describe(&e)),
        }
    }
    let db = match conn.take() {
        Some(db) => db,
        None => Db::open()?,
    };
    let rollouts = load(&db, tenant)?;
    *conn = Some(db);
    if let Some(store) = &store {
        let entry = ActiveRollouts {
            built_ms: now,
            rollouts: rollouts.clone(),
        };
        if let Err(e) = kv::set_json(store, &key, &entry) {
            eprintln!("ota: cannot cache {key}: {}", kv::describe(&e));
        }
    }
    Ok(rollouts)
}

/// The active rollouts, without those the halt rule says must halt.
fn load(db: &Db, tenant: &TenantId) -> Result<Vec<ActiveRollout>, Problem> {
    let rows = db.query(
        "SELECT r.rollout_id, r.model, r.channel, r.version_range, r.stages[r.stage + 1], f.version, \
                r.threshold_ppm, r.min_reports, t.installed, t.failed, t.timed_out \
         FROM rollouts r JOIN firmware f ON f.tenant_id = r.tenant_id AND f.firmware_id = r.firmware_id \
         CROSS JOIN LATERAL ( \
           SELECT count(*) FILTER (WHERE d.state = 'installed') AS installed, \
                  count(*) FILTER (WHERE d.state = 'failed') AS failed, \
                  count(*) FILTER (WHERE d.state IN ('offered', 'downloading', 'installing') \
                    AND d.offered_at + make_interval(secs => r.report_timeout_secs) <= clock_timestamp()) AS timed_out \
           FROM rollout_devices d WHERE d.tenant_id = r.tenant_id AND d.rollout_id = r.rollout_id) t \
         WHERE r.tenant_id = $1 AND r.state = 'active' ORDER BY r.rollout_id",
        &[db::text(tenant.as_str())],
    )?;
    let mut rollouts = Vec::with_capacity(rows.rows.len());
    for row in &rows.rows {
        let percent: i32 = db::column(row, 4)?;
        let rollout = ActiveRollout {
            id: db::column(row, 0)?,
            model: db::column(row, 1)?,
            channel: db::column(row, 2)?,
            versions: db::column(row, 3)?,
            percent: u8::try_from(percent).unwrap_or(0),
            version: db::column(row, 5)?,
        };
        let threshold_ppm: i32 = db::column(row, 6)?;
        let min_reports: i32 = db::column(row, 7)?;
        let count = |index: usize| -> Result<u64, Problem> {
            let n: i64 = db::column(row, index)?;
            Ok(u64::try_from(n).unwrap_or(0))
        };
        let rule = HaltRule {
            threshold_ppm: u32::try_from(threshold_ppm).unwrap_or(1),
            min_reports: u32::try_from(min_reports).unwrap_or(1).max(1),
        };
        let tally = Tally {
            installed: count(8)?,
            failed: count(9)?,
            timed_out: count(10)?,
            ..Tally::default()
        };
        if rule.should_halt(&tally) {
            eprintln!(
                "ota: rollout {tenant}/{} is due to halt; offering nothing from it",
                rollout.id
            );
        } else {
            rollouts.push(rollout);
        }
    }
    Ok(rollouts)
}

/// Drops the tenant's entry after a committed change. Best effort: a failure is
/// logged, and [`MAX_AGE_MS`] bounds its effect.
pub fn invalidate(tenant: &TenantId) {
    let key = key(tenant);
    if let Err(e) = kv::open().and_then(|store| store.delete(&key)) {
        eprintln!("ota: cannot invalidate {key}: {}", kv::describe(&e));
    }
}
