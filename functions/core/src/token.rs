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
        for byte in bytes {
            text.push_str(&format!("{byte:02x}"));
        }
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
mod tests {
    use std::collections::HashSet;

    use super::*;
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use jwt_simple::prelude::{ECDSAP256KeyPairLike, ES256KeyPair};
    use serde_json::{Value, json};

    const SECRET: &str = "0123456789abcdef0123456789abcdef";
    const NOW: u64 = 1_800_000_000;
    const MINUTE: Duration = Duration::from_secs(60);

    fn signer() -> TokenSigner {
        TokenSigner::from_secret(SECRET).unwrap()
    }

    fn tenant() -> TenantId {
        TenantId::parse("acme").unwrap()
    }

    fn device_claims() -> AccessClaims {
        AccessClaims::device(tenant(), &DeviceId::parse("sn-1").unwrap(), 3)
    }

    fn rejected(result: Result<VerifiedToken, TokenError>) -> Rejection {
        match result {
            Err(TokenError::Rejected(rejection)) => rejection,
            other => panic!("expected a rejection, got {other:?}"),
        }
    }

    /// `payload` as jwt-simple claims, nothing added.
    fn raw_claims(payload: Value) -> JWTClaims<Value> {
        JWTClaims {
            issued_at: None,
            expires_at: None,
            invalid_before: None,
            issuer: None,
            subject: None,
            audiences: None,
            jwt_id: None,
            nonce: None,
            custom: payload,
        }
    }

    /// Signs an arbitrary payload with the real secret, as a bug or an older version
    /// of the backend might.
    fn sign_payload(payload: Value) -> String {
        HS256Key::from_bytes(SECRET.as_bytes())
            .authenticate(raw_claims(payload))
            .unwrap()
    }

