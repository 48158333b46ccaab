//! Access tokens: who is calling, in which tenant, with which role.
//!
//! The backend alone mints and verifies them, so they are symmetric: HS256 with the
//! `token_signing_key` secret variable, checked locally in every component. jwt-simple
//! mints them; every authenticated request verifies one, so verification reads the
//! compact form once itself and checks the MAC with the HMAC-SHA256 jwt-simple is
//! built on (`hmac-sha256`, compared in constant time). jwt-simple's own check decodes
//! the token twice more, with constant-time base64 and buffered claims, which was a
//! tenth of a device request in the component. Claims on the wire:
//!
//! - `iss` = `"toaster"`, `aud` = `"toaster-api"`, `sub`, `iat`, `nbf`, `exp`;
//! - `role`: `operator`, `admin` or `device`;
//! - `tenant`: present for admins and devices, absent for operators;
//! - `gen`: the device's key generation, present only for devices. Disabling a device
//!   or rotating its key bumps the generation, which revokes tokens carrying the old
//!   one (the component compares it with the key-value store);
//! - `jti`: the token's id, `tok_` and 32 hex digits of randomness ([`TokenId`]), so
//!   that one operator or admin token can be revoked without rotating the signing
//!   key. Tokens minted before ids existed have none; [`VerifiedToken::token_id`]
//!   then derives one from the token's signature, so they can be revoked too.
//!
//! Verification refuses any `alg` but HS256 (including `none`), a bad MAC, a token
//! over [`MAX_TOKEN_BYTES`], the wrong `iss`/`aud`, a missing `exp` or `iat`, claims
//! that do not fit the role, and time outside `[nbf - 5 s, exp + 5 s]`: the five
//! seconds of [`LEEWAY_SECS`] absorb clock steps between replicas, and no more, since
//! they extend a revoked token's life.

use std::fmt;
use std::time::Duration;

use jwt_simple::prelude::{Audiences, HS256Key, JWTClaims, MACLike, UnixTimeStamp};
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::KeyError;
use crate::ids::{DeviceId, TenantId};
use crate::jws;

use rand::TryRngCore;
use rand::rngs::OsRng;

pub const ISSUER: &str = "toaster";
pub const AUDIENCE: &str = "toaster-api";
/// Tokens travel in an `Authorization` header; ours are a few hundred bytes.
pub const MAX_TOKEN_BYTES: usize = 4096;
/// 256 bits, the HMAC-SHA256 block strength; `openssl rand -base64 32` gives 44 bytes.
pub const MIN_SECRET_BYTES: usize = 32;
pub const LEEWAY_SECS: u64 = 5;
/// Device tokens are refreshed with a fresh assertion, so they stay short: a stolen
/// one is useful for an hour at most.
pub const MAX_DEVICE_TTL: Duration = Duration::from_secs(3600);
/// Operator and admin tokens: long enough for an offline operator token, short enough
/// that `exp` always stays far from the 2106 limit of the timestamps.
pub const MAX_TTL: Duration = Duration::from_secs(366 * 24 * 3600);
/// Bounds `sub`, which for admins is an identifier chosen elsewhere (an email, a name).
const MAX_SUBJECT_BYTES: usize = 256;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Creates tenants; belongs to none.
    Operator,
    /// Manages one tenant's devices, firmware, rollouts and data.
    Admin,
    /// One device, acting on its own data only.
    Device,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Operator => "operator",
            Role::Admin => "admin",
            Role::Device => "device",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What an access token says about its bearer.
///
/// Build them with [`AccessClaims::operator`], [`AccessClaims::admin`] or
/// [`AccessClaims::device`], which always fit the role; [`TokenSigner::mint`]
/// refuses a hand-built combination that does not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessClaims {
    pub role: Role,
    /// `None` only for operators.
    pub tenant: Option<TenantId>,
    /// The operator's or admin's name, or the device id.
    pub sub: String,
    /// `gen` on the wire (a reserved word in Rust 2024); `Some` only for devices.
    pub key_generation: Option<u64>,
}

impl AccessClaims {
    pub fn operator(sub: impl Into<String>) -> Self {
        Self {
            role: Role::Operator,
            tenant: None,
            sub: sub.into(),
            key_generation: None,
        }
    }

    pub fn admin(tenant: TenantId, sub: impl Into<String>) -> Self {
        Self {
            role: Role::Admin,
            tenant: Some(tenant),
            sub: sub.into(),
            key_generation: None,
        }
    }

