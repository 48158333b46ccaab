//! Reading a state write: the JSON Merge Patch body (RFC 7386) and `If-Match`.

use serde_json::Value;
use spin_sdk::http::Request;
use toaster_core::control::state::{self, Limits};
use toaster_core::problem::{Problem, ProblemType};

use crate::error::ControlError;
use crate::state::Side;

/// The media type of RFC 7386; `application/json` is accepted too.
pub const MERGE_PATCH: &str = "application/merge-patch+json";

/// The request body as a merge patch within `limits`: 415 for another media type, 413
/// over the size limit, 400 for what is not JSON, 422 for a patch that is not an object
/// or nests too deep or too wide. `null` members are the patch's deletions.
pub fn read(req: &Request, limits: &Limits) -> Result<Value, Problem> {
    let content_type = req.header("content-type").and_then(|v| v.as_str());
    let media_type = content_type
        .and_then(|t| t.split(';').next())
        .map(str::trim)
        .unwrap_or("");
    if !media_type.eq_ignore_ascii_case(MERGE_PATCH)
        && !media_type.eq_ignore_ascii_case("application/json")
    {
        return Err(Problem::unsupported_media_type(MERGE_PATCH));
    }
    let body = req.body();
    if body.len() > limits.max_bytes {
        return Err(
            Problem::of(ProblemType::PayloadTooLarge).with_detail(format!(
                "the patch is {} bytes, over the limit of {} (state_max_bytes)",
                body.len(),
                limits.max_bytes
            )),
        );
    }
    let patch: Value = serde_json::from_slice(body).map_err(|e| {
        // serde_json's recursion limit (128) is a nesting problem, not a syntax one.
        if e.to_string().contains("recursion limit") {
            ControlError::State(state::StateError::TooDeep {
                max: limits.max_depth,
            })
            .into()
        } else {
            Problem::bad_request(format!(
                "the body is not valid JSON: line {} column {}",
                e.line(),
                e.column()
            ))
        }
    })?;
    state::check_patch(&patch, limits).map_err(ControlError::State)?;
    Ok(patch)
}

/// What `If-Match` asks of the document being written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Precondition {
    /// No `If-Match`, or `*`: write whatever the version.
    None,
    /// Write only if the document is at this version.
    Version(i64),
}

/// `If-Match` for a write to `side`: one entity tag, either the document's version
/// (`"5"`) or the state's tag from a read (`"d5.r3"`, whose number for `side` counts).
/// A weak tag never matches (RFC 9110 §13.1.1 compares strongly): 412.
pub fn precondition(req: &Request, side: Side) -> Result<Precondition, Problem> {
    let Some(raw) = req.header("if-match") else {
        return Ok(Precondition::None);
    };
    let text = raw
        .as_str()
        .ok_or_else(|| Problem::bad_request("If-Match is not text"))?
        .trim();
    if text == "*" {
        return Ok(Precondition::None);
    }
    if text.contains(',') {
        return Err(Problem::bad_request(
            "If-Match takes one entity tag here: the version that was read",
        ));
    }
    if text.starts_with("W/") {
        return Ok(Precondition::Version(-1));
    }
    let tag = text
        .strip_prefix('"')
        .and_then(|t| t.strip_suffix('"'))
        .ok_or_else(|| {
            Problem::bad_request("If-Match must be a quoted entity tag, such as \"5\"")
        })?;
    version_in_tag(tag, side)
        .map(Precondition::Version)
        .ok_or_else(|| {
            Problem::bad_request(
                "If-Match must name a version (\"5\") or a state tag from a read (\"d5.r3\")",
            )
        })
}

fn version_in_tag(tag: &str, side: Side) -> Option<i64> {
    let number = |text: &str| {
        (!text.is_empty() && text.len() <= 18 && text.bytes().all(|b| b.is_ascii_digit()))
            .then(|| text.parse::<i64>().ok())
            .flatten()
    };
    if let Some(n) = number(tag) {
        return Some(n);
    }
    let (desired, reported) = tag.strip_prefix('d')?.split_once(".r")?;
    match side {
        Side::Desired => number(desired),
        Side::Reported => number(reported),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_name_the_version_of_the_side_written() {
        assert_eq!(version_in_tag("5", Side::Desired), Some(5));
        assert_eq!(version_in_tag("d5.r3", Side::Desired), Some(5));
        assert_eq!(version_in_tag("d5.r3", Side::Reported), Some(3));
        for bad in [
            "",
            "d5",
            "x5.r3",
            "d.r3",
            "-1",
            "5a",
            "99999999999999999999",
        ] {
            assert_eq!(version_in_tag(bad, Side::Desired), None, "{bad}");
        }
    }
}
