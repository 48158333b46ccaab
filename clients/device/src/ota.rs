//! Firmware updates: the signed manifest a check returns, and its verification.
//!
//! The server signs a manifest's canonical bytes (its six members sorted by name, no
//! whitespace, strings escaped as RFC 8785 escapes them) with Ed25519 and publishes
//! the public key at `GET /v1/ota/signing-key`. A device verifies every manifest
//! before it acts on it, against a key it pinned or fetched; it then checks the
//! downloaded image against the manifest's size and SHA-256
//! ([`Manifest::verify_image`]).

use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Serialize};
use thiserror::Error;
use toaster_core::ota::hex_digest;

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum OtaError {
    #[error("the manifest signing key must be an Ed25519 public key in SPKI PEM")]
    SigningKey,
    #[error("the manifest is signed with {0}, not Ed25519")]
    Algorithm(String),
    #[error("the manifest is signed by key {got}, not by the trusted key {trusted}")]
    UnknownKey { trusted: String, got: String },
    #[error("the manifest's signature does not verify: it was altered or not signed by the key")]
    BadSignature,
    #[error("the manifest is for model {got}, this device is a {expected}")]
    WrongModel { expected: String, got: String },
    #[error("the image is {got} bytes, the manifest says {expected}")]
    ImageSize { expected: u64, got: u64 },
    #[error("the image's SHA-256 is {got}, the manifest says {expected}")]
    ImageDigest { expected: String, got: String },
}

/// What to install, and the body of a `200` from `GET /v1/ota/check`: the server's own
/// types (`toaster_core::ota`), so both sides read and sign the same bytes. Only trust
/// a manifest that came out of [`SigningKey::verify`]; [`Manifest::verify_image`]
/// checks a download against it.
pub use toaster_core::ota::{ImageMismatch, Manifest, SignedManifest};

impl From<ImageMismatch> for OtaError {
    fn from(error: ImageMismatch) -> Self {
        match error {
            ImageMismatch::Size { expected, got } => OtaError::ImageSize { expected, got },
            ImageMismatch::Digest { expected, got } => OtaError::ImageDigest { expected, got },
        }
    }
}

/// An update whose manifest verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Update {
    pub manifest: Manifest,
    /// The key that signed it.
    pub key_id: String,
}

/// How far a device got with an update (`POST /v1/ota/report`). Forward only:
/// downloading → installing → installed, or failed from any of them; the same status
/// again is a harmless retry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ReportStatus {
    Downloading,
    Installing,
    Installed,
    Failed,
}

/// The server's answer to a report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReportAck {
    pub rollout_id: String,
    /// The device's state in the rollout now.
    pub state: String,
}

/// The public key that signs manifests.
#[derive(Clone)]
pub struct SigningKey {
    key: ed25519_compact::PublicKey,
    key_id: String,
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKey")
            .field("key_id", &self.key_id)
            .finish()
    }
}

impl SigningKey {
    /// An Ed25519 public key as SPKI PEM (`-----BEGIN PUBLIC KEY-----`), as
    /// `GET /v1/ota/signing-key` returns it and `openssl pkey -pubout` prints it.
    pub fn from_pem(pem: &str) -> Result<SigningKey, OtaError> {
        let key =
            ed25519_compact::PublicKey::from_pem(pem.trim()).map_err(|_| OtaError::SigningKey)?;
        let key_id = hex_digest(&key.to_der());
        Ok(SigningKey { key, key_id })
    }

    /// SHA-256 (hex) of the key's SPKI DER: what manifests name as `key_id`.
    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    pub fn to_pem(&self) -> String {
        self.key.to_pem()
    }

