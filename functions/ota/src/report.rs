//! Device reports, `POST /v1/ota/report`: a device's progress through a rollout it was
//! offered, checked against its state (`toaster_core::ota::transition`), then the halt
//! rule applied.
//!
//! Race safety without a transaction across calls: the progress is written by one
//! statement that applies only if the device's row is still the version read (else it
//! is read and decided again), so concurrent reports of one device lose nothing. The
//! halt rule is applied after that write has committed, by fresh reads
//! ([`crate::rollouts::halt_if_due`]): of two concurrent reports, the one committed
//! last counts both, so they cannot both miss the threshold. The halt itself applies
//! only to the rollout row version it decided on, so a racing check or action decides
//! again and sees `halted`.

use serde::Deserialize;
use serde_json::json;
use spin_sdk::http::{Request, Response};
use toaster_core::ota::{DeviceProgress, FirmwareVersion, ReportStatus, Transition, transition};
use toaster_core::problem::Problem;
use toaster_core::token::Role;
use toaster_platform::auth;
use toaster_platform::db::{self, Db};
use toaster_platform::{body, respond};

use crate::error::OtaError;
use crate::{cache, rollouts};

/// Longest error text a device may report.
pub const MAX_ERROR: usize = 1024;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewReport {
    rollout_id: String,
    status: ReportStatus,
    /// The version the device runs now.
    version: FirmwareVersion,
    #[serde(default)]
    error: Option<String>,
}

/// One attempt: reads the device's progress (with its row version), decides, and
/// writes the new state in one statement that applies only if the row is still that
/// version. `None` on a miss (nothing written); `Some(None)` when the device was not
/// offered the rollout; else the state now and whether the rule should be applied
/// (the progress moved and the rollout is open).
#[allow(clippy::type_complexity)]
fn report_once(
    db: &Db,
    tenant: &toaster_core::ids::TenantId,
    device: &toaster_core::ids::DeviceId,
    id: &str,
    report: &NewReport,
) -> Result<Option<Option<(DeviceProgress, bool)>>, Problem> {
    let rows = db.query(
        "SELECT d.state, f.version, r.state, d.xmin::text FROM rollout_devices d \
         JOIN rollouts r ON r.tenant_id = d.tenant_id AND r.rollout_id = d.rollout_id \
         JOIN firmware f ON f.tenant_id = r.tenant_id AND f.firmware_id = r.firmware_id \
         WHERE d.tenant_id = $1 AND d.rollout_id = $2 AND d.device_id = $3",
        &[
            db::text(tenant.as_str()),
            db::text(id),
            db::text(device.as_str()),
        ],
    )?;
    let Some(row) = rows.rows.first() else {
        return Ok(Some(None));
    };
    let from: String = db::column(row, 0)?;
    let from = DeviceProgress::parse(&from).ok_or_else(respond::internal)?;
    let target: String = db::column(row, 1)?;
    let target = FirmwareVersion::parse(&target).map_err(|_| respond::internal())?;
    if report.status == ReportStatus::Installed && report.version.release() != target.release() {
        return Err(OtaError::invalid(
            "/version",
            format!("a device that installed this rollout runs {target}"),
        )
        .into());
    }
    let to = match transition(from, report.status) {
        Err(refused) => return Err(OtaError::Progress(refused).into()),
        Ok(Transition::Repeated) => return Ok(Some(Some((from, false)))),
        Ok(Transition::Moved(to)) => to,
    };
    let rollout_state: String = db::column(row, 2)?;
    let version: String = db::column(row, 3)?;
    let updated = db.query(
        "UPDATE rollout_devices SET state = $4, error = coalesce($5, error), updated_at = now() \
         WHERE tenant_id = $1 AND rollout_id = $2 AND device_id = $3 AND xmin::text = $6 \
         RETURNING 1",
        &[
            db::text(tenant.as_str()),
            db::text(id),
            db::text(device.as_str()),
            db::text(to.as_str()),
            db::opt_text(report.error.clone()),
            db::text(version),
        ],
    )?;
    if updated.rows.is_empty() {
        return Ok(None);
    }
    let open = matches!(rollout_state.as_str(), "active" | "paused");
    Ok(Some(Some((to, open))))
}

/// `POST /v1/ota/report`
pub fn report(req: &Request) -> Result<Response, Problem> {
    let caller = auth::authenticate(req, &[Role::Device])?;
    let tenant = caller.tenant()?;
    let device = caller.device().ok_or_else(Problem::forbidden)?;
    let report: NewReport = body::json(req)?;
    if report
        .error
        .as_ref()
        .is_some_and(|e| e.chars().count() > MAX_ERROR)
    {
        return Err(
            OtaError::invalid("/error", format!("must be at most {MAX_ERROR} characters")).into(),
        );
    }
    let not_offered = || Problem::from(OtaError::NotOffered);
    if !crate::is_id("ro_", &report.rollout_id) {
        return Err(not_offered());
    }
    let id = report.rollout_id.as_str();

    let db = Db::open()?;
    let mut outcome = None;
    for _ in 0..rollouts::MAX_ATTEMPTS {
        outcome = report_once(&db, tenant, device, id, &report)?;
        if outcome.is_some() {
            break;
        }
    }
    let Some((state, open)) = outcome.ok_or_else(rollouts::busy)? else {
        return Err(not_offered());
    };
    let halted = open && rollouts::halt_if_due(&db, tenant, id, &caller, "report")?;
    if halted {
        cache::invalidate(tenant);
    }
    Ok(respond::json(
        200,
        &json!({"rollout_id": id, "state": state.as_str()}),
    ))
}
