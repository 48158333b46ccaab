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

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
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

const PEM_BEGIN: &str = "-----BEGIN PUBLIC KEY-----";
const PEM_END: &str = "-----END PUBLIC KEY-----";
/// SubjectPublicKeyInfo prefix of an Ed25519 key (OID 1.3.101.112, 32-byte key).
const ED25519_SPKI_PREFIX: [u8; 12] = [
    0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
];

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
        let body = pem
            .trim()
            .strip_prefix(PEM_BEGIN)
            .and_then(|rest| rest.strip_suffix(PEM_END))
            .ok_or(KeyError::NotPem)?;
        // A second block hidden between our markers would otherwise be base64 noise.
        if body.contains('-') {
            return Err(KeyError::NotPem);
        }
        let base64: String = body.split_ascii_whitespace().collect();
        let der = STANDARD.decode(base64).map_err(|_| KeyError::NotPem)?;
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
        let base64 = STANDARD.encode(&self.der);
        let mut pem = String::with_capacity(base64.len() + 64);
        pem.push_str(PEM_BEGIN);
        pem.push('\n');
        // Standard PEM lines are 64 characters; base64 output is ASCII, so the
        // byte chunks are whole characters.
        for line in base64.as_bytes().chunks(64) {
            pem.push_str(&String::from_utf8_lossy(line));
            pem.push('\n');
        }
        pem.push_str(PEM_END);
        pem.push('\n');
        pem
    }

    /// Lowercase hex SHA-256 of the canonical DER, for logs and the audit trail.
    /// Equals `openssl pkey -pubin -outform DER | sha256sum` for the same key.
    pub fn fingerprint(&self) -> String {
        Sha256::digest(&self.der)
            .iter()
            .map(|byte| format!("{byte:02x}"))
            .collect()
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
mod tests {
    use super::*;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use jwt_simple::prelude::{
        ECDSAP256KeyPairLike, ES256KeyPair, ES256kKeyPair, ES384KeyPair, Ed25519KeyPair,
        EdDSAKeyPairLike, HS256Key, JWTClaims, MACLike,
    };
    use serde_json::{Value, json};

    const NOW: u64 = 1_800_000_000;

    fn tenant() -> TenantId {
        TenantId::parse("acme").unwrap()
    }

    fn claims(edit: impl FnOnce(&mut serde_json::Map<String, Value>)) -> JWTClaims<Value> {
        let mut custom = json!({
            "iss": "acme", "sub": "sn-1", "aud": "toaster",
            "jti": "a1b2c3", "iat": NOW, "exp": NOW + 300,
        });
        if let Some(object) = custom.as_object_mut() {
            edit(object);
        }
        JWTClaims {
            issued_at: None,
            expires_at: None,
            invalid_before: None,
            issuer: None,
            subject: None,
            audiences: None,
            jwt_id: None,
            nonce: None,
            custom,
        }
    }

    struct Device {
        sign: Box<dyn Fn(JWTClaims<Value>) -> String>,
        key: DevicePublicKey,
    }

    fn es256_device() -> Device {
        let pair = ES256KeyPair::generate();
        let key = DevicePublicKey::from_pem(&pair.public_key().to_pem().unwrap()).unwrap();
        Device {
            sign: Box::new(move |claims| pair.sign(claims).unwrap()),
            key,
        }
    }

    fn ed25519_device() -> Device {
        let pair = Ed25519KeyPair::generate();
        let key = DevicePublicKey::from_pem(&pair.public_key().to_pem()).unwrap();
        Device {
            sign: Box::new(move |claims| pair.sign(claims).unwrap()),
            key,
        }
    }

    fn rejection(result: Result<Assertion, AssertionError>) -> Rejection {
        match result {
            Err(error) => error.rejection(),
            Ok(assertion) => panic!("accepted {assertion:?}"),
        }
    }

    fn verify(device: &Device, token: &str, now: u64) -> Result<Assertion, AssertionError> {
        verify_assertion(token, std::slice::from_ref(&device.key), &tenant(), now)
    }

    fn forge(header: &str, payload: &Value, signature: &[u8]) -> String {
        format!(
            "{}.{}.{}",
            URL_SAFE_NO_PAD.encode(header),
            URL_SAFE_NO_PAD.encode(payload.to_string()),
            URL_SAFE_NO_PAD.encode(signature)
        )
    }

    #[test]
    fn accepts_a_valid_assertion_from_either_key_type() {
        for device in [es256_device(), ed25519_device()] {
            let token = (device.sign)(claims(|_| {}));
            let peeked = peek_assertion(&token).unwrap();
            assert_eq!(peeked.iss.as_str(), "acme");
            assert_eq!(peeked.sub.as_str(), "sn-1");
            let assertion = verify(&device, &token, NOW + 10).unwrap();
            assert_eq!(
                assertion,
                Assertion {
                    tenant: tenant(),
                    device: DeviceId::parse("sn-1").unwrap(),
                    jti: "a1b2c3".to_owned(),
                    iat: NOW,
                    exp: NOW + 300,
                }
            );
        }
    }

    #[test]
    fn any_of_several_keys_may_sign_during_rotation() {
        let old = ed25519_device();
        let new = es256_device();
        let token = (new.sign)(claims(|_| {}));
        let keys = [old.key.clone(), new.key.clone()];
        assert!(verify_assertion(&token, &keys, &tenant(), NOW).is_ok());
    }

    #[test]
    fn a_signature_by_another_key_is_refused() {
        for (signer, verifier) in [
            (es256_device(), es256_device()),
            (ed25519_device(), ed25519_device()),
        ] {
            let token = (signer.sign)(claims(|_| {}));
            assert_eq!(
                rejection(verify(&verifier, &token, NOW)),
                Rejection::Signature
            );
        }
        let token = (es256_device().sign)(claims(|_| {}));
        assert_eq!(
            rejection(verify_assertion(&token, &[], &tenant(), NOW)),
            Rejection::Signature
        );
    }

    #[test]
    fn alg_none_is_refused() {
        let device = es256_device();
        let token = forge(r#"{"alg":"none"}"#, &claims(|_| {}).custom, b"");
        assert_eq!(
            rejection(verify(&device, &token, NOW)),
            Rejection::Algorithm
        );
        assert_eq!(
            peek_assertion(&token).unwrap_err().rejection(),
            Rejection::Algorithm
        );
    }

    #[test]
    fn hmac_with_the_public_key_as_secret_is_refused() {
        let device = es256_device();
        for alg in ["HS256", "HS384", "HS512"] {
            let token = HS256Key::from_bytes(device.key.to_pem().as_bytes())
                .authenticate(claims(|_| {}))
                .unwrap();
            let parts: Vec<&str> = token.split('.').collect();
            let header = URL_SAFE_NO_PAD.encode(format!(r#"{{"alg":"{alg}"}}"#));
            let token = format!("{header}.{}.{}", parts[1], parts[2]);
            assert_eq!(
                rejection(verify(&device, &token, NOW)),
                Rejection::Algorithm,
                "{alg}"
            );
        }
    }

    #[test]
    fn the_alg_must_match_the_key_type() {
        let es256 = es256_device();
        let ed25519 = ed25519_device();
        let token = (es256.sign)(claims(|_| {}));
        assert_eq!(
            rejection(verify(&ed25519, &token, NOW)),
            Rejection::Algorithm
        );
        let token = (ed25519.sign)(claims(|_| {}));
        assert_eq!(rejection(verify(&es256, &token, NOW)), Rejection::Algorithm);

        // An EdDSA signature relabelled as ES256 is checked by the P-256 key and fails.
        let parts: Vec<String> = token.split('.').map(str::to_owned).collect();
        let header = URL_SAFE_NO_PAD.encode(r#"{"alg":"ES256"}"#);
        let relabelled = format!("{header}.{}.{}", parts[1], parts[2]);
        assert_eq!(
            rejection(verify(&es256, &relabelled, NOW)),
            Rejection::Signature
        );
    }

    #[test]
    fn a_tampered_payload_is_refused() {
        let device = ed25519_device();
        let token = (device.sign)(claims(|_| {}));
        let parts: Vec<&str> = token.split('.').collect();
        let payload = claims(|c| {
            c.insert("sub".into(), json!("sn-2"));
        })
        .custom;
        let forged = format!(
            "{}.{}.{}",
            parts[0],
            URL_SAFE_NO_PAD.encode(payload.to_string()),
            parts[2]
        );
        assert_eq!(
            rejection(verify(&device, &forged, NOW)),
            Rejection::Signature
        );
    }

    #[test]
    fn wrong_audience_or_tenant_is_refused() {
        let device = es256_device();
        for aud in [json!("toaster-api"), json!(["other"]), Value::Null] {
            let token = (device.sign)(claims(|c| {
                if aud.is_null() {
                    c.remove("aud");
                } else {
                    c.insert("aud".into(), aud.clone());
                }
            }));
            assert_eq!(
                rejection(verify(&device, &token, NOW)),
                Rejection::Audience,
                "{aud}"
            );
        }
        let token = (device.sign)(claims(|c| {
            c.insert("aud".into(), json!(["toaster", "other"]));
        }));
        assert!(verify(&device, &token, NOW).is_ok());

        let token = (device.sign)(claims(|_| {}));
        let other = TenantId::parse("other").unwrap();
        assert_eq!(
            rejection(verify_assertion(
                &token,
                std::slice::from_ref(&device.key),
                &other,
                NOW
            )),
            Rejection::Issuer
        );
    }

    #[test]
    fn expiry_has_sixty_seconds_of_leeway() {
        let device = ed25519_device();
        let token = (device.sign)(claims(|_| {}));
        assert!(verify(&device, &token, NOW + 300 + 60).is_ok());
        assert_eq!(
            rejection(verify(&device, &token, NOW + 300 + 61)),
            Rejection::Expired
        );
    }

    #[test]
    fn iat_and_nbf_in_the_future_are_refused_beyond_the_leeway() {
        let device = es256_device();
        let token = (device.sign)(claims(|_| {}));
        assert!(verify(&device, &token, NOW - 60).is_ok());
        assert_eq!(
            rejection(verify(&device, &token, NOW - 61)),
            Rejection::NotYetValid
        );

        let token = (device.sign)(claims(|c| {
            c.insert("nbf".into(), json!(NOW + 120));
        }));
        assert!(verify(&device, &token, NOW + 60).is_ok());
        assert_eq!(
            rejection(verify(&device, &token, NOW + 59)),
            Rejection::NotYetValid
        );
    }

    #[test]
    fn lifetimes_over_an_hour_are_refused() {
        let device = es256_device();
        let token = (device.sign)(claims(|c| {
            c.insert("exp".into(), json!(NOW + 3600));
        }));
        assert!(verify(&device, &token, NOW).is_ok());
        for exp in [NOW + 3601, NOW - 1, u64::MAX] {
            let token = (device.sign)(claims(|c| {
                c.insert("exp".into(), json!(exp));
            }));
            let rejected = rejection(verify(&device, &token, NOW));
            assert!(
                matches!(rejected, Rejection::Lifetime | Rejection::Expired),
                "exp {exp}: {rejected:?}"
            );
        }
    }

    #[test]
    fn missing_claims_are_refused() {
        let device = ed25519_device();
        for field in ["jti", "exp", "iat"] {
            let token = (device.sign)(claims(|c| {
                c.remove(field);
            }));
            assert_eq!(
                rejection(verify(&device, &token, NOW)),
                Rejection::Claims,
                "{field}"
            );
        }
        for jti in [json!(""), json!("j".repeat(129)), json!(42)] {
            let token = (device.sign)(claims(|c| {
                c.insert("jti".into(), jti.clone());
            }));
            assert_eq!(rejection(verify(&device, &token, NOW)), Rejection::Claims);
        }
        let token = (device.sign)(claims(|c| {
            c.insert("jti".into(), json!("j".repeat(128)));
        }));
        assert!(verify(&device, &token, NOW).is_ok());
    }

    #[test]
    fn iss_and_sub_must_be_valid_identifiers() {
        let device = es256_device();
        let token = (device.sign)(claims(|c| {
            c.insert("sub".into(), json!("../admin"));
        }));
        assert_eq!(
            peek_assertion(&token).unwrap_err().rejection(),
            Rejection::Claims
        );
        let token = (device.sign)(claims(|c| {
            c.insert("iss".into(), json!("ACME"));
        }));
        assert_eq!(
            peek_assertion(&token).unwrap_err().rejection(),
            Rejection::Issuer
        );
    }

    #[test]
    fn oversized_and_garbage_assertions_are_refused() {
        let device = es256_device();
        let token = (device.sign)(claims(|c| {
            c.insert("pad".into(), json!("x".repeat(MAX_ASSERTION_BYTES)));
        }));
        assert_eq!(rejection(verify(&device, &token, NOW)), Rejection::TooLarge);
        for garbage in ["", "x", "a.b", "a.b.c", "e30.e30.", "e30.e30.e30.e30"] {
            assert!(peek_assertion(garbage).is_err(), "{garbage:?}");
            assert!(verify(&device, garbage, NOW).is_err(), "{garbage:?}");
        }
    }

    #[test]
    fn the_public_message_is_the_same_for_every_rejection() {
        let messages: HashSet<String> = [Rejection::Signature, Rejection::Expired]
            .map(|r| AssertionError::from(r).to_string())
            .into_iter()
            .collect();
        assert_eq!(messages.len(), 1);
        assert!(messages.contains("invalid client assertion"));
    }

    #[test]
    fn replay_cache_keeps_the_jti_until_the_assertion_would_be_refused() {
        let device = es256_device();
        let token = (device.sign)(claims(|_| {}));
        let assertion = verify(&device, &token, NOW).unwrap();
        let ttl = assertion.ttl_remaining(NOW);
        assert_eq!(ttl, 300 + 60 + 1);
        // One second before the cache entry expires, the assertion is still accepted;
        // once it has expired, so has the assertion.
        assert!(verify(&device, &token, NOW + ttl - 1).is_ok());
        assert!(verify(&device, &token, NOW + ttl).is_err());
        assert_eq!(assertion.ttl_remaining(NOW + 10_000), 1);
    }

    mod keys {
        use super::*;

        #[test]
        fn pem_round_trips_canonically() {
            for device in [es256_device(), ed25519_device()] {
                let pem = device.key.to_pem();
                assert!(pem.starts_with("-----BEGIN PUBLIC KEY-----\n"));
                assert!(pem.ends_with("-----END PUBLIC KEY-----\n"));
                let again = DevicePublicKey::from_pem(&pem).unwrap();
                assert_eq!(again, device.key);
                assert_eq!(again.fingerprint(), device.key.fingerprint());
                assert_eq!(again.fingerprint().len(), 64);
            }
        }

        #[test]
        fn reports_the_algorithm() {
            assert_eq!(es256_device().key.algorithm(), KeyAlgorithm::Es256);
            assert_eq!(ed25519_device().key.algorithm(), KeyAlgorithm::Ed25519);
            assert_eq!(KeyAlgorithm::Es256.jws_alg(), "ES256");
            assert_eq!(KeyAlgorithm::Ed25519.jws_alg(), "EdDSA");
        }

        #[test]
        fn tolerates_crlf_and_surrounding_whitespace() {
            let pem = ed25519_device().key.to_pem();
            let messy = format!("\n  {}\r\n", pem.replace('\n', "\r\n"));
            assert!(DevicePublicKey::from_pem(&messy).is_ok());
        }

        fn pem_of(der: &[u8]) -> String {
            format!("{PEM_BEGIN}\n{}\n{PEM_END}\n", STANDARD.encode(der))
        }

        #[test]
        fn refuses_other_curves_other_algorithms_and_private_keys() {
            let p384 = ES384KeyPair::generate().public_key().to_pem().unwrap();
            let secp256k1 = ES256kKeyPair::generate().public_key().to_pem().unwrap();
            // X25519 shares Ed25519's SPKI shape but not its OID (1.3.101.110).
            let mut x25519 = ED25519_SPKI_PREFIX.to_vec();
            x25519[8] = 110;
            x25519.extend_from_slice(&[9; 32]);
            for pem in [p384, secp256k1, pem_of(&x25519)] {
                assert_eq!(
                    DevicePublicKey::from_pem(&pem).unwrap_err(),
                    KeyError::Unsupported
                );
            }
            let private = ES256KeyPair::generate().to_pem().unwrap();
            assert_eq!(
                DevicePublicKey::from_pem(&private).unwrap_err(),
                KeyError::NotPem
            );
        }

        #[test]
        fn refuses_garbage_and_oversized_input() {
            let valid = ed25519_device().key.to_pem();
            let two_blocks = format!("{valid}{valid}");
            for garbage in [
                "",
                "hello",
                "-----BEGIN PUBLIC KEY-----\n-----END PUBLIC KEY-----\n",
                "-----BEGIN PUBLIC KEY-----\n!!!!\n-----END PUBLIC KEY-----\n",
                "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
                &two_blocks,
            ] {
                assert!(
                    DevicePublicKey::from_pem(garbage).is_err(),
                    "accepted {garbage:?}"
                );
            }
            let huge = format!("{valid}{}", " ".repeat(MAX_PEM_BYTES));
            assert_eq!(
                DevicePublicKey::from_pem(&huge).unwrap_err(),
                KeyError::TooLarge { max: 4096 }
            );
            // Valid base64 of a truncated key.
            let der = STANDARD.decode(valid.lines().nth(1).unwrap()).unwrap();
            assert_eq!(
                DevicePublicKey::from_pem(&pem_of(&der[..40])).unwrap_err(),
                KeyError::Unsupported
            );
        }

        #[test]
        fn refuses_a_small_order_ed25519_key() {
            let mut der = ED25519_SPKI_PREFIX.to_vec();
            // The identity point: every signature "verifies" against it.
            let mut identity = [0u8; 32];
            identity[0] = 1;
            der.extend_from_slice(&identity);
            assert_eq!(
                DevicePublicKey::from_pem(&pem_of(&der)).unwrap_err(),
                KeyError::WeakKey
            );
        }

        #[test]
        fn debug_shows_only_algorithm_and_fingerprint() {
            let key = es256_device().key;
            let debug = format!("{key:?}");
            assert!(debug.contains("Es256") && debug.contains(&key.fingerprint()));
        }
    }

    /// Keys and signatures as a device would make them with the `openssl` CLI.
    mod openssl {
        use super::*;
        use std::path::{Path, PathBuf};
        use std::process::Command;

        fn available() -> bool {
            let found = Command::new("openssl")
                .arg("version")
                .output()
                .is_ok_and(|out| out.status.success());
            if !found {
                eprintln!(
                    "SKIPPED: openssl is not installed; the openssl interop test did not run"
                );
            }
            found
        }

        fn run(args: &[&str]) -> Vec<u8> {
            let out = Command::new("openssl").args(args).output().unwrap();
            assert!(out.status.success(), "openssl {args:?}: {out:?}");
            out.stdout
        }

        struct TempDir(PathBuf);

        impl TempDir {
            fn new(name: &str) -> Self {
                let dir = std::env::temp_dir()
                    .join(format!("toaster-core-{name}-{}", std::process::id()));
                std::fs::create_dir_all(&dir).unwrap();
                Self(dir)
            }

            fn file(&self, name: &str) -> String {
                self.0.join(name).to_string_lossy().into_owned()
            }
        }

        impl Drop for TempDir {
            fn drop(&mut self) {
                let _ = std::fs::remove_dir_all(&self.0);
            }
        }

        fn openssl_fingerprint(public_pem_path: &str) -> String {
            let der = run(&["pkey", "-pubin", "-in", public_pem_path, "-outform", "DER"]);
            Sha256::digest(&der)
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect()
        }

        fn check(dir: &TempDir, private_pkcs8: &Path, algorithm: KeyAlgorithm) {
            let public = dir.file("pub.pem");
            let pem = std::fs::read_to_string(&public).unwrap();
            let key = DevicePublicKey::from_pem(&pem).unwrap();
            assert_eq!(key.algorithm(), algorithm);
            assert_eq!(key.to_pem(), pem, "openssl's PEM is already canonical");
            assert_eq!(key.fingerprint(), openssl_fingerprint(&public));

            let private = std::fs::read_to_string(private_pkcs8).unwrap();
            let token = match algorithm {
                KeyAlgorithm::Es256 => ES256KeyPair::from_pem(&private)
                    .unwrap()
                    .sign(claims(|_| {}))
                    .unwrap(),
                KeyAlgorithm::Ed25519 => Ed25519KeyPair::from_pem(&private)
                    .unwrap()
                    .sign(claims(|_| {}))
                    .unwrap(),
            };
            assert!(verify_assertion(&token, &[key], &tenant(), NOW).is_ok());
        }

        #[test]
        fn accepts_keys_made_by_the_openssl_cli() {
            if !available() {
                return;
            }
            let dir = TempDir::new("p256");
            let (k, p8, public) = (dir.file("k.pem"), dir.file("k8.pem"), dir.file("pub.pem"));
            run(&[
                "ecparam",
                "-name",
                "prime256v1",
                "-genkey",
                "-noout",
                "-out",
                &k,
            ]);
            run(&["ec", "-in", &k, "-pubout", "-out", &public]);
            run(&["pkcs8", "-topk8", "-nocrypt", "-in", &k, "-out", &p8]);
            check(&dir, Path::new(&p8), KeyAlgorithm::Es256);

            let dir = TempDir::new("ed25519");
            let (k, public) = (dir.file("k.pem"), dir.file("pub.pem"));
            run(&["genpkey", "-algorithm", "ed25519", "-out", &k]);
            run(&["pkey", "-in", &k, "-pubout", "-out", &public]);
            check(&dir, Path::new(&k), KeyAlgorithm::Ed25519);

            let dir = TempDir::new("refused");
            let (p384, rsa, public) = (
                dir.file("p384.pem"),
                dir.file("rsa.pem"),
                dir.file("pub.pem"),
            );
            run(&[
                "ecparam",
                "-name",
                "secp384r1",
                "-genkey",
                "-noout",
                "-out",
                &p384,
            ]);
            run(&[
                "genpkey",
                "-algorithm",
                "RSA",
                "-pkeyopt",
                "rsa_keygen_bits:2048",
                "-out",
                &rsa,
            ]);
            for private in [&p384, &rsa] {
                run(&["pkey", "-in", private, "-pubout", "-out", &public]);
                let pem = std::fs::read_to_string(&public).unwrap();
                assert_eq!(
                    DevicePublicKey::from_pem(&pem).unwrap_err(),
                    KeyError::Unsupported
                );
            }
        }
    }
}