    /// Checks that this key signed `signed.manifest`, and returns the manifest.
    pub fn verify(&self, signed: &SignedManifest) -> Result<Update, OtaError> {
        if signed.signature_algorithm != toaster_core::ota::SIGNATURE_ALGORITHM {
            return Err(OtaError::Algorithm(signed.signature_algorithm.clone()));
        }
        if !signed.key_id.eq_ignore_ascii_case(&self.key_id) {
            return Err(OtaError::UnknownKey {
                trusted: self.key_id.clone(),
                got: signed.key_id.clone(),
            });
        }
        let raw = STANDARD
            .decode(signed.signature.trim())
            .map_err(|_| OtaError::BadSignature)?;
        let signature =
            ed25519_compact::Signature::from_slice(&raw).map_err(|_| OtaError::BadSignature)?;
        self.key
            .verify(signed.manifest.canonical_bytes(), &signature)
            .map_err(|_| OtaError::BadSignature)?;
        Ok(Update {
            manifest: signed.manifest.clone(),
            key_id: self.key_id.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use toaster_core::ids::Model;

    fn manifest() -> Manifest {
        Manifest {
            model: Model::parse("t1000").unwrap(),
            rollout_id: "ro_0123456789abcdef".into(),
            sha256: hex_digest(b"firmware"),
            size: 8,
            url: "https://cdn.example.com/t1000/1.4.0.bin".into(),
            version: "1.4.0".into(),
        }
    }

    /// Signs as the server does: Ed25519 over the canonical bytes, standard base64.
    fn sign(pair: &ed25519_compact::KeyPair, manifest: &Manifest) -> SignedManifest {
        let signature = pair.sk.sign(manifest.canonical_bytes(), None);
        SignedManifest {
            manifest: manifest.clone(),
            signature: STANDARD.encode(signature.as_ref()),
            signature_algorithm: "Ed25519".into(),
            key_id: hex_digest(&pair.pk.to_der()),
        }
    }

    fn key_pair() -> ed25519_compact::KeyPair {
        ed25519_compact::KeyPair::generate()
    }

    #[test]
    fn canonical_bytes_are_sorted_compact_jcs() {
        assert_eq!(
            String::from_utf8(manifest().canonical_bytes()).unwrap(),
            format!(
                r#"{{"model":"t1000","rollout_id":"ro_0123456789abcdef","sha256":"{}","size":8,"url":"https://cdn.example.com/t1000/1.4.0.bin","version":"1.4.0"}}"#,
                manifest().sha256
            )
        );
        // RFC 8785 escapes: short forms, lowercase \u00xx, '/' and non-ASCII as is.
        let odd = Manifest {
            url: "a\"b\\c\n\t\u{1}/é\u{7f}".into(),
            ..manifest()
        };
        let text = String::from_utf8(odd.canonical_bytes()).unwrap();
        assert!(text.contains(r#""url":"a\"b\\c\n\t\u0001/é"#), "{text}");
    }

    #[test]
    fn a_manifest_signed_by_the_key_verifies() {
        let pair = key_pair();
        let key = SigningKey::from_pem(&pair.pk.to_pem()).unwrap();
        let update = key.verify(&sign(&pair, &manifest())).unwrap();
        assert_eq!(update.manifest, manifest());
        assert_eq!(update.key_id, key.key_id());
    }

    #[test]
    fn a_tampered_manifest_fails_verification() {
        let pair = key_pair();
        let key = SigningKey::from_pem(&pair.pk.to_pem()).unwrap();
        let good = sign(&pair, &manifest());
        let tampered: [fn(&mut Manifest); 6] = [
            |m| m.url = "https://evil.example.com/t1000/1.4.0.bin".into(),
            |m| m.sha256 = "0".repeat(64),
            |m| m.size += 1,
            |m| m.version = "1.4.1".into(),
            |m| m.model = Model::parse("t2000").unwrap(),
            |m| m.rollout_id = "ro_fedcba9876543210".into(),
        ];
        for change in tampered {
            let mut signed = good.clone();
            change(&mut signed.manifest);
            assert_eq!(key.verify(&signed), Err(OtaError::BadSignature));
        }
        // A signature of another manifest, a flipped bit, garbage.
        let mut other = good.clone();
        other.signature = sign(
            &pair,
            &Manifest {
                version: "9.9.9".into(),
                ..manifest()
            },
        )
        .signature;
        assert_eq!(key.verify(&other), Err(OtaError::BadSignature));
        let mut flipped = good.clone();
        let mut raw = STANDARD.decode(&flipped.signature).unwrap();
        raw[10] ^= 1;
        flipped.signature = STANDARD.encode(raw);
        assert_eq!(key.verify(&flipped), Err(OtaError::BadSignature));
        for garbage in ["", "not base64!", "AAAA"] {
            let mut bad = good.clone();
            bad.signature = garbage.into();
            assert_eq!(key.verify(&bad), Err(OtaError::BadSignature));
        }
    }

    #[test]
    fn another_key_s_signature_is_refused() {
        let (ours, theirs) = (key_pair(), key_pair());
        let key = SigningKey::from_pem(&ours.pk.to_pem()).unwrap();
        // Named as theirs: refused by key id.
        let signed = sign(&theirs, &manifest());
        assert!(matches!(
            key.verify(&signed),
            Err(OtaError::UnknownKey { .. })
        ));
        // Claiming our key id does not help: the signature is checked.
        let forged = SignedManifest {
            key_id: key.key_id().to_owned(),
            ..signed
        };
        assert_eq!(key.verify(&forged), Err(OtaError::BadSignature));
    }

    #[test]
    fn only_ed25519_is_accepted() {
        let pair = key_pair();
        let key = SigningKey::from_pem(&pair.pk.to_pem()).unwrap();
        let signed = SignedManifest {
            signature_algorithm: "none".into(),
            ..sign(&pair, &manifest())
        };
        assert_eq!(key.verify(&signed), Err(OtaError::Algorithm("none".into())));
        assert_eq!(
            SigningKey::from_pem("-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----")
                .unwrap_err(),
            OtaError::SigningKey
        );
    }

    #[test]
    fn an_image_mismatch_is_an_ota_error() {
        let m = manifest();
        m.verify_image(b"firmware").unwrap();
        assert_eq!(
            OtaError::from(m.verify_image(b"firmwar").unwrap_err()),
            OtaError::ImageSize {
                expected: 8,
                got: 7
            }
        );
        assert!(matches!(
            OtaError::from(m.verify_image(b"firmwarE").unwrap_err()),
            OtaError::ImageDigest { .. }
        ));
    }

    #[test]
    fn unknown_manifest_members_are_refused() {
        let mut value = serde_json::to_value(manifest()).unwrap();
        value["extra"] = "x".into();
        assert!(serde_json::from_value::<Manifest>(value).is_err());
    }
}