    pub fn device(tenant: TenantId, device: &DeviceId, key_generation: u64) -> Self {
        Self {
            role: Role::Device,
            tenant: Some(tenant),
            sub: device.as_str().to_owned(),
            key_generation: Some(key_generation),
        }
    }

    /// The device this token speaks for; `Some` exactly for device tokens.
    pub fn device_id(&self) -> Option<DeviceId> {
        match self.role {
            Role::Device => DeviceId::parse(&self.sub).ok(),
            Role::Operator | Role::Admin => None,
        }
    }

    fn fits_role(&self) -> bool {
        let subject_ok = !self.sub.is_empty() && self.sub.len() <= MAX_SUBJECT_BYTES;
        let shape_ok = match self.role {
            Role::Operator => self.tenant.is_none() && self.key_generation.is_none(),
            Role::Admin => self.tenant.is_some() && self.key_generation.is_none(),
            Role::Device => {
                self.tenant.is_some()
                    && self.key_generation.is_some()
                    && DeviceId::parse(&self.sub).is_ok()
            }
        };
        subject_ok && shape_ok
    }
}

/// An access token's id: `tok_` and 32 lowercase hex digits (128 bits).
///
/// Random for every token minted ([`TokenSigner::mint`]); derived from the signature
/// for tokens minted before tokens carried one ([`VerifiedToken::token_id`]). Not a
/// secret: it names a token in lists, the audit log and revocations, and cannot be
/// used as one.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TokenId(String);

impl TokenId {
    const PREFIX: &'static str = "tok_";
    const HEX_DIGITS: usize = 32;

    /// A new random id from the system's CSPRNG (`wasi:random` in a component).
    pub fn random() -> Result<TokenId, TokenError> {
        let mut bytes = [0u8; Self::HEX_DIGITS / 2];
        OsRng
            .try_fill_bytes(&mut bytes)
            .map_err(|_| TokenError::Random)?;
        Ok(Self::from_bytes(&bytes))
    }

    /// The id a token without `jti` is known by: the first 16 bytes of SHA-256 of its
    /// signature, which no other token shares.
    fn derived(signature: &[u8]) -> TokenId {
        let digest = hmac_sha256::Hash::hash(signature);
        Self::from_bytes(&digest[..Self::HEX_DIGITS / 2])
    }

    fn from_bytes(bytes: &[u8]) -> TokenId {
        let mut text = String::with_capacity(Self::PREFIX.len() + Self::HEX_DIGITS);
        text.push_str(Self::PREFIX);
        text.push_str(&hex::encode(bytes));
        TokenId(text)
    }

    /// An id as a client wrote it (a path segment, a `jti`); `None` unless it has the
    /// exact shape.
    pub fn parse(text: &str) -> Option<TokenId> {
        let hex = text.strip_prefix(Self::PREFIX)?;
        (hex.len() == Self::HEX_DIGITS
            && hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)))
        .then(|| TokenId(text.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for TokenId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A token just minted, with what the minter records about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issued {
    /// The compact JWS: the bearer credential.
    pub token: String,
    /// Its `jti`.
    pub token_id: TokenId,
    /// Unix seconds.
    pub expires_at: u64,
}

/// An access token that passed every check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedToken {
    pub claims: AccessClaims,
    /// Unix seconds; a cache of this verification must not outlive it.
    pub expires_at: u64,
    /// Its `jti`, or for a token minted without one, an id derived from its signature:
    /// what a revocation names.
    pub token_id: TokenId,
}

/// Which check refused a token. For logs and tests: a response says only
/// "invalid or expired access token", so callers cannot probe the checks one by one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejection {
    TooLarge,
    Malformed,
    Algorithm,
    Signature,
    Expired,
    NotYetValid,
    Issuer,
    Audience,
    Claims,
}

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum TokenError {
    /// The token presented by a client is not acceptable: answer 401. The
    /// [`Rejection`] is for logs only.
    #[error("invalid or expired access token")]
    Rejected(Rejection),
    #[error("the token lifetime must be between 1 s and {max_secs} s for this role")]
    Lifetime { max_secs: u64 },
    #[error("the claims do not fit the role")]
    InconsistentClaims,
    #[error("the system clock is set before 1970")]
    Clock,
    #[error("the random source failed")]
    Random,
    #[error("signing the token failed")]
    Signing,
}

