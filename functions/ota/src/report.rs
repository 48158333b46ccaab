//! Device reports, `POST /v1/ota/report`: a device's progress through a rollout it was
//! offered, checked against its state (`toaster_core::ota::transition`), and the halt
//! rule applied in the same transaction.
//!
//! Race safety: reports of one rollout are serialised by a transaction-scoped advisory
//! lock taken before anything is read, so each report's count sees every report
//! committed before it and two concurrent reports cannot both miss the threshold.
//! The halt itself locks the rollout row ([`crate::rollouts::halt_if_due`]), which
//! makes a racing check wait and then see `halted`. Each device's progress is its own
//! row, updated under its row lock: concurrent reports lose no count.

use serde::Deserialize;
use serde_json::json;
use spin_sdk::http::{Request, Response};
use toaster_core::ota::{
    DeviceProgress, FirmwareVersion, HaltRule, ReportStatus, Transition, transition,
};
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
    let (state, halted) = db.transaction(|db| {
        db.query(
            "SELECT 1 FROM pg_advisory_xact_lock(hashtextextended($1, 0))",
            &[db::text(format!("ota-report/{tenant}/{id}"))],
        )?;
        let rows = db.query(
            "SELECT d.state, f.version, r.state, r.threshold_ppm, r.min_reports FROM rollout_devices d \
             JOIN rollouts r ON r.tenant_id = d.tenant_id AND r.rollout_id = d.rollout_id \
             JOIN firmware f ON f.tenant_id = r.tenant_id AND f.firmware_id = r.firmware_id \
             WHERE d.tenant_id = $1 AND d.rollout_id = $2 AND d.device_id = $3 FOR UPDATE OF d",
            &[
                db::text(tenant.as_str()),
                db::text(id),
                db::text(device.as_str()),
            ],
        )?;
        let row = rows.rows.first().ok_or_else(not_offered)?;
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
            Ok(Transition::Repeated) => return Ok((from, false)),
            Ok(Transition::Moved(to)) => to,
        };
        db.execute(
            "UPDATE rollout_devices SET state = $4, error = coalesce($5, error), updated_at = now() \
             WHERE tenant_id = $1 AND rollout_id = $2 AND device_id = $3",
            &[
                db::text(tenant.as_str()),
                db::text(id),
                db::text(device.as_str()),
                db::text(to.as_str()),
                db::opt_text(report.error.clone()),
            ],
        )?;
        // Under the advisory lock this count includes every earlier report. The row
        // lock that halting takes is only taken when the rule says so, so that reports
        // do not make checks of the same rollout wait.
        let rollout_state: String = db::column(row, 2)?;
        let threshold_ppm: i32 = db::column(row, 3)?;
        let min_reports: i32 = db::column(row, 4)?;
        let rule = HaltRule {
            threshold_ppm: u32::try_from(threshold_ppm).unwrap_or(1),
            min_reports: u32::try_from(min_reports).unwrap_or(1).max(1),
        };
        let open = matches!(rollout_state.as_str(), "active" | "paused");
        let halted = open
            && rule.should_halt(&rollouts::tally(db, tenant, id)?)
            && rollouts::halt_if_due(db, tenant, id, &caller, "report")?;
        Ok((to, halted))
    })?;
    if halted {
        cache::invalidate(tenant);
    }
    Ok(respond::json(
        200,
        &json!({"rollout_id": id, "state": state.as_str()}),
    ))
}
