//! Rollouts (admin): create, list, read (with the counts per device state and the
//! failure rate), and the actions advance, pause, resume and abort.
//!
//! Every change of a rollout's state is one statement, audit entry included, decided on
//! a read of the rollout and its tally and applied only if the rollout row is still the
//! version (`xmin`) read (else read and decided again; 503 after [`MAX_ATTEMPTS`]
//! misses). The device check takes `FOR SHARE` on the same row in the statement that
//! records an offer, so no offer is made from a rollout whose halt, pause or abort is
//! committing (a row lock leaves the version as it is). After every change the tenant's cached active
//! rollouts are dropped ([`crate::cache::invalidate`]).
//!
//! Timed-out devices count as failed. Since nothing reports a device that never comes
//! back, the halt rule is also applied whenever a rollout is read or acted on, not only
//! on reports ([`halt_if_due`]). A device's check never writes: its cache rebuild only
//! stops offering from a rollout that is due to halt ([`crate::cache::active`]).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use spin_sdk::http::{Request, Response};
use toaster_core::ids::{Channel, Tag, TenantId};
use toaster_core::ota::{
    FirmwareUrl, HaltRule, RolloutAction, RolloutPosition, RolloutState, Stages, Tally,
    VersionRange, apply_action,
};
use toaster_core::problem::Problem;
use toaster_core::token::Role;
use toaster_platform::auth::{self, Caller};
use toaster_platform::db::{self, Db, DbValue};
use toaster_platform::query::Query;
use toaster_platform::{body, respond, time};

use crate::error::OtaError;
use crate::{audit, cache};

/// Most tags a selector may require.
pub const MAX_TAGS: usize = 32;
pub const MAX_MIN_REPORTS: u32 = 1_000_000;
/// 30 days.
pub const MAX_REPORT_TIMEOUT_SECS: u32 = 30 * 24 * 3600;

