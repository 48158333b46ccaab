//! The device check, `GET /v1/ota/check?version=`, and the manifest public key,
//! `GET /v1/ota/signing-key`.
//!
//! The check reads the tenant's active rollouts from the key-value store
//! ([`crate::cache`]) and keeps those whose cohort holds the device, whose range holds
//! its version and whose firmware is newer. None: 204, without touching PostgreSQL.
//! Otherwise one statement checks the rest against the registry (the device's model,
//! channel and tags, and that it is active), re-checks that the rollout is active
//! while holding `FOR SHARE` on its row, and records the offer; the answer is the
//! manifest signed with `manifest_signing_key`.

use serde_json::json;
use spin_sdk::http::{Request, Response};
use toaster_core::ids::{DeviceId, Model, TenantId};
use toaster_core::ota::{FirmwareVersion, Manifest, ManifestSigner};
use toaster_core::problem::Problem;
use toaster_core::token::Role;
use toaster_platform::auth;
use toaster_platform::db::{self, Db};
use toaster_platform::query::Query;
use toaster_platform::respond;

use crate::cache;

/// The variable holding the Ed25519 private key (PKCS#8 PEM).
pub const SIGNING_KEY_VARIABLE: &str = "manifest_signing_key";

/// `GET /v1/ota/check?version=1.3.2`
pub fn check(req: &Request) -> Result<Response, Problem> {
    let caller = auth::authenticate(req, &[Role::Device])?;
    let tenant = caller.tenant()?;
    let device = caller.device().ok_or_else(Problem::forbidden)?;
    let mut query = Query::parse(req.query())?;
    let version = query
        .take_parsed("version", FirmwareVersion::parse)?
        .ok_or_else(|| {
            Problem::bad_request("the query parameter version (the running firmware) is required")
        })?;
    query.finish()?;

    let mut conn = None;
    let active = cache::active(tenant, &mut conn)?;
    let candidates: Vec<&str> = active
        .iter()
        .filter(|r| r.may_offer(device, &version))
        .map(|r| r.id.as_str())
        .collect();
    if candidates.is_empty() {
        return Ok(respond::empty(204));
    }
    let signer = signer()?;
    let db = match conn {
        Some(db) => db,
        None => Db::open()?,
    };
    let Some(manifest) = offer(&db, tenant, device, &version, &candidates)? else {
        return Ok(respond::empty(204));
    };
    Ok(respond::json(200, &signer.signed(manifest)))
}

/// Records the offer of the one candidate rollout that fits the device (same model
/// and channel, every selector tag, device active, rollout still active) and returns
/// its manifest. A device offered it before gets the same manifest again while it is
/// unfinished; once it installed or failed, nothing. The offer keeps the rollout's
/// stage at the first offer (`rollout_devices.stage`), for the per-stage counts.
fn offer(
    db: &Db,
    tenant: &TenantId,
    device: &DeviceId,
    version: &FirmwareVersion,
    candidates: &[&str],
) -> Result<Option<Manifest>, Problem> {
    let rows = db.query(
        "WITH r AS ( \
           SELECT r.tenant_id, r.rollout_id, r.stage, f.model, f.version, f.url, f.sha256, f.size \
           FROM rollouts r \
           JOIN firmware f ON f.tenant_id = r.tenant_id AND f.firmware_id = r.firmware_id \
           JOIN devices d ON d.tenant_id = r.tenant_id AND d.device_id = $2 \
           WHERE r.tenant_id = $1 AND r.rollout_id = ANY($3::text[]) AND r.state = 'active' \
             AND d.status = 'active' AND d.model = r.model AND d.channel = r.channel \
             AND d.tags @> r.tags \
           ORDER BY r.rollout_id LIMIT 1 \
           FOR SHARE OF r \
         ), offered AS ( \
           INSERT INTO rollout_devices (tenant_id, rollout_id, device_id, from_version, stage) \
           SELECT tenant_id, rollout_id, $2, $4, stage::int2 FROM r \
           ON CONFLICT (tenant_id, rollout_id, device_id) DO UPDATE \
             SET updated_at = rollout_devices.updated_at \
             WHERE rollout_devices.state IN ('offered', 'downloading', 'installing') \
           RETURNING rollout_id \
         ) \
         SELECT r.model, r.rollout_id, r.sha256, r.size, r.url, r.version \
         FROM r JOIN offered ON offered.rollout_id = r.rollout_id",
        &[
            db::text(tenant.as_str()),
            db::text(device.as_str()),
            db::text_array_param(candidates),
            db::text(version.to_string()),
        ],
    )?;
    let Some(row) = rows.rows.first() else {
        return Ok(None);
    };
    let model: String = db::column(row, 0)?;
    let size: i64 = db::column(row, 3)?;
    Ok(Some(Manifest {
        model: Model::parse(&model).map_err(|_| respond::internal())?,
        rollout_id: db::column(row, 1)?,
        sha256: db::column(row, 2)?,
        size: u64::try_from(size).map_err(|_| respond::internal())?,
        url: db::column(row, 4)?,
        version: db::column(row, 5)?,
    }))
}

/// `GET /v1/ota/signing-key`: public, so that anyone can check a manifest.
pub fn signing_key() -> Result<Response, Problem> {
    let signer = signer()?;
    Ok(respond::json(
        200,
        &json!({
            "algorithm": toaster_core::ota::SIGNATURE_ALGORITHM,
            "public_key": signer.public_key_pem(),
            "key_id": signer.key_id(),
            "signed_bytes": "the manifest object as JSON with its members sorted by name and no whitespace (RFC 8785)",
        }),
    ))
}

/// The deployment's manifest signer. A missing or unusable key is a deployment error:
/// 500 naming it, logged ([`toaster_platform::config::get`]).
fn signer() -> Result<ManifestSigner, Problem> {
    toaster_platform::config::get(
        SIGNING_KEY_VARIABLE,
        toaster_core::config::manifest_signing_key,
    )
}
