//! Device login: the public keys devices register, and the RFC 7523 JWT-bearer
//! assertions they sign with the matching private key to obtain an access token.
//!
//! An assertion is a compact JWS signed ES256 (P-256 key) or EdDSA (Ed25519 key) with
//! `iss` = the tenant, `sub` = the device, `aud` = `"toaster"`, a unique `jti`, `iat`
//! and a short `exp`. Flow in the auth component:
//!
//! 1. [`peek_assertion`] reads `iss`/`sub` unverified, to look the device's keys up;
//! 2. [`verify_assertion`] checks the signature against those keys and every claim;
//! 3. the component refuses a `jti` it has seen, and remembers this one for
//!    [`Assertion::ttl_remaining`] seconds.
//!
//! Device clocks drift, so times get [`LEEWAY_SECS`] of leeway either way. Replay is
//! detected by `jti`, not by token bytes, since ECDSA signatures are malleable.

use std::collections::HashSet;
use std::fmt;

use jwt_simple::JWTError;
use jwt_simple::prelude::{
    ECDSAP256PublicKeyLike, ES256PublicKey, Ed25519PublicKey, EdDSAPublicKeyLike, NoCustomClaims,
    UnixTimeStamp, VerificationOptions,
};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use thiserror::Error;

use crate::KeyError;
use crate::ids::{DeviceId, TenantId};
use crate::jws;

pub const AUDIENCE: &str = "toaster";
pub const MAX_ASSERTION_BYTES: usize = 8192;
/// A P-256 or Ed25519 SPKI PEM is under 200 bytes; the bound stops abuse, not keys.
pub const MAX_PEM_BYTES: usize = 4096;
pub const LEEWAY_SECS: u64 = 60;
/// `exp - iat` at most: an assertion is made to be exchanged at once.
pub const MAX_LIFETIME_SECS: u64 = 3600;
pub const MAX_JTI_LEN: usize = 128;

#[cfg(test)]
const PEM_BEGIN: &str = "-----BEGIN PUBLIC KEY-----";
#[cfg(test)]
const PEM_END: &str = "-----END PUBLIC KEY-----";
use crate::pem::{self, ED25519_SPKI_PREFIX};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeyAlgorithm {
    /// ECDSA over P-256 with SHA-256.
    Es256,
    Ed25519,
}

impl KeyAlgorithm {
    /// The JWS `alg` a signature by this kind of key must declare.
    pub fn jws_alg(self) -> &'static str {
        match self {
            KeyAlgorithm::Es256 => "ES256",
            KeyAlgorithm::Ed25519 => "EdDSA",
        }
    }
}

#[derive(Clone)]
enum VerifyingKey {
    Es256(ES256PublicKey),
    Ed25519(Ed25519PublicKey),
}

/// A device's registered public key: P-256 or Ed25519, as SPKI.
#[derive(Clone)]
pub struct DevicePublicKey {
    key: VerifyingKey,
    /// Canonical SubjectPublicKeyInfo DER, re-encoded from the parsed key, so the same
    /// key always has the same PEM and fingerprint however it was submitted.
    der: Vec<u8>,
}

impl fmt::Debug for DevicePublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DevicePublicKey")
            .field("algorithm", &self.algorithm())
            .field("fingerprint", &self.fingerprint())
            .finish()
    }
}

impl PartialEq for DevicePublicKey {
    fn eq(&self, other: &Self) -> bool {
        self.der == other.der
    }
}

impl Eq for DevicePublicKey {}

impl DevicePublicKey {
    /// Reads a `-----BEGIN PUBLIC KEY-----` (SPKI) PEM block holding a P-256 or
    /// Ed25519 key, as `openssl ec -pubout` and `openssl pkey -pubout` print. RSA,
    /// other curves, private keys, certificates and anything over [`MAX_PEM_BYTES`]
    /// are refused.
    pub fn from_pem(pem: &str) -> Result<Self, KeyError> {
        if pem.len() > MAX_PEM_BYTES {
            return Err(KeyError::TooLarge { max: MAX_PEM_BYTES });
        }
        let der = pem::decode(pem, pem::PUBLIC_KEY).ok_or(KeyError::NotPem)?;
        Self::from_der(&der)
    }