fn default_stages() -> Vec<u32> {
    vec![1, 10, 50, 100]
}
fn default_threshold() -> f64 {
    0.05
}
fn default_min_reports() -> u32 {
    10
}
fn default_report_timeout() -> u32 {
    3600
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Selector {
    channel: Channel,
    #[serde(default)]
    tags: Vec<Tag>,
    versions: VersionRange,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewRollout {
    firmware_id: String,
    selector: Selector,
    #[serde(default = "default_stages")]
    stages: Vec<u32>,
    #[serde(default = "default_threshold")]
    failure_threshold: f64,
    #[serde(default = "default_min_reports")]
    min_reports: u32,
    #[serde(default = "default_report_timeout")]
    report_timeout_secs: u32,
}

fn invalid(pointer: &'static str, detail: impl Into<String>) -> Problem {
    OtaError::invalid(pointer, detail).into()
}

/// The firmware's URL checked again as firmware creation checks it: firmware stored
/// before the check existed, or before `firmware_allowed_private` was narrowed, is
/// not shipped to a fleet (422 at `/firmware_id`).
fn check_firmware_url(stored: &str) -> Result<(), Problem> {
    let url = FirmwareUrl::parse(stored).map_err(|e| {
        invalid(
            "/firmware_id",
            format!("the firmware's URL is no longer accepted: it {e}"),
        )
    })?;
    crate::firmware::check_url(&url)?
        .map_err(|detail| invalid("/firmware_id", format!("the firmware's URL {detail}")))
}

/// `POST /v1/ota/rollouts`
pub fn create(req: &Request) -> Result<Response, Problem> {
    let caller = auth::authenticate(req, &[Role::Admin])?;
    let tenant = caller.tenant()?;
    let new: NewRollout = body::json(req)?;
    let stages = Stages::new(&new.stages).map_err(|e| invalid("/stages", e.to_string()))?;
    let rule = HaltRule::new(new.failure_threshold, new.min_reports)
        .map_err(|e| invalid("/failure_threshold", e.to_string()))?;
    if !(1..=MAX_MIN_REPORTS).contains(&new.min_reports) {
        return Err(invalid(
            "/min_reports",
            format!("must be from 1 to {MAX_MIN_REPORTS}"),
        ));
    }
    if !(1..=MAX_REPORT_TIMEOUT_SECS).contains(&new.report_timeout_secs) {
        return Err(invalid(
            "/report_timeout_secs",
            format!("must be from 1 to {MAX_REPORT_TIMEOUT_SECS} seconds"),
        ));
    }
    let mut tags = new.selector.tags;
    if tags.len() > MAX_TAGS {
        return Err(invalid(
            "/selector/tags",
            format!("at most {MAX_TAGS} tags"),
        ));
    }
    tags.sort();
    tags.dedup();
    if !crate::is_id("fw_", &new.firmware_id) {
        return Err(invalid("/firmware_id", "no such firmware"));
    }
    let id = crate::new_id("ro_")?;
    let stage_values: Vec<String> = stages.as_slice().iter().map(u8::to_string).collect();

    let db = Db::open()?;
    // The firmware's model, version and URL never change once stored.
    let firmware = db.query(
        "SELECT model, version, url FROM firmware WHERE tenant_id = $1 AND firmware_id = $2",
        &[
            db::text(tenant.as_str()),
            db::text(new.firmware_id.as_str()),
        ],
    )?;
    let Some(row) = firmware.rows.first() else {
        return Err(invalid("/firmware_id", "no such firmware"));
    };
    let model: String = db::column(row, 0)?;
    let version: String = db::column(row, 1)?;
    check_firmware_url(&db::column::<String>(row, 2)?)?;
    let details = json!({
        "firmware_id": new.firmware_id, "model": model, "version": version,
        "selector": {"channel": new.selector.channel, "tags": tags,
                     "versions": new.selector.versions},
        "stages": stages, "failure_threshold": rule.threshold(),
        "min_reports": new.min_reports, "report_timeout_secs": new.report_timeout_secs,
    });
    // One statement: the rollout and its audit entry.
    let created = db
        .try_query(
            &format!(
                "WITH f AS (SELECT tenant_id, firmware_id, model FROM firmware \
                 WHERE tenant_id = $1 AND firmware_id = $3), \
                 r AS (INSERT INTO rollouts (tenant_id, rollout_id, firmware_id, model, channel, tags, \
                 version_range, stages, threshold_ppm, min_reports, report_timeout_secs, created_by) \
                 SELECT f.tenant_id, $2, f.firmware_id, f.model, $5, $6, $7, $8::text[]::int4[], $9::int8, \
                 $10::int8, $11::int8, $12 FROM f WHERE f.model = $4 RETURNING tenant_id, rollout_id), \
                 a AS ({} SELECT tenant_id, $13::text, $12::text, 'rollout.created', rollout_id, $14::jsonb FROM r) \
                 SELECT count(*) FROM r",
                audit::INSERT
            ),
            &[
                db::text(tenant.as_str()),
                db::text(id.as_str()),
                db::text(new.firmware_id.as_str()),
                db::text(model.as_str()),
                db::text(new.selector.channel.as_str()),
                db::text_array_param(&tags),
                db::text(new.selector.versions.to_string()),
                db::text_array_param(&stage_values),
                db::int8(i64::from(rule.threshold_ppm)),
                db::int8(i64::from(new.min_reports)),
                db::int8(i64::from(new.report_timeout_secs)),
                db::text(caller.subject.as_str()),
                db::text(caller.role.as_str()),
                db::jsonb(&details),
            ],
        )
        .map_err(|e| {
            if db::sqlstate(&e) == Some(db::UNIQUE_VIOLATION) {
                OtaError::RolloutExists.into()
            } else {
                db::unavailable_or_internal(&e)
            }
        })?;
    let row = created.rows.first().ok_or_else(respond::internal)?;
    if db::column::<i64>(row, 0)? == 0 {
        return Err(invalid("/firmware_id", "no such firmware"));
    }
    cache::invalidate(tenant);
    let (rollout, counts) = load_with_tally(&db, tenant, &id)?.ok_or_else(respond::internal)?;
    let mut response = respond::json(201, &rollout.view(&counts));
    response.set_header("location", format!("/v1/ota/rollouts/{id}"));
    Ok(response)
}

/// `GET /v1/ota/rollouts?state=&limit=&cursor=`, ordered by id, without counts.
pub fn list(req: &Request) -> Result<Response, Problem> {
    let caller = auth::authenticate(req, &[Role::Admin])?;
    let tenant = caller.tenant()?;
    let mut query = Query::parse(req.query())?;
    let state = query.take_parsed("state", |s| {
        RolloutState::parse(s).ok_or("must be active, paused, halted or aborted")
    })?;
    let cursor = query.take_parsed("cursor", |v| {
        if crate::is_id("ro_", v) {
            Ok(v.to_owned())
        } else {
            Err("not a cursor this endpoint returned")
        }
    })?;
    let limit = query.take_limit()?;
    query.finish()?;
    let db = Db::open()?;
    let rows = db.query(
        &format!(
            "{COLUMNS} WHERE r.tenant_id = $1 AND ($2::text IS NULL OR r.state = $2) \
             AND ($3::text IS NULL OR r.rollout_id > $3) ORDER BY r.rollout_id LIMIT $4"
        ),
        &[
            db::text(tenant.as_str()),
            db::opt_text(state.map(|s| s.as_str())),
            db::opt_text(cursor),
            db::int8(i64::from(limit) + 1),
        ],
    )?;
    let mut items = Vec::with_capacity(rows.rows.len());
    for row in &rows.rows {
        let rollout = Rollout::from_row(row)?;
        let mut view = serde_json::to_value(rollout.view(&Counts::default()))
            .map_err(|_| respond::internal())?;
        if let Some(object) = view.as_object_mut() {
            for field in ["counts", "stage_counts", "devices", "failure_rate"] {
                object.remove(field);
            }
        }
        items.push(view);
    }
    Ok(respond::page(items, limit, |v| {
        v["id"].as_str().map(str::to_owned)
    }))
}

/// `GET /v1/ota/rollouts/{id}`: state, stage, counts (also per stage), failure rate.
/// Applies the halt rule first, so timeouts that pushed the rollout over its threshold
/// halt it here.
pub fn get(req: &Request, id: &str) -> Result<Response, Problem> {
    let caller = auth::authenticate(req, &[Role::Admin])?;
    let tenant = caller.tenant()?;
    if !crate::is_id("ro_", id) {
        return Err(Problem::not_found());
    }
    let db = Db::open()?;
    let (rollout, counts) = load_with_tally(&db, tenant, id)?.ok_or_else(Problem::not_found)?;
    if rollout.is_open() && rollout.rule().should_halt(&counts.all) {
        halt_if_due(&db, tenant, id, &caller, "read")?;
        cache::invalidate(tenant);
        let (rollout, counts) = load_with_tally(&db, tenant, id)?.ok_or_else(Problem::not_found)?;
        return Ok(respond::json(200, &rollout.view(&counts)));
    }
    Ok(respond::json(200, &rollout.view(&counts)))
}

/// `POST /v1/ota/rollouts/{id}/{action}`
pub fn act(req: &Request, id: &str, action: RolloutAction) -> Result<Response, Problem> {
    let caller = auth::authenticate(req, &[Role::Admin])?;
    let tenant = caller.tenant()?;
    if !crate::is_id("ro_", id) {
        return Err(Problem::not_found());
    }
    let db = Db::open()?;
    let mut outcome = Err(busy());
    for _ in 0..MAX_ATTEMPTS {
        match act_once(&db, tenant, id, action, &caller)? {
            Some(done) => {
                outcome = done;
                break;
            }
            None => continue,
        }
    }
    // A halt committed even when the action was refused: either way the cache is stale.
    cache::invalidate(tenant);
    outcome?;
    let (rollout, counts) = load_with_tally(&db, tenant, id)?.ok_or_else(Problem::not_found)?;
    Ok(respond::json(200, &rollout.view(&counts)))
}

/// How often a change decided on a read of the rollout is tried before 503: a miss
/// means the rollout row changed between the read and the write.
pub const MAX_ATTEMPTS: usize = 5;

/// 503: the rollout kept changing under [`MAX_ATTEMPTS`] attempts.
pub fn busy() -> Problem {
    Problem::unavailable(db::RETRY_AFTER_SECS)
        .with_detail("the rollout is being changed by other requests; retry later")
}

/// One attempt at an action: reads the rollout (with its row version) and its tally,
/// decides (halt first if the rule says so, else the action), and writes in one
/// statement that applies only if the rollout row is still the version read. `None`
/// on a miss (nothing written); else the action's outcome (a refusal, or a halt that
/// was written and refuses the action).
fn act_once(
    db: &Db,
    tenant: &TenantId,
    id: &str,
    action: RolloutAction,
    caller: &Caller,
) -> Result<Option<Result<(), Problem>>, Problem> {
    let (rollout, version) = read(db, tenant, id)?.ok_or_else(Problem::not_found)?;
    let tally = tally(db, tenant, id)?;
    if rollout.is_open() && rollout.rule().should_halt(&tally) {
        if !halt(
            db,
            tenant,
            &rollout,
            &version,
            &tally,
            caller,
            action.as_str(),
        )? {
            return Ok(None);
        }
        return Ok(Some(Err(Problem::from(OtaError::HaltedNow))));
    }
    let position = RolloutPosition {
        state: rollout.state,
        stage: rollout.stage,
    };
    let next = match apply_action(action, position, &rollout.stages, &rollout.rule(), &tally) {
        Ok(next) => next,
        Err(refused) => return Ok(Some(Err(Problem::from(OtaError::Action(refused))))),
    };
    let action_name = match action {
        RolloutAction::Advance => "rollout.advanced",
        RolloutAction::Pause => "rollout.paused",
        RolloutAction::Resume => "rollout.resumed",
        RolloutAction::Abort => "rollout.aborted",
    };
    let details = json!({
        "from": {"state": rollout.state.as_str(), "stage": rollout.stage,
                 "percent": rollout.stages.percent(rollout.stage)},
        "to": {"state": next.state.as_str(), "stage": next.stage,
               "percent": rollout.stages.percent(next.stage)},
        "counts": tally,
    });
    let rows = db.query(
        &format!(
            "WITH r AS (UPDATE rollouts SET state = $3, stage = $4::int8, updated_at = now() \
             WHERE tenant_id = $1 AND rollout_id = $2 AND xmin::text = $5 \
             RETURNING tenant_id, rollout_id), \
             a AS ({} SELECT tenant_id, $6::text, $7::text, $8::text, rollout_id, $9::jsonb FROM r) \
             SELECT count(*) FROM r",
            audit::INSERT
        ),
        &[
            db::text(tenant.as_str()),
            db::text(id),
            db::text(next.state.as_str()),
            db::int8(next.stage as i64),
            db::text(version.as_str()),
            db::text(caller.role.as_str()),
            db::text(caller.subject.as_str()),
            db::text(action_name),
            db::jsonb(&details),
        ],
    )?;
    let row = rows.rows.first().ok_or_else(respond::internal)?;
    Ok((db::column::<i64>(row, 0)? > 0).then_some(Ok(())))
}

/// A rollout row.
pub struct Rollout {
    pub id: String,
    pub firmware_id: String,
    pub model: String,
    pub version: String,
    pub channel: String,
    pub tags: Vec<String>,
    pub versions: String,
    pub stages: Stages,
    pub stage: usize,
    pub threshold_ppm: u32,
    pub min_reports: u32,
    pub report_timeout_secs: u32,
    pub state: RolloutState,
    pub halt_reason: Option<String>,
    pub created_ms: i64,
    pub updated_ms: i64,
}

/// [`Rollout::from_row`]'s columns; `r` is `rollouts`, `f` its firmware.
const COLUMNS: &str = "SELECT r.rollout_id, r.firmware_id, r.model, f.version, r.channel, r.tags, \
     r.version_range, r.stages::text[], r.stage, r.threshold_ppm, r.min_reports, \
     r.report_timeout_secs, r.state, r.halt_reason, \
     (extract(epoch from r.created_at) * 1000)::int8, (extract(epoch from r.updated_at) * 1000)::int8 \
     FROM rollouts r JOIN firmware f ON f.tenant_id = r.tenant_id AND f.firmware_id = r.firmware_id";

fn corrupt(what: &'static str) -> Problem {
    OtaError::Corrupt(what).into()
}

impl Rollout {
    fn from_row(row: &[DbValue]) -> Result<Self, Problem> {
        let stages: Vec<u32> = db::text_array(row, 7)?
            .iter()
            .map(|s| s.parse::<u32>().map_err(|_| corrupt("stages")))
            .collect::<Result<_, _>>()?;
        let stages = Stages::new(&stages).map_err(|_| corrupt("stages"))?;
        let int = |index: usize, what: &'static str| -> Result<u32, Problem> {
            let value: i32 = db::column(row, index)?;
            u32::try_from(value).map_err(|_| corrupt(what))
        };
        let state: String = db::column(row, 12)?;
        Ok(Self {
            id: db::column(row, 0)?,
            firmware_id: db::column(row, 1)?,
            model: db::column(row, 2)?,
            version: db::column(row, 3)?,
            channel: db::column(row, 4)?,
            tags: db::text_array(row, 5)?,
            versions: db::column(row, 6)?,
            stages,
            stage: int(8, "stage")? as usize,
            threshold_ppm: int(9, "threshold_ppm")?,
            min_reports: int(10, "min_reports")?,
            report_timeout_secs: int(11, "report_timeout_secs")?,
            state: RolloutState::parse(&state).ok_or_else(|| corrupt("state"))?,
            halt_reason: db::column(row, 13)?,
            created_ms: db::column(row, 14)?,
            updated_ms: db::column(row, 15)?,
        })
    }

    pub fn rule(&self) -> HaltRule {
        HaltRule {
            threshold_ppm: self.threshold_ppm,
            min_reports: self.min_reports.max(1),
        }
    }

    /// Active or paused: the halt rule still applies.
    pub fn is_open(&self) -> bool {
        matches!(self.state, RolloutState::Active | RolloutState::Paused)
    }

    fn view(&self, counts: &Counts) -> RolloutView<'_> {
        let tally = &counts.all;
        let stage_counts = (0..=self.stage)
            .map(|stage| StageCount {
                stage,
                percent: self.stages.percent(stage),
                counts: counts.by_stage.get(&stage).copied().unwrap_or_default(),
            })
            .collect();
        RolloutView {
            id: &self.id,
            firmware_id: &self.firmware_id,
            model: &self.model,
            version: &self.version,
            selector: json!({"channel": self.channel, "tags": self.tags, "versions": self.versions}),
            stages: self.stages.as_slice(),
            stage: self.stage,
            stage_percent: self.stages.percent(self.stage),
            failure_threshold: self.rule().threshold(),
            min_reports: self.min_reports,
            report_timeout_secs: self.report_timeout_secs,
            state: self.state.as_str(),
            halt_reason: self.halt_reason.as_deref(),
            counts: *tally,
            stage_counts,
            devices: tally.total(),
            failure_rate: tally.failure_rate(),
            created_at: time::rfc3339_ms(self.created_ms),
            updated_at: time::rfc3339_ms(self.updated_ms),
        }
    }
}

