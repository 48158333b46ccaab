//! Toaster's domain: identifiers, tokens, device assertions, telemetry validation,
//! network addresses as policy sees them, the problem+json error model, and the
//! deployment's variables and their parsers (`config`).
//!
//! Pure functions over values: no spin-sdk, no I/O, no clock reads except where a
//! function says so (and each of those has a variant that takes the time). Builds
//! natively and for `wasm32-wasip2`; the components and the host both depend on it.

// Functions stay under 100 lines (clippy.toml); tests may run longer.
#![cfg_attr(not(test), warn(clippy::too_many_lines))]

pub mod assertion;
pub mod config;
pub mod control;
pub mod device;
pub mod ids;
pub mod net;
pub mod ota;
pub mod problem;
pub mod telemetry;
pub mod token;

mod jws;
mod pem;

use thiserror::Error;

/// A key the backend was given cannot be used: the token signing secret, or a device's
/// public key.
///
/// Safe to show to the operator or admin who supplied the key: it never echoes key
/// material.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum KeyError {
    #[error("the token signing key must be at least {min} bytes long")]
    SecretTooShort { min: usize },
    #[error("the public key is larger than {max} bytes")]
    TooLarge { max: usize },
    #[error("the public key is not a PEM `PUBLIC KEY` (SubjectPublicKeyInfo) block")]
    NotPem,
    #[error("the public key must be P-256 (ES256) or Ed25519")]
    Unsupported,
    #[error("the Ed25519 public key is not a usable curve point (invalid or weak)")]
    WeakKey,
}