    fn from_der(der: &[u8]) -> Result<Self, KeyError> {
        if der.len() == ED25519_SPKI_PREFIX.len() + 32 && der.starts_with(&ED25519_SPKI_PREFIX) {
            // The encoding is right, so a failure is the point itself: not on the curve,
            // or of small order (jwt-simple refuses those, since one signature would
            // verify for many messages).
            let key = Ed25519PublicKey::from_der(der).map_err(|_| KeyError::WeakKey)?;
            let der = key.to_der();
            return Ok(Self {
                key: VerifyingKey::Ed25519(key),
                der,
            });
        }
        // p256 checks the algorithm and curve OIDs, so RSA and P-384 fail here.
        let key = ES256PublicKey::from_der(der).map_err(|_| KeyError::Unsupported)?;
        let der = key.to_der().map_err(|_| KeyError::Unsupported)?;
        Ok(Self {
            key: VerifyingKey::Es256(key),
            der,
        })
    }

    pub fn algorithm(&self) -> KeyAlgorithm {
        match self.key {
            VerifyingKey::Es256(_) => KeyAlgorithm::Es256,
            VerifyingKey::Ed25519(_) => KeyAlgorithm::Ed25519,
        }
    }

    /// The canonical PEM: what to store and show back.
    pub fn to_pem(&self) -> String {
        pem::encode(pem::PUBLIC_KEY, &self.der)
    }

    /// Lowercase hex SHA-256 of the canonical DER, for logs and the audit trail.
    /// Equals `openssl pkey -pubin -outform DER | sha256sum` for the same key.
    pub fn fingerprint(&self) -> String {
        hex::encode(Sha256::digest(&self.der))
    }

    /// Checks signature, algorithm, `iss` and `aud` (time is checked by the caller);
    /// `Ok(false)` means the signature is not this key's.
    fn verify(&self, token: &str, tenant: &TenantId, now_unix: u64) -> Result<bool, Rejection> {
        let options = VerificationOptions {
            allowed_issuers: Some(HashSet::from([tenant.as_str().to_owned()])),
            allowed_audiences: Some(HashSet::from([AUDIENCE.to_owned()])),
            time_tolerance: Some(UnixTimeStamp::from_secs(LEEWAY_SECS)),
            artificial_time: Some(UnixTimeStamp::from_secs(now_unix)),
            max_token_length: Some(MAX_ASSERTION_BYTES),
            ..VerificationOptions::default()
        };
        let result = match &self.key {
            VerifyingKey::Es256(key) => key.verify_token::<NoCustomClaims>(token, Some(options)),
            VerifyingKey::Ed25519(key) => key.verify_token::<NoCustomClaims>(token, Some(options)),
        };
        match result {
            Ok(_) => Ok(true),
            Err(error) => match error.downcast_ref::<JWTError>() {
                Some(JWTError::InvalidSignature) => Ok(false),
                Some(JWTError::AlgorithmMismatch) => Err(Rejection::Algorithm),
                Some(JWTError::TokenHasExpired) => Err(Rejection::Expired),
                Some(JWTError::TokenNotValidYet | JWTError::ClockDrift) => {
                    Err(Rejection::NotYetValid)
                }
                Some(JWTError::RequiredIssuerMismatch | JWTError::RequiredIssuerMissing) => {
                    Err(Rejection::Issuer)
                }
                Some(JWTError::RequiredAudienceMismatch | JWTError::RequiredAudienceMissing) => {
                    Err(Rejection::Audience)
                }
                Some(JWTError::TokenTooLong) => Err(Rejection::TooLarge),
                Some(_) => Err(Rejection::Malformed),
                // Claims of the wrong type, found only once the signature held.
                None if error.downcast_ref::<serde_json::Error>().is_some() => {
                    Err(Rejection::Claims)
                }
                // The signature libraries' own errors, such as an Ed25519 signature of
                // the wrong length: not a signature by this key.
                None => Ok(false),
            },
        }
    }
}

/// The claims an assertion names before its signature is checked: only for finding
/// the keys to check it with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnverifiedAssertion {
    pub iss: TenantId,
    pub sub: DeviceId,
}

/// An assertion whose signature and claims passed every check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assertion {
    pub tenant: TenantId,
    pub device: DeviceId,
    pub jti: String,
    /// Unix seconds.
    pub iat: u64,
    /// Unix seconds.
    pub exp: u64,
}

impl Assertion {
    /// Seconds the `jti` must stay in the replay cache: until the assertion would be
    /// refused as expired (`exp` plus the leeway), and at least one.
    pub fn ttl_remaining(&self, now_unix: u64) -> u64 {
        self.exp
            .saturating_add(LEEWAY_SECS + 1)
            .saturating_sub(now_unix)
            .max(1)
    }
}

/// Which check refused an assertion. For logs and tests only.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejection {
    TooLarge,
    Malformed,
    /// `none`, an HMAC, or an algorithm none of the device's keys can have made.
    Algorithm,
    /// No registered key made the signature.
    Signature,
    Issuer,
    Audience,
    Expired,
    NotYetValid,
    /// `exp - iat` over [`MAX_LIFETIME_SECS`], or `exp` before `iat`.
    Lifetime,
    /// `jti`, `iat`, `exp` or `sub` missing, or `jti` empty or over [`MAX_JTI_LEN`].
    Claims,
}