#[derive(Serialize)]
struct RolloutView<'a> {
    id: &'a str,
    firmware_id: &'a str,
    model: &'a str,
    version: &'a str,
    selector: Value,
    stages: &'a [u8],
    stage: usize,
    stage_percent: u8,
    failure_threshold: f64,
    min_reports: u32,
    report_timeout_secs: u32,
    state: &'a str,
    halt_reason: Option<&'a str>,
    counts: Tally,
    stage_counts: Vec<StageCount>,
    devices: u64,
    failure_rate: f64,
    created_at: String,
    updated_at: String,
}

/// One stage's devices in a rollout's read: those first offered it at that stage.
#[derive(Serialize)]
struct StageCount {
    stage: usize,
    percent: u8,
    #[serde(flatten)]
    counts: Tally,
}

/// A rollout's counts: all its devices, and per stage (index) at which they were
/// first offered it (`rollout_devices.stage`). The per-stage tallies add up to `all`.
#[derive(Default)]
pub struct Counts {
    pub all: Tally,
    pub by_stage: BTreeMap<usize, Tally>,
}

/// The rollout and its counts, or `None` if the tenant has no such rollout.
pub fn load_with_tally(
    db: &Db,
    tenant: &TenantId,
    id: &str,
) -> Result<Option<(Rollout, Counts)>, Problem> {
    let rows = db.query(
        &format!("{COLUMNS} WHERE r.tenant_id = $1 AND r.rollout_id = $2"),
        &[db::text(tenant.as_str()), db::text(id)],
    )?;
    let Some(row) = rows.rows.first() else {
        return Ok(None);
    };
    let rollout = Rollout::from_row(row)?;
    let counts = stage_tallies(db, tenant, id)?;
    Ok(Some((rollout, counts)))
}

