//! Identifiers made from the host's CSPRNG (`wasi:random`): a prefix naming the kind
//! and 16 hex digits, such as `fw_…` (firmware), `ro_…` (rollouts), `cmd_…`
//! (commands), `cb_…` (fleet sends).

use rand::TryRngCore;
use rand::rngs::OsRng;
use toaster_core::problem::Problem;

use crate::respond;

/// `prefix` and 16 hex digits from the host's CSPRNG. A failing random source is
/// logged and answered 500.
pub fn new_id(prefix: &str) -> Result<String, Problem> {
    let mut bytes = [0u8; 8];
    OsRng.try_fill_bytes(&mut bytes).map_err(|e| {
        eprintln!("the random source failed: {e}");
        respond::internal()
    })?;
    Ok(format!("{prefix}{}", hex::encode(bytes)))
}

/// Whether `raw` has the shape of an id made by [`new_id`] with `prefix`. Anything
/// else names nothing (404), and is never sent to the database.
pub fn is_id(prefix: &str, raw: &str) -> bool {
    raw.strip_prefix(prefix).is_some_and(|hex| {
        hex.len() == 16 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_have_their_prefix_and_16_hex_digits() {
        let id = new_id("cmd_").unwrap();
        assert!(is_id("cmd_", &id), "{id}");
        assert_ne!(new_id("cmd_").unwrap(), id);
        for bad in [
            "cmd_",
            "cmd_0123456789abcdeF",
            "cb_0123456789abcdef",
            "cmd_0123456789abcde",
            "cmd_0123456789abcdef0",
        ] {
            assert!(!is_id("cmd_", bad), "{bad}");
        }
    }
}
