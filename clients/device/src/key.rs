//! The device's private key: generated on the device, kept in a file only its owner
//! can read, and used for one thing: signing login assertions (RFC 7523).
//!
//! Ed25519 by default; P-256 (ES256) for hardware that has only that. Files are
//! PKCS#8 PEM (`-----BEGIN PRIVATE KEY-----`), the format `openssl genpkey` writes,
//! so a key made with OpenSSL loads too.

use std::fmt;
use std::io::Write;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jwt_simple::prelude::{
    Claims, ECDSAP256KeyPairLike, ES256KeyPair, Ed25519KeyPair, EdDSAKeyPairLike,
};
use thiserror::Error;

/// The longest assertion lifetime the server accepts (`exp - iat`).
pub const MAX_ASSERTION_LIFETIME: Duration = Duration::from_secs(3600);

#[derive(Debug, Error)]
pub enum KeyError {
    #[error("the key file is not an Ed25519 or P-256 private key in PKCS#8 PEM")]
    Unsupported,
    #[error(
        "{path} can be read by others (mode {mode:03o}): a device key must be 0600 (chmod 600 {path})"
    )]
    Permissions { path: String, mode: u32 },
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot sign: {0}")]
    Sign(String),
}

/// Which kind of key a device holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyAlgorithm {
    Ed25519,
    /// ECDSA over P-256 with SHA-256.
    Es256,
}

impl KeyAlgorithm {
    /// The JWS `alg` of its signatures.
    pub fn jws_alg(self) -> &'static str {
        match self {
            KeyAlgorithm::Ed25519 => "EdDSA",
            KeyAlgorithm::Es256 => "ES256",
        }
    }
}

enum Pair {
    Ed25519(Ed25519KeyPair),
    Es256(ES256KeyPair),
}

/// A device's private key.
pub struct DeviceKey {
    pair: Pair,
}

impl fmt::Debug for DeviceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the private half.
        f.debug_struct("DeviceKey")
            .field("algorithm", &self.algorithm())
            .finish_non_exhaustive()
    }
}

/// What an assertion says: who signs it, for whom.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AssertionClaims<'a> {
    /// `iss`: the tenant.
    pub tenant: &'a str,
    /// `sub`: the device.
    pub device: &'a str,
    /// `aud`: the audience provisioning named (`"toaster"`).
    pub audience: &'a str,
    /// `exp - iat`; at most [`MAX_ASSERTION_LIFETIME`].
    pub lifetime: Duration,
}

impl DeviceKey {
    /// A new Ed25519 key from the operating system's random source.
    pub fn generate() -> DeviceKey {
        DeviceKey {
            pair: Pair::Ed25519(Ed25519KeyPair::generate()),
        }
    }

    /// A new P-256 key (ES256).
    pub fn generate_p256() -> DeviceKey {
        DeviceKey {
            pair: Pair::Es256(ES256KeyPair::generate()),
        }
    }

    pub fn algorithm(&self) -> KeyAlgorithm {
        match self.pair {
            Pair::Ed25519(_) => KeyAlgorithm::Ed25519,
            Pair::Es256(_) => KeyAlgorithm::Es256,
        }
    }

    /// Reads a PKCS#8 PEM private key (Ed25519 or P-256).
    pub fn from_pem(pem: &str) -> Result<DeviceKey, KeyError> {
        let pem = pem.trim();
        if let Ok(pair) = Ed25519KeyPair::from_pem(pem) {
            return Ok(DeviceKey {
                pair: Pair::Ed25519(pair),
            });
        }
        ES256KeyPair::from_pem(pem)
            .map(|pair| DeviceKey {
                pair: Pair::Es256(pair),
            })
            .map_err(|_| KeyError::Unsupported)
    }

    /// The private key as PKCS#8 PEM. A secret: store it as [`DeviceKey::save`] does.
    pub fn to_pem(&self) -> Result<String, KeyError> {
        match &self.pair {
            Pair::Ed25519(pair) => Ok(pair.to_pem()),
            Pair::Es256(pair) => pair.to_pem().map_err(|_| KeyError::Unsupported),
        }
    }

    /// The public key as SPKI PEM (`-----BEGIN PUBLIC KEY-----`): what provisioning
    /// registers.
    pub fn public_key_pem(&self) -> Result<String, KeyError> {
        match &self.pair {
            Pair::Ed25519(pair) => Ok(pair.public_key().to_pem()),
            Pair::Es256(pair) => pair
                .public_key()
                .to_pem()
                .map_err(|_| KeyError::Unsupported),
        }
    }