/// The device counts of [`tally`], grouped by the stage each device was offered at,
/// and their sum. One statement, so the two agree.
pub fn stage_tallies(db: &Db, tenant: &TenantId, id: &str) -> Result<Counts, Problem> {
    let rows = db.query(
        &format!(
            "SELECT d.stage::int8, {TALLY_COLUMNS} {TALLY_FROM} GROUP BY d.stage ORDER BY d.stage"
        ),
        &[db::text(tenant.as_str()), db::text(id)],
    )?;
    let mut counts = Counts::default();
    for row in &rows.rows {
        let stage: i64 = db::column(row, 0)?;
        let stage = usize::try_from(stage).map_err(|_| corrupt("rollout_devices.stage"))?;
        let tally = tally_from_row(&row[1..])?;
        let all = &mut counts.all;
        all.offered += tally.offered;
        all.downloading += tally.downloading;
        all.installing += tally.installing;
        all.installed += tally.installed;
        all.failed += tally.failed;
        all.timed_out += tally.timed_out;
        counts.by_stage.insert(stage, tally);
    }
    Ok(counts)
}

/// [`tally`]'s count columns, in [`tally_from_row`]'s order.
const TALLY_COLUMNS: &str = "count(*) FILTER (WHERE d.state = 'offered' AND NOT late), \
     count(*) FILTER (WHERE d.state = 'downloading' AND NOT late), \
     count(*) FILTER (WHERE d.state = 'installing' AND NOT late), \
     count(*) FILTER (WHERE d.state = 'installed'), \
     count(*) FILTER (WHERE d.state = 'failed'), \
     count(*) FILTER (WHERE late)";

