//! PEM blocks (RFC 7468) of the keys Toaster reads and writes: device public keys
//! (`PUBLIC KEY`, SPKI) and the manifest signing key (`PRIVATE KEY`, PKCS#8). The one
//! reader and writer of the crate.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;

/// The label of an SPKI public key block.
pub const PUBLIC_KEY: &str = "PUBLIC KEY";
/// The label of a PKCS#8 private key block.
pub const PRIVATE_KEY: &str = "PRIVATE KEY";

/// The DER of an Ed25519 SPKI public key up to its 32 bytes (RFC 8410: OID
/// 1.3.101.112, a 32-byte key).
pub const ED25519_SPKI_PREFIX: [u8; 12] = [
    0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
];

/// The DER inside the one `label` block that `pem` is (surrounding whitespace
/// allowed, whitespace inside the base64 ignored). `None` for anything else: another
/// label, text around the block, a second block between the markers, bad base64.
pub fn decode(pem: &str, label: &str) -> Option<Vec<u8>> {
    let body = pem
        .trim()
        .strip_prefix("-----BEGIN ")?
        .strip_prefix(label)?
        .strip_prefix("-----")?;
    let end = format!("-----END {label}-----");
    let body = body.strip_suffix(end.as_str())?;
    // A second block hidden between our markers would otherwise be base64 noise.
    if body.contains('-') {
        return None;
    }
    let base64: String = body.split_ascii_whitespace().collect();
    STANDARD.decode(base64).ok()
}

/// `der` as a `label` block with the standard 64-character lines and a final newline.
pub fn encode(label: &str, der: &[u8]) -> String {
    let base64 = STANDARD.encode(der);
    let mut pem = String::with_capacity(base64.len() + 2 * label.len() + 40);
    pem.push_str(&format!("-----BEGIN {label}-----\n"));
    // base64 output is ASCII, so the byte chunks are whole characters.
    for line in base64.as_bytes().chunks(64) {
        pem.push_str(&String::from_utf8_lossy(line));
        pem.push('\n');
    }
    pem.push_str(&format!("-----END {label}-----\n"));
    pem
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_round_trip_with_64_character_lines() {
        let der: Vec<u8> = (0..=255).collect();
        let pem = encode(PUBLIC_KEY, &der);
        assert!(pem.starts_with("-----BEGIN PUBLIC KEY-----\n"));
        assert!(pem.ends_with("\n-----END PUBLIC KEY-----\n"));
        assert!(pem.lines().all(|line| line.len() <= 64));
        assert_eq!(decode(&pem, PUBLIC_KEY), Some(der.clone()));
        // Whitespace around and inside is ignored; CRLF too.
        let loose = format!("\n  {}  \n", pem.replace('\n', "\r\n"));
        assert_eq!(decode(&loose, PUBLIC_KEY), Some(der));
    }

    #[test]
    fn anything_but_one_block_of_the_label_is_refused() {
        let pem = encode(PRIVATE_KEY, b"key");
        assert_eq!(decode(&pem, PUBLIC_KEY), None);
        assert_eq!(decode(&format!("junk{pem}"), PRIVATE_KEY), None);
        let two = format!("{pem}{pem}");
        assert_eq!(decode(&two, PRIVATE_KEY), None);
        assert_eq!(
            decode(
                "-----BEGIN PRIVATE KEY-----\n!!!!\n-----END PRIVATE KEY-----",
                PRIVATE_KEY
            ),
            None
        );
    }
}