    /// Writes the key to `path`, readable and writable by its owner only (0600),
    /// replacing any file there at once (written beside it, then renamed), so a crash
    /// never leaves half a key.
    pub fn save(&self, path: &Path) -> Result<(), KeyError> {
        let pem = self.to_pem()?;
        let io = |source| KeyError::Io {
            path: path.display().to_string(),
            source,
        };
        let file_name = path
            .file_name()
            .ok_or_else(|| io(std::io::Error::other("not a file path")))?;
        let mut temp_name = std::ffi::OsString::from(".");
        temp_name.push(file_name);
        temp_name.push(format!(".{:08x}.tmp", rand::random::<u32>()));
        let temp = path.with_file_name(temp_name);
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            // Created 0600: the key is never readable by others, not even briefly.
            options.mode(0o600);
        }
        let written = options.open(&temp).and_then(|mut file| {
            file.write_all(pem.as_bytes())?;
            file.sync_all()
        });
        if let Err(e) = written.and_then(|()| std::fs::rename(&temp, path)) {
            let _ = std::fs::remove_file(&temp);
            return Err(io(e));
        }
        Ok(())
    }

    /// Reads a key file written by [`DeviceKey::save`] (or `openssl genpkey`). On Unix
    /// a file that group or others may read or write is refused, as ssh refuses such
    /// keys: someone else may have it.
    pub fn load(path: &Path) -> Result<DeviceKey, KeyError> {
        let io = |source| KeyError::Io {
            path: path.display().to_string(),
            source,
        };
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(path).map_err(io)?.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                return Err(KeyError::Permissions {
                    path: path.display().to_string(),
                    mode,
                });
            }
        }
        let pem = std::fs::read_to_string(path).map_err(io)?;
        DeviceKey::from_pem(&pem)
    }

    /// The key at `path`, or a new Ed25519 key saved there if there is no file.
    pub fn load_or_generate(path: &Path) -> Result<DeviceKey, KeyError> {
        match DeviceKey::load(path) {
            Err(KeyError::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
                let key = DeviceKey::generate();
                key.save(path)?;
                Ok(key)
            }
            other => other,
        }
    }

    /// A login assertion (RFC 7523 JWT bearer): `iss` tenant, `sub` device, `aud`,
    /// `iat` now, `exp` after `lifetime` (capped at an hour), a fresh random `jti`.
    /// Sign a new one for every exchange: the server refuses a `jti` it has seen.
    pub fn sign_assertion(&self, claims: &AssertionClaims<'_>) -> Result<String, KeyError> {
        let lifetime = claims
            .lifetime
            .clamp(Duration::from_secs(1), MAX_ASSERTION_LIFETIME);
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_err(|_| KeyError::Sign("the system clock is before 1970".into()))?
            .as_secs();
        let jwt = Claims::create(jwt_simple::prelude::Duration::from_secs(lifetime.as_secs()))
            .with_issuer(claims.tenant)
            .with_subject(claims.device)
            .with_audience(claims.audience)
            .with_jwt_id(format!("{:032x}", rand::random::<u128>()));
        // jwt-simple reads a coarse clock; pin both ends to the system clock so the
        // lifetime is exact.
        let jwt = jwt_simple::prelude::JWTClaims {
            issued_at: Some(jwt_simple::prelude::UnixTimeStamp::from_secs(now)),
            invalid_before: Some(jwt_simple::prelude::UnixTimeStamp::from_secs(now)),
            expires_at: Some(jwt_simple::prelude::UnixTimeStamp::from_secs(
                now + lifetime.as_secs(),
            )),
            ..jwt
        };
        let signed = match &self.pair {
            Pair::Ed25519(pair) => pair.sign(jwt),
            Pair::Es256(pair) => pair.sign(jwt),
        };
        signed.map_err(|e| KeyError::Sign(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use jwt_simple::prelude::{
        ECDSAP256PublicKeyLike, EdDSAPublicKeyLike, NoCustomClaims, VerificationOptions,
    };
    use std::collections::HashSet;

    fn claims() -> AssertionClaims<'static> {
        AssertionClaims {
            tenant: "acme",
            device: "toaster-0001",
            audience: "toaster",
            lifetime: Duration::from_secs(300),
        }
    }

    fn payload(token: &str) -> serde_json::Value {
        let part = token.split('.').nth(1).unwrap();
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).unwrap()).unwrap()
    }

    fn header(token: &str) -> serde_json::Value {
        let part = token.split('.').next().unwrap();
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).unwrap()).unwrap()
    }

    fn options() -> VerificationOptions {
        VerificationOptions {
            allowed_issuers: Some(HashSet::from(["acme".to_owned()])),
            allowed_audiences: Some(HashSet::from(["toaster".to_owned()])),
            ..VerificationOptions::default()
        }
    }

    #[test]
    fn an_ed25519_assertion_carries_the_rfc_7523_claims() {
        let key = DeviceKey::generate();
        let token = key.sign_assertion(&claims()).unwrap();
        assert_eq!(header(&token)["alg"], "EdDSA");
        let p = payload(&token);
        assert_eq!(p["iss"], "acme");
        assert_eq!(p["sub"], "toaster-0001");
        assert_eq!(p["aud"], "toaster");
        let (iat, exp) = (p["iat"].as_u64().unwrap(), p["exp"].as_u64().unwrap());
        assert_eq!(exp - iat, 300);
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        assert!(iat.abs_diff(now) <= 2);
        assert_eq!(p["jti"].as_str().unwrap().len(), 32);
        // And the public key we register verifies it.
        let public =
            jwt_simple::prelude::Ed25519PublicKey::from_pem(&key.public_key_pem().unwrap())
                .unwrap();
        public
            .verify_token::<NoCustomClaims>(&token, Some(options()))
            .unwrap();
    }

    #[test]
    fn a_p256_assertion_verifies_with_its_public_key() {
        let key = DeviceKey::generate_p256();
        let token = key.sign_assertion(&claims()).unwrap();
        assert_eq!(header(&token)["alg"], "ES256");
        let public =
            jwt_simple::prelude::ES256PublicKey::from_pem(&key.public_key_pem().unwrap()).unwrap();
        public
            .verify_token::<NoCustomClaims>(&token, Some(options()))
            .unwrap();
    }

    #[test]
    fn every_assertion_has_a_fresh_jti_and_at_most_an_hour() {
        let key = DeviceKey::generate();
        let a = payload(&key.sign_assertion(&claims()).unwrap());
        let b = payload(&key.sign_assertion(&claims()).unwrap());
        assert_ne!(a["jti"], b["jti"]);
        let long = AssertionClaims {
            lifetime: Duration::from_secs(86_400),
            ..claims()
        };
        let p = payload(&key.sign_assertion(&long).unwrap());
        assert_eq!(
            p["exp"].as_u64().unwrap() - p["iat"].as_u64().unwrap(),
            3600
        );
    }

    #[test]
    fn a_saved_key_is_0600_and_loads_back() {
        let dir = tempfile::tempdir().unwrap();
        for key in [DeviceKey::generate(), DeviceKey::generate_p256()] {
            let path = dir.path().join(format!("{:?}.pem", key.algorithm()));
            key.save(&path).unwrap();
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt;
                let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
                assert_eq!(mode, 0o600);
            }
            let text = std::fs::read_to_string(&path).unwrap();
            assert!(text.starts_with("-----BEGIN PRIVATE KEY-----"), "{text}");
            let loaded = DeviceKey::load(&path).unwrap();
            assert_eq!(loaded.algorithm(), key.algorithm());
            assert_eq!(
                loaded.public_key_pem().unwrap(),
                key.public_key_pem().unwrap()
            );
            // Saving again replaces the file, still 0600, and leaves no temp file.
            DeviceKey::generate().save(&path).unwrap();
            assert_ne!(
                DeviceKey::load(&path).unwrap().public_key_pem().unwrap(),
                key.public_key_pem().unwrap()
            );
        }
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 2);
    }

    #[cfg(unix)]
    #[test]
    fn a_key_others_can_read_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("device.key");
        DeviceKey::generate().save(&path).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        match DeviceKey::load(&path) {
            Err(KeyError::Permissions { mode, .. }) => assert_eq!(mode, 0o644),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn load_or_generate_creates_once_then_reuses() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("device.key");
        let first = DeviceKey::load_or_generate(&path).unwrap();
        let second = DeviceKey::load_or_generate(&path).unwrap();
        assert_eq!(
            first.public_key_pem().unwrap(),
            second.public_key_pem().unwrap()
        );
    }

    #[test]
    fn garbage_is_not_a_key() {
        assert!(matches!(
            DeviceKey::from_pem("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----"),
            Err(KeyError::Unsupported)
        ));
        let public = DeviceKey::generate().public_key_pem().unwrap();
        assert!(DeviceKey::from_pem(&public).is_err());
    }

    #[test]
    fn debug_never_shows_the_private_key() {
        let key = DeviceKey::generate();
        let pem = key.to_pem().unwrap();
        let body: String = pem.lines().nth(1).unwrap().to_owned();
        assert!(!format!("{key:?}").contains(&body));
    }
}