/// The rollout's devices (`d`), each with `late`: unfinished past its report deadline.
const TALLY_FROM: &str = "FROM rollouts r JOIN rollout_devices d \
       ON d.tenant_id = r.tenant_id AND d.rollout_id = r.rollout_id \
     CROSS JOIN LATERAL (SELECT d.state IN ('offered', 'downloading', 'installing') \
       AND d.offered_at + make_interval(secs => r.report_timeout_secs) <= clock_timestamp() AS late) l \
     WHERE r.tenant_id = $1 AND r.rollout_id = $2";

fn tally_from_row(row: &[DbValue]) -> Result<Tally, Problem> {
    let count = |index: usize| -> Result<u64, Problem> {
        let n: i64 = db::column(row, index)?;
        Ok(u64::try_from(n).unwrap_or(0))
    };
    Ok(Tally {
        offered: count(0)?,
        downloading: count(1)?,
        installing: count(2)?,
        installed: count(3)?,
        failed: count(4)?,
        timed_out: count(5)?,
    })
}

/// The rollout and its row version (`xmin`), which every write of it changes.
pub fn read(db: &Db, tenant: &TenantId, id: &str) -> Result<Option<(Rollout, String)>, Problem> {
    let rows = db.query(
        &format!(
            "{} WHERE r.tenant_id = $1 AND r.rollout_id = $2",
            COLUMNS.replacen(" FROM rollouts r", ", r.xmin::text FROM rollouts r", 1)
        ),
        &[db::text(tenant.as_str()), db::text(id)],
    )?;
    let Some(row) = rows.rows.first() else {
        return Ok(None);
    };
    let version: String = db::column(row, row.len() - 1)?;
    Ok(Some((Rollout::from_row(row)?, version)))
}

