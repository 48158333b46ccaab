//! Query strings (`?model=t1000&tag=site%3Dberlin&limit=50`): percent-decoded pairs,
//! and the pieces every list endpoint shares (`limit`, `cursor`).
//!
//! Parameters a handler does not know are refused with 400 by [`Query::finish`], so a
//! typo (`?tags=`) is an error rather than a silently unfiltered list.
//!
//! # Cursors
//!
//! Every list pages by keyset: `next_cursor` names the last item shown, and the next
//! page starts after it. A cursor is opaque and checked: a value the endpoint could not
//! have returned is 400 ("not a cursor this endpoint returned"), never an empty page
//! that looks like the end of the list. Lists whose key has a shape of its own check
//! that shape (the audit log's sequence numbers, `fw_`/`ro_` ids, the raw readings'
//! milliseconds). Where the key is something a client may write (a device id), the
//! cursor is [`encode_cursor`]: base64url of the list's name and the key, so `zzzz` or a
//! bare device id is refused by [`decode_cursor`] rather than read as "after `zzzz`".

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use toaster_core::problem::Problem;

/// Longest query string read; longer is 400.
pub const MAX_QUERY_BYTES: usize = 4096;
/// Page size when the request names none.
pub const DEFAULT_LIMIT: u32 = 50;
/// Largest page size a client may ask for.
pub const MAX_LIMIT: u32 = 500;

/// The decoded parameters of one request, consumed by name.
#[derive(Debug, Clone, Default)]
pub struct Query {
    pairs: Vec<(String, String)>,
}

impl Query {
    /// Decodes `a=1&b=x%20y` (`+` is a space). Malformed escapes or text that is not
    /// UTF-8 once decoded are 400.
    pub fn parse(raw: &str) -> Result<Query, Problem> {
        Self::parse_limited(raw, MAX_QUERY_BYTES)
    }

    /// [`Query::parse`] with another bound, such as for an
    /// `application/x-www-form-urlencoded` body (same encoding).
    pub fn parse_limited(raw: &str, max_bytes: usize) -> Result<Query, Problem> {
        if raw.len() > max_bytes {
            return Err(Problem::bad_request(format!(
                "the query string must be at most {max_bytes} bytes"
            )));
        }
        let mut pairs = Vec::new();
        for part in raw.split('&').filter(|p| !p.is_empty()) {
            let (name, value) = part.split_once('=').unwrap_or((part, ""));
            pairs.push((decode(name)?, decode(value)?));
        }
        Ok(Query { pairs })
    }

    /// The value of `name` if given once; 400 if given more than once.
    pub fn take(&mut self, name: &str) -> Result<Option<String>, Problem> {
        let mut found = None;
        let mut rest = Vec::with_capacity(self.pairs.len());
        for (key, value) in self.pairs.drain(..) {
            if key == name {
                if found.is_some() {
                    return Err(Problem::bad_request(format!(
                        "the query parameter {name} may be given once"
                    )));
                }
                found = Some(value);
            } else {
                rest.push((key, value));
            }
        }
        self.pairs = rest;
        Ok(found)
    }

    /// `name` parsed by `parse`; a value it refuses is 400 naming the parameter.
    pub fn take_parsed<T, E: std::fmt::Display>(
        &mut self,
        name: &str,
        parse: impl FnOnce(&str) -> Result<T, E>,
    ) -> Result<Option<T>, Problem> {
        match self.take(name)? {
            None => Ok(None),
            Some(value) => parse(&value).map(Some).map_err(|e| {
                Problem::bad_request(format!("the query parameter {name} is invalid: {e}"))
            }),
        }
    }

    /// `limit`: 1 to [`MAX_LIMIT`], default [`DEFAULT_LIMIT`].
    pub fn take_limit(&mut self) -> Result<u32, Problem> {
        let limit = self.take_parsed("limit", |v| {
            v.parse::<u32>()
                .ok()
                .filter(|n| (1..=MAX_LIMIT).contains(n))
                .ok_or_else(|| format!("must be an integer from 1 to {MAX_LIMIT}"))
        })?;
        Ok(limit.unwrap_or(DEFAULT_LIMIT))
    }

    /// `true`/`false`; absent is `false`.
    pub fn take_bool(&mut self, name: &str) -> Result<bool, Problem> {
        let value = self.take_parsed(name, |v| match v {
            "true" => Ok(true),
            "false" => Ok(false),
            _ => Err("must be true or false"),
        })?;
        Ok(value.unwrap_or(false))
    }

    /// 400 if any parameter was not taken.
    pub fn finish(self) -> Result<(), Problem> {
        match self.pairs.first() {
            None => Ok(()),
            Some((name, _)) => {
                let shown: String = name.chars().take(64).collect();
                Err(Problem::bad_request(format!(
                    "unknown query parameter {shown:?}"
                )))
            }
        }
    }
}

/// The detail of a 400 for a cursor the endpoint did not return.
pub const NOT_A_CURSOR: &str = "not a cursor this endpoint returned";

