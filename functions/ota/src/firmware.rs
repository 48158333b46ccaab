//! Firmware releases (admin): create, list, read. Immutable once created: there is no
//! update or delete, so a rollout always ships exactly what was reviewed. The version
//! (without build metadata) is unique per (tenant, model).
//!
//! The URL must lead where every device may be sent ([`check_url`]): by default the
//! public internet only, plus what the deployment's `firmware_allowed_private` lists.

use serde::{Deserialize, Serialize};
use serde_json::json;
use spin_sdk::http::{Request, Response};
use toaster_core::ids::Model;
use toaster_core::ota::{
    DestinationError, FirmwareUrl, FirmwareVersion, PrivateDestinations, Sha256Hex,
    check_destination,
};
use toaster_core::problem::Problem;
use toaster_core::token::Role;
use toaster_platform::auth;
use toaster_platform::db::{self, Db, DbValue};
use toaster_platform::query::Query;
use toaster_platform::{body, respond, time};

use crate::audit;
use crate::error::OtaError;

/// Largest firmware image, 64 GiB: a bound against nonsense, not a policy.
pub const MAX_SIZE: u64 = 1 << 36;
pub const MAX_NOTES: usize = 4096;
/// The variable listing the private destinations firmware URLs may point at
/// ([`PrivateDestinations`]); empty by default.
pub const ALLOWED_PRIVATE_VARIABLE: &str = "firmware_allowed_private";

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewFirmware {
    model: Model,
    version: FirmwareVersion,
    url: FirmwareUrl,
    sha256: Sha256Hex,
    size: u64,
    #[serde(default)]
    notes: String,
}

#[derive(Serialize)]
pub struct FirmwareView {
    pub id: String,
    pub model: String,
    pub version: String,
    pub url: String,
    pub sha256: String,
    pub size: i64,
    pub notes: String,
    pub created_at: String,
    pub created_by: String,
}

const COLUMNS: &str = "SELECT firmware_id, model, version, url, sha256, size, notes, \
     (extract(epoch from created_at) * 1000)::int8, created_by FROM firmware";

impl FirmwareView {
    fn from_row(row: &[DbValue]) -> Result<Self, Problem> {
        Ok(Self {
            id: db::column(row, 0)?,
            model: db::column(row, 1)?,
            version: db::column(row, 2)?,
            url: db::column(row, 3)?,
            sha256: db::column(row, 4)?,
            size: db::column(row, 5)?,
            notes: db::column(row, 6)?,
            created_at: time::rfc3339_ms(db::column(row, 7)?),
            created_by: db::column(row, 8)?,
        })
    }
}

/// `POST /v1/ota/firmware`
pub fn create(req: &Request) -> Result<Response, Problem> {
    let caller = auth::authenticate(req, &[Role::Admin])?;
    let tenant = caller.tenant()?;
    let new: NewFirmware = body::json(req)?;
    if new.size == 0 || new.size > MAX_SIZE {
        return Err(
            OtaError::invalid("/size", format!("must be from 1 to {MAX_SIZE} bytes")).into(),
        );
    }
    if new.notes.chars().count() > MAX_NOTES {
        return Err(
            OtaError::invalid("/notes", format!("must be at most {MAX_NOTES} characters")).into(),
        );
    }
    check_url(&new.url)?.map_err(|detail| Problem::from(OtaError::invalid("/url", detail)))?;
    let id = crate::new_id("fw_")?;
    let details = json!({
        "model": new.model, "version": new.version, "url": new.url,
        "sha256": new.sha256, "size": new.size,
    });
    let db = Db::open()?;
    // One statement: the firmware and its audit entry, or (the release exists for the
    // model) neither.
    let inserted = db
        .try_query(
            &format!(
                "WITH f AS (INSERT INTO firmware (tenant_id, firmware_id, model, version, release, url, sha256, size, notes, created_by) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) \
                 ON CONFLICT (tenant_id, model, release) DO NOTHING RETURNING tenant_id, firmware_id), \
                 a AS ({} SELECT tenant_id, $11::text, $10::text, 'firmware.created', firmware_id, $12::jsonb FROM f) \
                 SELECT count(*) FROM f",
                audit::INSERT
            ),
            &[
                db::text(tenant.as_str()),
                db::text(id.as_str()),
                db::text(new.model.as_str()),
                db::text(new.version.to_string()),
                db::text(new.version.release()),
                db::text(new.url.as_str()),
                db::text(new.sha256.as_str()),
                db::int8(new.size as i64),
                db::text(new.notes.as_str()),
                db::text(caller.subject.as_str()),
                db::text(caller.role.as_str()),
                db::jsonb(&details),
            ],
        )
        .map_err(|e| {
            if db::sqlstate(&e) == Some(db::FOREIGN_KEY_VIOLATION) {
                OtaError::NoTenant.into()
            } else {
                db::unavailable_or_internal(&e)
            }
        })?;
    let row = inserted.rows.first().ok_or_else(respond::internal)?;
    if db::column::<i64>(row, 0)? == 0 {
        return Err(OtaError::VersionExists.into());
    }
    let view = load(&db, tenant.as_str(), &id)?.ok_or_else(respond::internal)?;
    let mut response = respond::json(201, &view);
    response.set_header("location", format!("/v1/ota/firmware/{id}"));
    Ok(response)
}