    /// `token` with its header replaced by one claiming HS256: payload and signature
    /// as they were.
    fn relabelled_hs256(token: &str) -> String {
        let (_, rest) = token.split_once('.').unwrap();
        let header = URL_SAFE_NO_PAD.encode(r#"{"alg":"HS256","typ":"JWT"}"#);
        format!("{header}.{rest}")
    }

    fn standard_payload() -> Value {
        json!({
            "iss": ISSUER, "aud": AUDIENCE, "sub": "sn-1",
            "iat": NOW, "nbf": NOW, "exp": NOW + 60,
            "role": "device", "tenant": "acme", "gen": 3,
        })
    }

    #[test]
    fn secret_shorter_than_32_bytes_is_refused() {
        assert_eq!(
            TokenSigner::from_secret(&"x".repeat(31)).unwrap_err(),
            KeyError::SecretTooShort { min: 32 }
        );
        assert!(TokenSigner::from_secret(&"x".repeat(32)).is_ok());
        // The shape `openssl rand -base64 32` prints.
        assert!(TokenSigner::from_secret("q2Zr3bV1pS0eXc9yTn4uWm8kJh7gFd6sAa5oLi2EwQs=").is_ok());
    }

    #[test]
    fn round_trips_each_role() {
        for claims in [
            AccessClaims::operator("ops"),
            AccessClaims::admin(tenant(), "alice@example.com"),
            device_claims(),
        ] {
            let token = signer().mint_at(&claims, MINUTE, NOW).unwrap();
            let verified = signer().verify_at(&token, NOW + 30).unwrap();
            assert_eq!(verified.claims, claims);
            assert_eq!(verified.expires_at, NOW + 60);
        }
    }

    #[test]
    fn mint_and_verify_use_the_system_clock() {
        let token = signer().mint(&device_claims(), MINUTE).unwrap();
        assert_eq!(signer().verify(&token).unwrap().claims, device_claims());
    }

    #[test]
    fn wire_format_carries_the_documented_claims() {
        let token = signer().mint_at(&device_claims(), MINUTE, NOW).unwrap();
        let mut payload: Value = jws::decode(jws::split(&token).unwrap().payload).unwrap();
        let jti = payload.as_object_mut().unwrap().remove("jti").unwrap();
        assert_eq!(payload, standard_payload());
        let jti = jti.as_str().unwrap();
        assert!(TokenId::parse(jti).is_some(), "{jti}");
        assert_eq!(
            signer().verify_at(&token, NOW).unwrap().token_id.as_str(),
            jti
        );
    }

    #[test]
    fn every_token_gets_its_own_id() {
        let ids: HashSet<TokenId> = (0..200)
            .map(|_| {
                let token = signer().mint_at(&device_claims(), MINUTE, NOW).unwrap();
                signer().verify_at(&token, NOW).unwrap().token_id
            })
            .collect();
        assert_eq!(ids.len(), 200);
        let issued = signer()
            .issue_at(
                &AccessClaims::operator("ops"),
                MINUTE,
                NOW,
                TokenId::parse("tok_000102030405060708090a0b0c0d0e0f").unwrap(),
            )
            .unwrap();
        assert_eq!(issued.expires_at, NOW + 60);
        let verified = signer().verify_at(&issued.token, NOW).unwrap();
        assert_eq!(verified.token_id, issued.token_id);
    }

    #[test]
    fn a_token_without_an_id_is_known_by_its_signature() {
        // Minted before tokens carried a `jti`.
        let token = sign_payload(standard_payload());
        let first = signer().verify_at(&token, NOW).unwrap().token_id;
        assert_eq!(signer().verify_at(&token, NOW).unwrap().token_id, first);
        assert!(TokenId::parse(first.as_str()).is_some());
        let mut other = standard_payload();
        other["sub"] = json!("sn-2");
        let second = signer()
            .verify_at(&sign_payload(other), NOW)
            .unwrap()
            .token_id;
        assert_ne!(first, second);
    }

    #[test]
    fn a_jti_of_another_shape_is_refused_even_when_signed() {
        for jti in [
            json!("abc"),
            json!(7),
            json!("tok_ABCDEF0123456789abcdef0123456789"),
        ] {
            let mut payload = standard_payload();
            payload["jti"] = jti.clone();
            assert_eq!(
                rejected(signer().verify_at(&sign_payload(payload), NOW)),
                Rejection::Claims,
                "{jti}"
            );
        }
    }

    #[test]
    fn token_ids_parse_only_their_shape() {
        assert!(TokenId::parse("tok_0123456789abcdef0123456789abcdef").is_some());
        for bad in [
            "",
            "tok_",
            "tok_0123456789abcdef0123456789abcde",
            "tok_0123456789abcdef0123456789abcdef0",
            "tok_0123456789ABCDEF0123456789abcdef",
            "clm_0123456789abcdef0123456789abcdef",
            "tok_0123456789abcdef0123456789abcdeg",
        ] {
            assert!(TokenId::parse(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn device_claims_name_the_device() {
        assert_eq!(
            device_claims().device_id(),
            Some(DeviceId::parse("sn-1").unwrap())
        );
        assert_eq!(AccessClaims::admin(tenant(), "sn-1").device_id(), None);
    }

    #[test]
    fn device_tokens_longer_than_an_hour_are_refused() {
        let over = MAX_DEVICE_TTL + Duration::from_secs(1);
        assert_eq!(
            signer().mint_at(&device_claims(), over, NOW),
            Err(TokenError::Lifetime { max_secs: 3600 })
        );
        assert!(
            signer()
                .mint_at(&device_claims(), MAX_DEVICE_TTL, NOW)
                .is_ok()
        );
        // Admins may hold longer ones.
        let admin = AccessClaims::admin(tenant(), "alice");
        assert!(signer().mint_at(&admin, over, NOW).is_ok());
    }

    #[test]
    fn sub_second_and_endless_lifetimes_are_refused() {
        let operator = AccessClaims::operator("ops");
        for ttl in [Duration::ZERO, Duration::from_millis(999), MAX_TTL * 2] {
            assert!(matches!(
                signer().mint_at(&operator, ttl, NOW),
                Err(TokenError::Lifetime { .. })
            ));
        }
    }

    #[test]
    fn inconsistent_claims_are_not_minted() {
        let cases = [
            AccessClaims {
                tenant: Some(tenant()),
                ..AccessClaims::operator("ops")
            },
            AccessClaims {
                tenant: None,
                ..AccessClaims::admin(tenant(), "alice")
            },
            AccessClaims {
                key_generation: Some(1),
                ..AccessClaims::admin(tenant(), "alice")
            },
            AccessClaims {
                key_generation: None,
                ..device_claims()
            },
            AccessClaims {
                sub: "not a device id".to_owned(),
                ..device_claims()
            },
            AccessClaims::operator(""),
            AccessClaims::operator("x".repeat(257)),
        ];
        for claims in cases {
            assert_eq!(
                signer().mint_at(&claims, MINUTE, NOW),
                Err(TokenError::InconsistentClaims),
                "{claims:?}"
            );
        }
    }

    #[test]
    fn expiry_allows_five_seconds_of_leeway_and_no_more() {
        let token = signer().mint_at(&device_claims(), MINUTE, NOW).unwrap();
        assert!(signer().verify_at(&token, NOW + 60).is_ok());
        assert!(signer().verify_at(&token, NOW + 65).is_ok());
        assert_eq!(
            rejected(signer().verify_at(&token, NOW + 66)),
            Rejection::Expired
        );
    }

    #[test]
    fn tokens_from_the_future_are_refused_beyond_the_leeway() {
        let token = signer().mint_at(&device_claims(), MINUTE, NOW).unwrap();
        assert!(signer().verify_at(&token, NOW - 5).is_ok());
        assert_eq!(
            rejected(signer().verify_at(&token, NOW - 6)),
            Rejection::NotYetValid
        );
    }

    #[test]
    fn another_secret_is_a_bad_signature() {
        let other = TokenSigner::from_secret(&"y".repeat(32)).unwrap();
        let token = other.mint_at(&device_claims(), MINUTE, NOW).unwrap();
        assert_eq!(
            rejected(signer().verify_at(&token, NOW)),
            Rejection::Signature
        );
    }

    #[test]
    fn a_tampered_payload_is_a_bad_signature() {
        let token = signer()
            .mint_at(&AccessClaims::admin(tenant(), "alice"), MINUTE, NOW)
            .unwrap();
        let parts: Vec<&str> = token.split('.').collect();
        let mut payload: Value = jws::decode(parts[1]).unwrap();
        payload["tenant"] = json!("victim");
        let forged = format!(
            "{}.{}.{}",
            parts[0],
            URL_SAFE_NO_PAD.encode(payload.to_string()),
            parts[2]
        );
        assert_eq!(
            rejected(signer().verify_at(&forged, NOW)),
            Rejection::Signature
        );
    }

    #[test]
    fn alg_none_is_refused() {
        let header = URL_SAFE_NO_PAD.encode(r#"{"alg":"none","typ":"JWT"}"#);
        let payload = URL_SAFE_NO_PAD.encode(standard_payload().to_string());
        for token in [
            format!("{header}.{payload}."),
            format!("{header}.{payload}"),
        ] {
            let result = signer().verify_at(&token, NOW);
            assert!(matches!(result, Err(TokenError::Rejected(_))), "{token}");
        }
        assert_eq!(
            rejected(signer().verify_at(&format!("{header}.{payload}."), NOW)),
            Rejection::Algorithm
        );
    }

    #[test]
    fn an_es256_token_is_refused() {
        let key_pair = ES256KeyPair::generate();
        let claims = JWTClaims {
            issued_at: Some(UnixTimeStamp::from_secs(NOW)),
            expires_at: Some(UnixTimeStamp::from_secs(NOW + 60)),
            invalid_before: None,
            issuer: Some(ISSUER.to_owned()),
            subject: Some("sn-1".to_owned()),
            audiences: Some(Audiences::AsString(AUDIENCE.to_owned())),
            jwt_id: None,
            nonce: None,
            custom: WireClaims {
                role: Role::Operator,
                tenant: None,
                key_generation: None,
            },
        };
        let token = key_pair.sign(claims).unwrap();
        assert_eq!(
            rejected(signer().verify_at(&token, NOW)),
            Rejection::Algorithm
        );
    }

    #[test]
    fn a_header_claiming_hs256_over_an_es256_signature_is_refused() {
        let key_pair = ES256KeyPair::generate();
        let token = key_pair
            .sign(JWTClaims {
                issued_at: Some(UnixTimeStamp::from_secs(NOW)),
                expires_at: Some(UnixTimeStamp::from_secs(NOW + 60)),
                invalid_before: None,
                issuer: Some(ISSUER.to_owned()),
                subject: Some("ops".to_owned()),
                audiences: Some(Audiences::AsString(AUDIENCE.to_owned())),
                jwt_id: None,
                nonce: None,
                custom: json!({"role": "operator"}),
            })
            .unwrap();
        assert_eq!(
            rejected(signer().verify_at(&relabelled_hs256(&token), NOW)),
            Rejection::Signature
        );
    }

    #[test]
    fn wrong_issuer_or_audience_is_refused() {
        let mut payload = standard_payload();
        payload["iss"] = json!("someone-else");
        assert_eq!(
            rejected(signer().verify_at(&sign_payload(payload), NOW)),
            Rejection::Issuer
        );

        let mut payload = standard_payload();
        payload["aud"] = json!("toaster");
        assert_eq!(
            rejected(signer().verify_at(&sign_payload(payload), NOW)),
            Rejection::Audience
        );

        let mut payload = standard_payload();
        payload.as_object_mut().unwrap().remove("aud");
        assert_eq!(
            rejected(signer().verify_at(&sign_payload(payload), NOW)),
            Rejection::Audience
        );
    }

    #[test]
    fn an_audience_array_must_name_us() {
        let mut payload = standard_payload();
        payload["aud"] = json!(["elsewhere", AUDIENCE]);
        assert!(signer().verify_at(&sign_payload(payload), NOW).is_ok());

        let mut payload = standard_payload();
        payload["aud"] = json!(["elsewhere"]);
        assert_eq!(
            rejected(signer().verify_at(&sign_payload(payload), NOW)),
            Rejection::Audience
        );
    }

    #[test]
    fn other_hmac_algorithms_and_altered_signatures_are_refused() {
        use jwt_simple::prelude::HS384Key;
        // HS384 with the same secret: refused by its header, and by its length when
        // relabelled HS256.
        let hs384 = HS384Key::from_bytes(SECRET.as_bytes())
            .authenticate(raw_claims(standard_payload()))
            .unwrap();
        assert_eq!(
            rejected(signer().verify_at(&hs384, NOW)),
            Rejection::Algorithm
        );
        assert_eq!(
            rejected(signer().verify_at(&relabelled_hs256(&hs384), NOW)),
            Rejection::Signature
        );

        // A valid token with its signature cut, emptied, flipped or padded.
        let token = sign_payload(standard_payload());
        let (input, signature) = token.rsplit_once('.').unwrap();
        let mut flipped = URL_SAFE_NO_PAD.decode(signature).unwrap();
        flipped[31] ^= 1;
        for (altered, why) in [
            (format!("{input}."), Rejection::Signature),
            (
                format!("{input}.{}", &signature[..42]),
                Rejection::Malformed,
            ),
            (
                format!("{input}.{}", URL_SAFE_NO_PAD.encode(&flipped)),
                Rejection::Signature,
            ),
            (format!("{input}.{signature}="), Rejection::Malformed),
        ] {
            assert_eq!(
                rejected(signer().verify_at(&altered, NOW)),
                why,
                "{altered}"
            );
        }
        assert!(signer().verify_at(&token, NOW).is_ok());
    }

    #[test]
    fn missing_or_inconsistent_claims_are_refused_even_when_signed() {
        let edits: [(&str, Value); 9] = [
            ("exp", Value::Null),
            ("iat", Value::Null),
            ("sub", Value::Null),
            ("gen", Value::Null),
            ("tenant", Value::Null),
            ("role", json!("root")),
            ("role", json!("operator")),
            ("role", json!("admin")),
            ("exp", json!(1.8e9)),
        ];
        for (field, value) in edits {
            let mut payload = standard_payload();
            if value.is_null() {
                payload.as_object_mut().unwrap().remove(field);
            } else {
                payload[field] = value;
            }
            let token = sign_payload(payload);
            assert_eq!(
                rejected(signer().verify_at(&token, NOW)),
                Rejection::Claims,
                "{field}"
            );
        }
    }

    #[test]
    fn an_admin_without_tenant_is_refused() {
        let payload = json!({
            "iss": ISSUER, "aud": AUDIENCE, "sub": "alice",
            "iat": NOW, "exp": NOW + 60, "role": "admin",
        });
        assert_eq!(
            rejected(signer().verify_at(&sign_payload(payload), NOW)),
            Rejection::Claims
        );
    }

    #[test]
    fn oversized_tokens_are_refused_before_any_work() {
        let mut payload = standard_payload();
        payload["padding"] = json!("x".repeat(MAX_TOKEN_BYTES));
        let token = sign_payload(payload);
        assert_eq!(
            rejected(signer().verify_at(&token, NOW)),
            Rejection::TooLarge
        );
    }

    #[test]
    fn garbage_is_malformed() {
        for token in ["", "a", "a.b", "a.b.c", "....", "eyJ.eyJ.x", "\0.\0.\0"] {
            assert_eq!(
                rejected(signer().verify_at(token, NOW)),
                Rejection::Malformed,
                "{token:?}"
            );
        }
    }

    #[test]
    fn the_public_message_does_not_say_which_check_failed() {
        let messages: HashSet<String> = [
            Rejection::Signature,
            Rejection::Expired,
            Rejection::Algorithm,
            Rejection::Claims,
        ]
        .into_iter()
        .map(|rejection| TokenError::Rejected(rejection).to_string())
        .collect();
        assert_eq!(
            messages,
            HashSet::from(["invalid or expired access token".to_owned()])
        );
    }

    #[test]
    fn require_role_lets_listed_roles_through() {
        let token = signer()
            .verify_at(
                &signer().mint_at(&device_claims(), MINUTE, NOW).unwrap(),
                NOW,
            )
            .unwrap();
        assert!(require_role(&token, &[Role::Device]).is_ok());
        assert!(require_role(&token, &[Role::Admin, Role::Device]).is_ok());
        assert_eq!(
            require_role(&token, &[Role::Admin, Role::Operator]),
            Err(Forbidden { role: Role::Device })
        );
        assert!(require_role(&token, &[]).is_err());
    }

    #[test]
    fn roles_serialize_lowercase() {
        assert_eq!(serde_json::to_string(&Role::Admin).unwrap(), r#""admin""#);
        assert_eq!(
            serde_json::from_str::<Role>(r#""operator""#).unwrap(),
            Role::Operator
        );
        assert!(serde_json::from_str::<Role>(r#""Admin""#).is_err());
    }

    #[test]
    fn debug_does_not_print_the_secret() {
        assert!(!format!("{:?}", signer()).contains("0123"));
    }
}
