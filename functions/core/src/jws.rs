//! Reading a compact JWS (`header.payload.signature`) ourselves, for what jwt-simple
//! does not give us: the header's `alg` before choosing a key, and the payload's
//! claims as plain integers and strings (jwt-simple's fixed-point timestamps wrap
//! after 2106 and accept floats; we want neither).

use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Deserialize;
use serde::de::DeserializeOwned;

/// The three base64url parts of a compact JWS, still encoded.
pub(crate) struct Compact<'a> {
    pub header: &'a str,
    pub payload: &'a str,
    pub signature: &'a str,
    /// `header.payload` as sent: the bytes the signature covers.
    pub signing_input: &'a str,
}

/// Splits a compact JWS, or `None` if it does not have exactly three parts.
pub(crate) fn split(token: &str) -> Option<Compact<'_>> {
    let mut parts = token.split('.');
    let header = parts.next()?;
    let payload = parts.next()?;
    let signature = parts.next()?;
    if parts.next().is_some() {
        return None;
    }
    let signing_input = &token[..header.len() + 1 + payload.len()];
    Some(Compact {
        header,
        payload,
        signature,
        signing_input,
    })
}

/// Decodes one base64url part as JSON.
pub(crate) fn decode<T: DeserializeOwned>(part: &str) -> Option<T> {
    let bytes = URL_SAFE_NO_PAD.decode(part).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// Decodes one base64url part as bytes (a signature).
pub(crate) fn decode_raw(part: &str) -> Option<Vec<u8>> {
    URL_SAFE_NO_PAD.decode(part).ok()
}

#[derive(Deserialize)]
pub(crate) struct Header {
    pub alg: String,
}

/// Seconds since the Unix epoch from the system clock, or `None` if the clock is set
/// before 1970.
pub(crate) fn now_unix() -> Option<u64> {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .ok()
        .map(|elapsed| elapsed.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_wants_exactly_three_parts() {
        let parts = split("hh.ppp.s").unwrap();
        assert_eq!(
            (parts.header, parts.payload, parts.signature),
            ("hh", "ppp", "s")
        );
        assert_eq!(parts.signing_input, "hh.ppp");
        assert!(split("a.b.c").is_some());
        assert!(split("a.b.").is_some());
        assert!(split("a.b").is_none());
        assert!(split("a.b.c.d").is_none());
        assert!(split("").is_none());
    }

    #[test]
    fn decode_refuses_padding_and_non_json() {
        // {"alg":"HS256"}
        let header: Header = decode("eyJhbGciOiJIUzI1NiJ9").unwrap();
        assert_eq!(header.alg, "HS256");
        assert!(decode::<Header>("eyJhbGciOiJIUzI1NiJ9==").is_none());
        assert!(decode::<Header>("bm90IGpzb24").is_none());
    }

    #[test]
    fn decode_raw_is_strict_base64url() {
        // 32 zero bytes.
        let zeros = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
        assert_eq!(decode_raw(zeros), Some(vec![0; 32]));
        // Non-zero trailing bits, padding, the standard alphabet: refused.
        assert_eq!(
            decode_raw("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAB"),
            None
        );
        assert_eq!(decode_raw("AA=="), None);
        assert_eq!(decode_raw("a+b/"), None);
    }
}