/// Whether devices may be sent to `url` ([`check_destination`]): the reason, for a
/// 422, if not. `firmware_allowed_private` is read only for a URL that is not public,
/// so the common case costs no call into the host; a bad value there is a 500 naming
/// it ([`toaster_platform::config::get`]), for private URLs only.
pub fn check_url(url: &FirmwareUrl) -> Result<Result<(), String>, Problem> {
    let Err(refused) = check_destination(url, &PrivateDestinations::NONE) else {
        return Ok(Ok(()));
    };
    if !refused.is_allowable() {
        return Ok(Err(refused.to_string()));
    }
    let allowed = toaster_platform::config::get(
        ALLOWED_PRIVATE_VARIABLE,
        toaster_core::config::private_destinations,
    )?;
    Ok(check_destination(url, &allowed).map_err(|e| allow_hint(&e)))
}

fn allow_hint(refused: &DestinationError) -> String {
    if refused.is_allowable() {
        format!(
            "{refused}; an operator can allow private destinations with the \
             {ALLOWED_PRIVATE_VARIABLE} variable"
        )
    } else {
        refused.to_string()
    }
}

/// `GET /v1/ota/firmware?model=&limit=&cursor=`, ordered by id.
pub fn list(req: &Request) -> Result<Response, Problem> {
    let caller = auth::authenticate(req, &[Role::Admin])?;
    let tenant = caller.tenant()?;
    let mut query = Query::parse(req.query())?;
    let model = query.take_parsed("model", Model::parse)?;
    let cursor = query.take_parsed("cursor", |v| {
        if crate::is_id("fw_", v) {
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
            "{COLUMNS} WHERE tenant_id = $1 AND ($2::text IS NULL OR model = $2) \
             AND ($3::text IS NULL OR firmware_id > $3) ORDER BY firmware_id LIMIT $4"
        ),
        &[
            db::text(tenant.as_str()),
            db::opt_text(model.map(|m| m.to_string())),
            db::opt_text(cursor),
            db::int8(i64::from(limit) + 1),
        ],
    )?;
    let items = rows
        .rows
        .iter()
        .map(|row| FirmwareView::from_row(row))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(respond::page(items, limit, |f| Some(f.id.clone())))
}

/// `GET /v1/ota/firmware/{id}`
pub fn get(req: &Request, id: &str) -> Result<Response, Problem> {
    let caller = auth::authenticate(req, &[Role::Admin])?;
    let tenant = caller.tenant()?;
    if !crate::is_id("fw_", id) {
        return Err(Problem::not_found());
    }
    let db = Db::open()?;
    let view = load(&db, tenant.as_str(), id)?.ok_or_else(Problem::not_found)?;
    Ok(respond::json(200, &view))
}

fn load(db: &Db, tenant: &str, id: &str) -> Result<Option<FirmwareView>, Problem> {
    let rows = db.query(
        &format!("{COLUMNS} WHERE tenant_id = $1 AND firmware_id = $2"),
        &[db::text(tenant), db::text(id)],
    )?;
    rows.rows
        .first()
        .map(|r| FirmwareView::from_row(r))
        .transpose()
}