/// The token claims as they travel; read strictly after the MAC is checked.
#[derive(Serialize, Deserialize)]
struct WireClaims {
    role: Role,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    tenant: Option<TenantId>,
    #[serde(rename = "gen", default, skip_serializing_if = "Option::is_none")]
    key_generation: Option<u64>,
}

/// The claims as [`TokenSigner::verify_at`] reads them once the MAC holds: strictly
/// (integers, not floats, for times), in one pass (no flattened struct, which serde
/// buffers), ignoring members it does not know.
#[derive(Deserialize)]
struct Payload {
    iss: Option<String>,
    aud: Option<Audience>,
    sub: Option<String>,
    exp: Option<u64>,
    iat: Option<u64>,
    nbf: Option<u64>,
    jti: Option<String>,
    role: Role,
    #[serde(default)]
    tenant: Option<TenantId>,
    #[serde(rename = "gen", default)]
    key_generation: Option<u64>,
}

/// `aud`: one string, or (RFC 7519 allows both) an array of them.
#[derive(Deserialize)]
#[serde(untagged)]
enum Audience {
    One(String),
    Many(Vec<String>),
}

impl Audience {
    fn names(&self, wanted: &str) -> bool {
        match self {
            Audience::One(name) => name == wanted,
            Audience::Many(names) => names.iter().any(|name| name == wanted),
        }
    }
}

/// Mints and verifies access tokens with the deployment's signing secret.
#[derive(Clone)]
pub struct TokenSigner {
    /// Mints.
    key: HS256Key,
    /// Verifies: HMAC-SHA256 keyed with the same secret, its inner pad already
    /// absorbed, cloned for each token.
    mac: hmac_sha256::HMAC,
}

impl fmt::Debug for TokenSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TokenSigner { .. }")
    }
}

impl TokenSigner {
    /// Takes the `token_signing_key` variable as is: any string of at least
    /// [`MIN_SECRET_BYTES`] bytes, such as the output of `openssl rand -base64 32`.
    /// Its bytes are the HMAC key; it is not base64-decoded, so that every tool that
    /// reads the variable derives the same key without agreeing on an encoding.
    pub fn from_secret(secret: &str) -> Result<Self, KeyError> {
        if secret.len() < MIN_SECRET_BYTES {
            return Err(KeyError::SecretTooShort {
                min: MIN_SECRET_BYTES,
            });
        }
        Ok(Self {
            key: HS256Key::from_bytes(secret.as_bytes()),
            mac: hmac_sha256::HMAC::new(secret.as_bytes()),
        })
    }

    /// Mints a token valid from now for `ttl` (whole seconds), with a random id.
    ///
    /// A device token longer than [`MAX_DEVICE_TTL`], or any token longer than
    /// [`MAX_TTL`], is refused rather than clamped: asking for one is a bug in the
    /// caller, and a silently shorter token would surface far from it.
    pub fn mint(&self, claims: &AccessClaims, ttl: Duration) -> Result<String, TokenError> {
        Ok(self.issue(claims, ttl)?.token)
    }

    /// [`TokenSigner::mint`], with the id and expiry a caller records (the API's
    /// admin tokens are listed and revoked by id).
    pub fn issue(&self, claims: &AccessClaims, ttl: Duration) -> Result<Issued, TokenError> {
        let now = jws::now_unix().ok_or(TokenError::Clock)?;
        self.issue_at(claims, ttl, now, TokenId::random()?)
    }

    /// [`TokenSigner::mint`] with the time given in Unix seconds.
    pub fn mint_at(
        &self,
        claims: &AccessClaims,
        ttl: Duration,
        now_unix: u64,
    ) -> Result<String, TokenError> {
        Ok(self
            .issue_at(claims, ttl, now_unix, TokenId::random()?)?
            .token)
    }

