//! Manifests: what a device is told to install, their canonical bytes, signing and
//! verification.

use super::*;

/// What a device is told to install. Signed as [`Manifest::canonical_bytes`].
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    // Declared in lexicographic order: serde writes fields in declaration order, and
    // the canonical form sorts them.
    pub model: Model,
    pub rollout_id: String,
    pub sha256: String,
    pub size: u64,
    pub url: String,
    pub version: String,
}

impl Manifest {
    /// The signed bytes: the manifest as a JSON object, members sorted by name
    /// (`model`, `rollout_id`, `sha256`, `size`, `url`, `version`), no whitespace,
    /// strings escaped as RFC 8785 does, `size` as a plain integer. UTF-8.
    pub fn canonical_bytes(&self) -> Vec<u8> {
        // A struct of strings and an integer always serialises.
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Checks a downloaded image against the manifest: its size, then its SHA-256.
    pub fn verify_image(&self, image: &[u8]) -> Result<(), ImageMismatch> {
        if image.len() as u64 != self.size {
            return Err(ImageMismatch::Size {
                expected: self.size,
                got: image.len() as u64,
            });
        }
        let digest = hex_digest(image);
        if !digest.eq_ignore_ascii_case(&self.sha256) {
            return Err(ImageMismatch::Digest {
                expected: self.sha256.clone(),
                got: digest,
            });
        }
        Ok(())
    }
}

/// A downloaded image is not the one its manifest names.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ImageMismatch {
    #[error("the image is {got} bytes, the manifest says {expected}")]
    Size { expected: u64, got: u64 },
    #[error("the image's SHA-256 is {got}, the manifest says {expected}")]
    Digest { expected: String, got: String },
}

/// The name of the one signature algorithm of manifests.
pub const SIGNATURE_ALGORITHM: &str = "Ed25519";

/// The body of a `200` from `GET /v1/ota/check`: the manifest and its signature. The
/// server writes it, the device library reads it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SignedManifest {
    pub manifest: Manifest,
    /// Standard base64 of the 64-byte Ed25519 signature of
    /// [`Manifest::canonical_bytes`].
    pub signature: String,
    /// [`SIGNATURE_ALGORITHM`].
    pub signature_algorithm: String,
    /// SHA-256 (hex) of the signing key's SPKI DER.
    pub key_id: String,
}

/// A manifest signing key could not be used.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ManifestKeyError {
    #[error("the manifest signing key must be an Ed25519 private key in PKCS#8 PEM")]
    PrivateKey,
    #[error("the manifest public key must be an Ed25519 public key in SPKI PEM")]
    PublicKey,
}

/// Signs manifests with the deployment's Ed25519 key (`manifest_signing_key`).
///
/// Signing runs inside the `ota` component, for each offer, in a fresh instance; so it
/// uses ed25519-dalek, whose 32-bit backend is fast in wasm32 (ed25519-compact, which
/// verifies, multiplies 64-bit limbs into 128-bit products that wasm32 emulates; see
/// BENCHMARKS.md, "Measured choices in the code").
pub struct ManifestSigner {
    key: ed25519_dalek::SigningKey,
}

impl fmt::Debug for ManifestSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ManifestSigner")
            .field("key_id", &self.key_id())
            .finish()
    }
}

/// The DER of an Ed25519 PKCS#8 (v1) private key up to its 32-byte seed (RFC 8410).
pub(super) const PKCS8_ED25519_PREFIX: [u8; 16] = [
    0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
];

impl ManifestSigner {
    /// A `-----BEGIN PRIVATE KEY-----` block (PKCS#8, RFC 8410), as
    /// `openssl genpkey -algorithm ed25519` writes.
    pub fn from_pem(pem: &str) -> Result<Self, ManifestKeyError> {
        let mut der =
            crate::pem::decode(pem, crate::pem::PRIVATE_KEY).ok_or(ManifestKeyError::PrivateKey)?;
        let seed = der
            .strip_prefix(&PKCS8_ED25519_PREFIX[..])
            .and_then(|seed| <[u8; 32]>::try_from(seed).ok());
        // Best effort: the decoded key does not linger in this buffer.
        der.fill(0);
        let mut seed = seed.ok_or(ManifestKeyError::PrivateKey)?;
        let key = ed25519_dalek::SigningKey::from_bytes(&seed);
        seed.fill(0);
        Ok(Self { key })
    }

    /// The signature of the manifest's canonical bytes, standard base64 (with padding).
    pub fn sign(&self, manifest: &Manifest) -> String {
        self.sign_bytes(&manifest.canonical_bytes())
    }

    /// The manifest with its signature, as a device receives it.
    pub fn signed(&self, manifest: Manifest) -> SignedManifest {
        SignedManifest {
            signature: self.sign(&manifest),
            signature_algorithm: SIGNATURE_ALGORITHM.to_owned(),
            key_id: self.key_id(),
            manifest,
        }
    }

    pub fn sign_bytes(&self, bytes: &[u8]) -> String {
        use ed25519_dalek::Signer;
        STANDARD.encode(self.key.sign(bytes).to_bytes())
    }

    /// The public key as an SPKI PEM (`-----BEGIN PUBLIC KEY-----`).
    pub fn public_key_pem(&self) -> String {
        crate::pem::encode(crate::pem::PUBLIC_KEY, &self.public_key_der())
    }

    /// Lowercase hex SHA-256 of the public key's SPKI DER.
    pub fn key_id(&self) -> String {
        hex_digest(&self.public_key_der())
    }

    fn public_key_der(&self) -> Vec<u8> {
        [
            &crate::pem::ED25519_SPKI_PREFIX[..],
            self.key.verifying_key().as_bytes(),
        ]
        .concat()
    }
}

/// Checks manifest signatures, as a device does with the published key.
pub struct ManifestVerifier {
    public_key: ed25519_compact::PublicKey,
}

impl ManifestVerifier {
    pub fn from_pem(pem: &str) -> Result<Self, ManifestKeyError> {
        let public_key = ed25519_compact::PublicKey::from_pem(pem.trim())
            .map_err(|_| ManifestKeyError::PublicKey)?;
        Ok(Self { public_key })
    }

    /// Whether `signature` (standard base64) is the key's signature of `bytes`.
    pub fn verify(&self, bytes: &[u8], signature: &str) -> bool {
        let Ok(raw) = STANDARD.decode(signature) else {
            return false;
        };
        let Ok(signature) = ed25519_compact::Signature::from_slice(&raw) else {
            return false;
        };
        self.public_key.verify(bytes, &signature).is_ok()
    }
}

/// Lowercase hex SHA-256 of `bytes`.
pub fn hex_digest(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}