/// An assertion was refused. Its message is the same whatever the reason, so that a
/// caller cannot learn which check it failed; [`AssertionError::rejection`] tells
/// logs and tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[error("invalid client assertion")]
pub struct AssertionError(Rejection);

impl AssertionError {
    pub fn rejection(&self) -> Rejection {
        self.0
    }
}

impl From<Rejection> for AssertionError {
    fn from(rejection: Rejection) -> Self {
        Self(rejection)
    }
}

#[derive(Deserialize)]
struct PeekedClaims {
    iss: Option<String>,
    sub: Option<String>,
}

/// Reads `iss` and `sub` without checking anything but their shape and the `alg`:
/// an assertion that can never verify is refused before a key lookup.
pub fn peek_assertion(token: &str) -> Result<UnverifiedAssertion, AssertionError> {
    peek(token).map(|(peeked, _alg)| peeked)
}

fn peek(token: &str) -> Result<(UnverifiedAssertion, KeyAlgorithm), AssertionError> {
    if token.len() > MAX_ASSERTION_BYTES {
        return Err(Rejection::TooLarge.into());
    }
    let parts = jws::split(token).ok_or(Rejection::Malformed)?;
    let header: jws::Header = jws::decode(parts.header).ok_or(Rejection::Malformed)?;
    let alg = match header.alg.as_str() {
        "ES256" => KeyAlgorithm::Es256,
        "EdDSA" => KeyAlgorithm::Ed25519,
        _ => return Err(Rejection::Algorithm.into()),
    };
    let claims: PeekedClaims = jws::decode(parts.payload).ok_or(Rejection::Malformed)?;
    let iss = claims.iss.ok_or(Rejection::Issuer)?;
    let iss = TenantId::parse(&iss).map_err(|_| Rejection::Issuer)?;
    let sub = claims.sub.ok_or(Rejection::Claims)?;
    let sub = DeviceId::parse(&sub).map_err(|_| Rejection::Claims)?;
    Ok((UnverifiedAssertion { iss, sub }, alg))
}

#[derive(Deserialize)]
struct VerifiedClaims {
    jti: Option<String>,
    iat: Option<u64>,
    exp: Option<u64>,
    nbf: Option<u64>,
}

/// Verifies a device's assertion against its registered `keys` (more than one while
/// a key is being rotated) for the tenant the request is addressed to.
pub fn verify_assertion(
    token: &str,
    keys: &[DevicePublicKey],
    expected_tenant: &TenantId,
    now_unix: u64,
) -> Result<Assertion, AssertionError> {
    let (peeked, alg) = peek(token)?;
    if &peeked.iss != expected_tenant {
        return Err(Rejection::Issuer.into());
    }
    let candidates: Vec<&DevicePublicKey> =
        keys.iter().filter(|key| key.algorithm() == alg).collect();
    if candidates.is_empty() {
        // Also when there are no keys: to the caller that is the same wrong key.
        return Err(if keys.is_empty() {
            Rejection::Signature
        } else {
            Rejection::Algorithm
        }
        .into());
    }
    let mut signed = false;
    for key in candidates {
        if key.verify(token, expected_tenant, now_unix)? {
            signed = true;
            break;
        }
    }
    if !signed {
        return Err(Rejection::Signature.into());
    }

    let parts = jws::split(token).ok_or(Rejection::Malformed)?;
    let claims: VerifiedClaims = jws::decode(parts.payload).ok_or(Rejection::Claims)?;
    let (Some(jti), Some(iat), Some(exp)) = (claims.jti, claims.iat, claims.exp) else {
        return Err(Rejection::Claims.into());
    };
    if jti.is_empty() || jti.len() > MAX_JTI_LEN {
        return Err(Rejection::Claims.into());
    }
    if exp < iat || exp - iat > MAX_LIFETIME_SECS {
        return Err(Rejection::Lifetime.into());
    }
    if now_unix > exp.saturating_add(LEEWAY_SECS) {
        return Err(Rejection::Expired.into());
    }
    let starts = claims.nbf.unwrap_or(iat).max(iat);
    if starts > now_unix.saturating_add(LEEWAY_SECS) {
        return Err(Rejection::NotYetValid.into());
    }
    Ok(Assertion {
        tenant: peeked.iss,
        device: peeked.sub,
        jti,
        iat,
        exp,
    })
}

#[cfg(test)]
mod tests;
