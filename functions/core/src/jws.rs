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
}

/// Splits a compact JWS, or `None` if it does not have exactly three parts.
pub(crate) fn split(token: &str) -> Option<Compact<'_>> {
    let mut parts = token.split('.');
    let header = parts.next()?;
    let payload = parts.next()?;
    let _signature = parts.next()?;
    if parts.next().is_some() {
        return None;
    }
    Some(Compact { header, payload })
}

/// Decodes one base64url part as JSON.
pub(crate) fn decode<T: DeserializeOwned>(part: &str) -> Option<T> {
    let bytes = URL_SAFE_NO_PAD.decode(part).ok()?;
    serde_json::from_slice(&bytes).ok()
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
}
