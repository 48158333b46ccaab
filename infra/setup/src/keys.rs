//! Local signing keys for `toaster up`: created on first start under the state
//! directory (git-ignored, mode 0600) and reused after. Production deployments pass
//! them as secret variables instead.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use anyhow::Context;
use base64::Engine as _;
use rand::RngCore;

/// A random HS256 secret: 32 random bytes, base64 (44 characters).
pub fn new_token_secret() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// A fresh Ed25519 private key as PKCS#8 PEM, the form
/// `openssl genpkey -algorithm ed25519` writes.
pub fn new_ed25519_pem() -> String {
    // PKCS#8 for Ed25519 is a fixed 16-byte DER prefix followed by the 32-byte seed
    // (RFC 8410, section 7).
    const PREFIX: [u8; 16] = [
        0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04,
        0x20,
    ];
    let mut der = PREFIX.to_vec();
    let mut seed = [0u8; 32];
    rand::rng().fill_bytes(&mut seed);
    der.extend_from_slice(&seed);
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    format!("-----BEGIN PRIVATE KEY-----\n{b64}\n-----END PRIVATE KEY-----\n")
}

/// Reads the key at `path`, or creates it with `make` (readable by the owner only).
pub fn load_or_create(path: &Path, make: impl FnOnce() -> String) -> anyhow::Result<String> {
    if path.exists() {
        let v = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        return Ok(
            v.trim_end_matches('\n').to_string() + if v.contains("-----END") { "\n" } else { "" }
        );
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let value = make();
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    f.write_all(value.as_bytes())?;
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_ed25519_keys_parse_as_pkcs8() {
        let pem = new_ed25519_pem();
        assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----\n"));
        let b64: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
        let der = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .unwrap();
        assert_eq!(der.len(), 48);
        assert_ne!(new_ed25519_pem(), pem);
    }

    #[test]
    fn token_secrets_are_long_enough() {
        assert!(new_token_secret().len() >= 32);
    }
}