/// Counts the rollout's devices per state as of this statement. An unfinished device
/// whose report deadline has passed is counted as timed out (and only there).
pub fn tally(db: &Db, tenant: &TenantId, id: &str) -> Result<Tally, Problem> {
    let rows = db.query(
        &format!("SELECT {TALLY_COLUMNS} {TALLY_FROM}"),
        &[db::text(tenant.as_str()), db::text(id)],
    )?;
    let Some(row) = rows.rows.first() else {
        return Ok(Tally::default());
    };
    tally_from_row(row)
}

/// Reads the rollout and counts, and halts it if the rule says so (one statement that
/// applies only if the rollout row is still the version read; read again on a miss).
/// `Ok(true)` if this call halted it.
pub fn halt_if_due(
    db: &Db,
    tenant: &TenantId,
    id: &str,
    caller: &Caller,
    trigger: &str,
) -> Result<bool, Problem> {
    for _ in 0..MAX_ATTEMPTS {
        let Some((rollout, version)) = read(db, tenant, id)? else {
            return Ok(false);
        };
        if !rollout.is_open() {
            return Ok(false);
        }
        let tally = tally(db, tenant, id)?;
        if !rollout.rule().should_halt(&tally) {
            return Ok(false);
        }
        if halt(db, tenant, &rollout, &version, &tally, caller, trigger)? {
            return Ok(true);
        }
    }
    Err(busy())
}

