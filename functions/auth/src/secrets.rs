//! Random identifiers and claim tokens, from the host's CSPRNG (`wasi:random`).

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::TryRngCore;
use rand::rngs::OsRng;
use sha2::{Digest, Sha256};
use toaster_core::problem::Problem;
use toaster_platform::respond;

/// Every claim token starts with this, so that one pasted into the wrong place (a log,
/// a ticket) is recognisable and secret scanners can match it.
pub const CLAIM_TOKEN_PREFIX: &str = "tclaim_";
/// 256 bits of entropy, base64url: 43 characters.
const CLAIM_TOKEN_BYTES: usize = 32;

pub fn random_bytes<const N: usize>() -> Result<[u8; N], Problem> {
    let mut bytes = [0u8; N];
    OsRng.try_fill_bytes(&mut bytes).map_err(|e| {
        eprintln!("auth: the random source failed: {e}");
        respond::internal()
    })?;
    Ok(bytes)
}

/// A new claim token: shown once, stored only as [`claim_token_hash`].
pub fn new_claim_token() -> Result<String, Problem> {
    let bytes = random_bytes::<CLAIM_TOKEN_BYTES>()?;
    Ok(format!(
        "{CLAIM_TOKEN_PREFIX}{}",
        URL_SAFE_NO_PAD.encode(bytes)
    ))
}

/// SHA-256 of the token's text: what the `claims` table keeps. A plain hash suffices,
/// since the token has 256 bits of entropy and cannot be guessed from its hash.
pub fn claim_token_hash(token: &str) -> Vec<u8> {
    Sha256::digest(token.as_bytes()).to_vec()
}

/// `clm_` and 16 hex digits: a claim's public id, for the audit log and listings.
pub fn new_claim_id() -> Result<String, Problem> {
    Ok(format!("clm_{}", hex::encode(random_bytes::<8>()?)))
}

/// `t` and 15 hex digits: a generated tenant id (a valid `TenantId`).
pub fn new_tenant_id() -> Result<String, Problem> {
    let hex = hex::encode(random_bytes::<8>()?);
    Ok(format!("t{}", &hex[..15]))
}