    /// Mints with the time and the id given: no clock, no randomness.
    pub fn issue_at(
        &self,
        claims: &AccessClaims,
        ttl: Duration,
        now_unix: u64,
        token_id: TokenId,
    ) -> Result<Issued, TokenError> {
        let max = match claims.role {
            Role::Device => MAX_DEVICE_TTL,
            Role::Operator | Role::Admin => MAX_TTL,
        };
        let ttl_secs = ttl.as_secs();
        if ttl_secs == 0 || ttl > max {
            return Err(TokenError::Lifetime {
                max_secs: max.as_secs(),
            });
        }
        if !claims.fits_role() {
            return Err(TokenError::InconsistentClaims);
        }
        let expires_at = now_unix.saturating_add(ttl_secs);
        let wire = JWTClaims {
            issued_at: Some(UnixTimeStamp::from_secs(now_unix)),
            expires_at: Some(UnixTimeStamp::from_secs(expires_at)),
            invalid_before: Some(UnixTimeStamp::from_secs(now_unix)),
            issuer: Some(ISSUER.to_owned()),
            subject: Some(claims.sub.clone()),
            audiences: Some(Audiences::AsString(AUDIENCE.to_owned())),
            jwt_id: Some(token_id.to_string()),
            nonce: None,
            custom: WireClaims {
                role: claims.role,
                tenant: claims.tenant.clone(),
                key_generation: claims.key_generation,
            },
        };
        let token = self
            .key
            .authenticate(wire)
            .map_err(|_| TokenError::Signing)?;
        Ok(Issued {
            token,
            token_id,
            expires_at,
        })
    }

    /// Verifies a bearer token against the system clock.
    pub fn verify(&self, token: &str) -> Result<VerifiedToken, TokenError> {
        let now = jws::now_unix().ok_or(TokenError::Clock)?;
        self.verify_at(token, now)
    }

    /// [`TokenSigner::verify`] with the time given in Unix seconds.
    pub fn verify_at(&self, token: &str, now_unix: u64) -> Result<VerifiedToken, TokenError> {
        use Rejection::*;
        let reject = TokenError::Rejected;

        if token.len() > MAX_TOKEN_BYTES {
            return Err(reject(TooLarge));
        }
        let parts = jws::split(token).ok_or(reject(Malformed))?;
        let header: jws::Header = jws::decode(parts.header).ok_or(reject(Malformed))?;
        // Before any key handling: `none`, asymmetric algorithms and HS384/512 end here.
        if header.alg != "HS256" {
            return Err(reject(Algorithm));
        }
        let signature = jws::decode_raw(parts.signature).ok_or(reject(Malformed))?;
        // Another length is some other algorithm's signature under a relabelled header.
        let signature: [u8; 32] = signature
            .as_slice()
            .try_into()
            .map_err(|_| reject(Signature))?;
        let mut mac = self.mac.clone();
        mac.update(parts.signing_input);
        if !mac.finalize_verify(&signature) {
            return Err(reject(Signature));
        }

        // The MAC holds, so the payload is ours; read it strictly anyway, since the
        // same secret may have signed tokens of an older shape.
        let payload: Payload = jws::decode(parts.payload).ok_or(reject(Claims))?;
        if payload.iss.as_deref() != Some(ISSUER) {
            return Err(reject(Issuer));
        }
        if !payload.aud.as_ref().is_some_and(|aud| aud.names(AUDIENCE)) {
            return Err(reject(Audience));
        }
        let (Some(exp), Some(iat)) = (payload.exp, payload.iat) else {
            return Err(reject(Claims));
        };
        if now_unix > exp.saturating_add(LEEWAY_SECS) {
            return Err(reject(Expired));
        }
        let starts = payload.nbf.unwrap_or(iat).max(iat);
        if starts > now_unix.saturating_add(LEEWAY_SECS) {
            return Err(reject(NotYetValid));
        }
        let claims = AccessClaims {
            role: payload.role,
            tenant: payload.tenant,
            sub: payload.sub.ok_or(reject(Claims))?,
            key_generation: payload.key_generation,
        };
        if !claims.fits_role() {
            return Err(reject(Claims));
        }
        let token_id = match payload.jti {
            Some(jti) => TokenId::parse(&jti).ok_or(reject(Claims))?,
            None => TokenId::derived(&signature),
        };
        Ok(VerifiedToken {
            claims,
            expires_at: exp,
            token_id,
        })
    }
}

/// The caller's role is not among those an endpoint allows: answer 403.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("the {role} role may not do this")]
pub struct Forbidden {
    pub role: Role,
}

/// Lets the request through only if the token's role is one of `allowed`.
pub fn require_role(token: &VerifiedToken, allowed: &[Role]) -> Result<(), Forbidden> {
    if allowed.contains(&token.claims.role) {
        Ok(())
    } else {
        Err(Forbidden {
            role: token.claims.role,
        })
    }
}

#[cfg(test)]
mod tests;