/// Sets `halted` with its reason and writes the audit entry, in one statement that
/// applies only if the rollout row is still `version`; `false` if it was not (nothing
/// written). The caller has checked [`HaltRule::should_halt`].
fn halt(
    db: &Db,
    tenant: &TenantId,
    rollout: &Rollout,
    version: &str,
    tally: &Tally,
    caller: &Caller,
    trigger: &str,
) -> Result<bool, Problem> {
    let reason = format!(
        "{} of {} devices with an outcome failed or timed out ({:.4}), at or above the failure threshold {} after at least {} reports",
        tally.failures(),
        tally.outcomes(),
        tally.failure_rate(),
        rollout.rule().threshold(),
        rollout.min_reports,
    );
    let details = json!({
        "reason": reason, "trigger": trigger, "counts": tally,
        "failure_rate": tally.failure_rate(),
        "failure_threshold": rollout.rule().threshold(),
        "min_reports": rollout.min_reports,
        "stage": rollout.stage, "percent": rollout.stages.percent(rollout.stage),
    });
    let rows = db.query(
        &format!(
            "WITH r AS (UPDATE rollouts SET state = 'halted', halt_reason = $3, updated_at = now() \
             WHERE tenant_id = $1 AND rollout_id = $2 AND xmin::text = $4 \
             RETURNING tenant_id, rollout_id), \
             a AS ({} SELECT tenant_id, $5::text, $6::text, 'rollout.halted', rollout_id, $7::jsonb FROM r) \
             SELECT count(*) FROM r",
            audit::INSERT
        ),
        &[
            db::text(tenant.as_str()),
            db::text(rollout.id.as_str()),
            db::text(reason.as_str()),
            db::text(version),
            db::text(caller.role.as_str()),
            db::text(caller.subject.as_str()),
            db::jsonb(&details),
        ],
    )?;
    let row = rows.rows.first().ok_or_else(respond::internal)?;
    Ok(db::column::<i64>(row, 0)? > 0)
}