/// The opaque cursor naming `key` in the list called `list` (such as `devices`).
pub fn encode_cursor(list: &str, key: &str) -> String {
    URL_SAFE_NO_PAD.encode(format!("{list}:{key}"))
}

/// The key of a cursor [`encode_cursor`] made for `list`; `None` for anything else
/// (not base64url, another list's, not UTF-8).
pub fn decode_cursor(list: &str, cursor: &str) -> Option<String> {
    let bytes = URL_SAFE_NO_PAD.decode(cursor).ok()?;
    let text = String::from_utf8(bytes).ok()?;
    let key = text.strip_prefix(list)?.strip_prefix(':')?;
    Some(key.to_owned())
}

fn decode(text: &str) -> Result<String, Problem> {
    percent_decode(text, true).map_err(|e| match e {
        DecodeError::Escape => {
            Problem::bad_request("the query string has an invalid percent-escape")
        }
        DecodeError::Utf8 => Problem::bad_request("the query string is not UTF-8 once decoded"),
    })
}

/// Why [`percent_decode`] refused a text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecodeError {
    /// A `%` not followed by two hex digits.
    Escape,
    /// Not UTF-8 once decoded.
    Utf8,
}

/// Decodes `%XX` escapes (and `+` as a space when `plus_is_space`, as in a query
/// string). The one decoder of query parameters and path segments.
pub fn percent_decode(text: &str, plus_is_space: bool) -> Result<String, DecodeError> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = bytes.get(i + 1..i + 3).ok_or(DecodeError::Escape)?;
                let hex = std::str::from_utf8(hex).map_err(|_| DecodeError::Escape)?;
                out.push(u8::from_str_radix(hex, 16).map_err(|_| DecodeError::Escape)?);
                i += 3;
            }
            b'+' if plus_is_space => {
                out.push(b' ');
                i += 1;
            }
            byte => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8(out).map_err(|_| DecodeError::Utf8)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_and_takes_by_name() {
        let mut q = Query::parse("tag=site%3Dberlin&model=t+1&limit=10&erase").unwrap();
        assert_eq!(q.take("tag").unwrap().as_deref(), Some("site=berlin"));
        assert_eq!(q.take("model").unwrap().as_deref(), Some("t 1"));
        assert_eq!(q.take_limit().unwrap(), 10);
        assert_eq!(q.take("erase").unwrap().as_deref(), Some(""));
        assert_eq!(q.take("missing").unwrap(), None);
        q.finish().unwrap();
    }

    #[test]
    fn refuses_what_it_cannot_read() {
        for raw in ["a=%", "a=%zz", "a=%ff"] {
            assert_eq!(Query::parse(raw).unwrap_err().status, 400, "{raw}");
        }
        let mut q = Query::parse("a=1&a=2").unwrap();
        assert_eq!(q.take("a").unwrap_err().status, 400);
        let mut q = Query::parse("limit=0").unwrap();
        assert_eq!(q.take_limit().unwrap_err().status, 400);
        let mut q = Query::parse("limit=501").unwrap();
        assert_eq!(q.take_limit().unwrap_err().status, 400);
        assert_eq!(
            Query::parse("x=1").unwrap().finish().unwrap_err().status,
            400
        );
        let mut q = Query::parse("erase=yes").unwrap();
        assert_eq!(q.take_bool("erase").unwrap_err().status, 400);
    }

    #[test]
    fn cursors_round_trip_and_nothing_else_reads_as_one() {
        let cursor = encode_cursor("devices", "aa:bb-01");
        assert!(
            cursor
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
            "{cursor} needs no escaping in a query string"
        );
        assert_eq!(
            decode_cursor("devices", &cursor).as_deref(),
            Some("aa:bb-01")
        );
        assert_eq!(decode_cursor("firmware", &cursor), None, "another list's");
        // What used to be taken as "the devices after this id".
        for raw in ["zzzz", "aa:bb-01", "d1", "", "%%%", "ZGV2aWNlcw"] {
            assert_eq!(decode_cursor("devices", raw), None, "{raw:?}");
        }
        // Base64url of text that is not UTF-8.
        assert_eq!(decode_cursor("devices", "_-8"), None);
        let mut q = Query::parse(&format!("cursor={cursor}")).unwrap();
        let key = q
            .take_parsed("cursor", |v| {
                decode_cursor("devices", v).ok_or(NOT_A_CURSOR)
            })
            .unwrap();
        assert_eq!(key.as_deref(), Some("aa:bb-01"));
        let mut q = Query::parse("cursor=zzzz").unwrap();
        let problem = q
            .take_parsed("cursor", |v| {
                decode_cursor("devices", v).ok_or(NOT_A_CURSOR)
            })
            .unwrap_err();
        assert_eq!(problem.status, 400);
        assert!(problem.detail.unwrap().contains(NOT_A_CURSOR));
    }

    #[test]
    fn defaults() {
        let mut q = Query::parse("").unwrap();
        assert_eq!(q.take_limit().unwrap(), DEFAULT_LIMIT);
        assert!(!q.take_bool("erase").unwrap());
    }
}
