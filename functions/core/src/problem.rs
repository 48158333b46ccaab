//! Error responses as RFC 9457 problem details (`application/problem+json`).
//!
//! Every error a component returns is a [`Problem`]. Its `type` is a stable URI that
//! clients may match on; the `title` is fixed per type; `detail` and `errors` explain
//! this occurrence. Nothing here ever puts a secret, token or SQL into a body: callers
//! pass only messages they wrote.
//!
//! The `type` URIs, all under `https://toaster.dev/problems/`:
//!
//! | type                     | status | constructor                      |
//! |--------------------------|--------|----------------------------------|
//! | `bad-request`            | 400    | [`Problem::bad_request`]         |
//! | `unauthorized`           | 401    | [`Problem::unauthorized`]        |
//! | `forbidden`              | 403    | [`Problem::forbidden`]           |
//! | `not-found`              | 404    | [`Problem::not_found`]           |
//! | `conflict`               | 409    | [`Problem::conflict`]            |
//! | `payload-too-large`      | 413    | [`Problem::payload_too_large`]   |
//! | `unsupported-media-type` | 415    | [`Problem::unsupported_media_type`] |
//! | `validation`             | 422    | [`Problem::unprocessable`]       |
//! | `rate-limited`           | 429    | [`Problem::too_many_requests`]   |
//! | `unavailable`            | 503    | [`Problem::unavailable`]         |

use serde::{Deserialize, Serialize};

/// The media type of every error body.
pub const CONTENT_TYPE: &str = "application/problem+json";

/// The `WWW-Authenticate` header value sent with every 401 (RFC 6750).
pub const WWW_AUTHENTICATE: &str = r#"Bearer realm="toaster""#;

const TYPE_BASE: &str = "https://toaster.dev/problems/";

/// One invalid field of a request body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FieldError {
    /// RFC 6901 JSON pointer into the request body, such as `/readings/3/ts`.
    pub pointer: String,
    pub detail: String,
}

impl FieldError {
    pub fn new(pointer: impl Into<String>, detail: impl Into<String>) -> Self {
        Self {
            pointer: pointer.into(),
            detail: detail.into(),
        }
    }
}

/// An RFC 9457 problem details body, plus the `Retry-After` value that travels as a
/// header beside it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Problem {
    #[serde(rename = "type")]
    pub type_: String,
    pub title: String,
    pub status: u16,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<FieldError>,
    /// Seconds for the `Retry-After` header; not part of the body.
    #[serde(skip)]
    pub retry_after: Option<u32>,
}

impl Problem {
    fn new(slug: &str, title: &str, status: u16) -> Self {
        Self {
            type_: format!("{TYPE_BASE}{slug}"),
            title: title.to_owned(),
            status,
            detail: None,
            errors: Vec::new(),
            retry_after: None,
        }
    }

    /// Adds an explanation of this occurrence. It is sent to the client as is.
    pub fn with_detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = Some(detail.into());
        self
    }

    /// 400: the request cannot be read at all (malformed JSON, bad query string).
    pub fn bad_request(detail: impl Into<String>) -> Self {
        Self::new("bad-request", "Malformed request", 400).with_detail(detail)
    }

    /// 401: the bearer token is missing, invalid or expired. Send
    /// [`WWW_AUTHENTICATE`] with it.
    pub fn unauthorized() -> Self {
        Self::new("unauthorized", "Authentication required", 401)
    }

    /// 403: authenticated, but the role may not do this.
    pub fn forbidden() -> Self {
        Self::new("forbidden", "Not allowed", 403)
    }

    /// 404: no such resource, or it belongs to another tenant (the two must look
    /// alike so that tenants cannot probe each other).
    pub fn not_found() -> Self {
        Self::new("not-found", "Not found", 404)
    }

    /// 409: the request conflicts with the current state, such as a duplicate id.
    pub fn conflict(detail: impl Into<String>) -> Self {
        Self::new("conflict", "Conflict", 409).with_detail(detail)
    }

    /// 413: the body is larger than `limit_bytes`.
    pub fn payload_too_large(limit_bytes: usize) -> Self {
        Self::new("payload-too-large", "Payload too large", 413).with_detail(format!(
            "the request body must be at most {limit_bytes} bytes"
        ))
    }

    /// 415: the body is not of the `expected` media type.
    pub fn unsupported_media_type(expected: &str) -> Self {
        Self::new("unsupported-media-type", "Unsupported media type", 415)
            .with_detail(format!("the request body must be {expected}"))
    }

    /// 422: the body is well-formed but breaks the schema; one entry per bad field.
    pub fn unprocessable(errors: Vec<FieldError>) -> Self {
        let detail = match errors.len() {
            1 => "1 field is invalid".to_owned(),
            n => format!("{n} fields are invalid"),
        };
        Self {
            errors,
            ..Self::new("validation", "Validation failed", 422).with_detail(detail)
        }
    }

    /// 429: a rate limit was hit; the client may retry after `retry_after` seconds.
    pub fn too_many_requests(retry_after: u32) -> Self {
        Self {
            retry_after: Some(retry_after),
            ..Self::new("rate-limited", "Too many requests", 429)
        }
    }

    /// 503: storage is unreachable; the client may retry after `retry_after` seconds.
    pub fn unavailable(retry_after: u32) -> Self {
        Self {
            retry_after: Some(retry_after),
            ..Self::new("unavailable", "Service unavailable", 503)
        }
    }

    /// The response body.
    pub fn to_json(&self) -> String {
        // Serializing strings, integers and a Vec of them cannot fail; the fallback
        // exists so that an error path never panics.
        serde_json::to_string(self).unwrap_or_else(|_| {
            format!(
                r#"{{"type":"{}","title":"{}","status":{}}}"#,
                self.type_, self.title, self.status
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn body(problem: &Problem) -> Value {
        serde_json::from_str(&problem.to_json()).unwrap()
    }

    #[test]
    fn every_kind_has_its_status_and_a_stable_type() {
        let cases = [
            (Problem::bad_request("x"), 400, "bad-request"),
            (Problem::unauthorized(), 401, "unauthorized"),
            (Problem::forbidden(), 403, "forbidden"),
            (Problem::not_found(), 404, "not-found"),
            (Problem::conflict("x"), 409, "conflict"),
            (Problem::payload_too_large(10), 413, "payload-too-large"),
            (
                Problem::unsupported_media_type("application/json"),
                415,
                "unsupported-media-type",
            ),
            (Problem::unprocessable(vec![]), 422, "validation"),
            (Problem::too_many_requests(3), 429, "rate-limited"),
            (Problem::unavailable(5), 503, "unavailable"),
        ];
        for (problem, status, slug) in cases {
            assert_eq!(problem.status, status);
            assert_eq!(
                problem.type_,
                format!("https://toaster.dev/problems/{slug}")
            );
            let body = body(&problem);
            assert_eq!(body["status"], status);
            assert_eq!(body["type"], problem.type_);
            assert_eq!(body["title"], problem.title);
        }
    }

    #[test]
    fn validation_lists_each_field_by_pointer() {
        let problem = Problem::unprocessable(vec![
            FieldError::new("/readings/3/ts", "must not be in the future"),
            FieldError::new("/readings/4/metric", "must not be empty"),
        ]);
        assert_eq!(
            body(&problem),
            json!({
                "type": "https://toaster.dev/problems/validation",
                "title": "Validation failed",
                "status": 422,
                "detail": "2 fields are invalid",
                "errors": [
                    {"pointer": "/readings/3/ts", "detail": "must not be in the future"},
                    {"pointer": "/readings/4/metric", "detail": "must not be empty"},
                ],
            })
        );
    }

    #[test]
    fn empty_errors_and_detail_are_left_out() {
        let body = body(&Problem::forbidden());
        let object = body.as_object().unwrap();
        assert!(!object.contains_key("errors"));
        assert!(!object.contains_key("detail"));
    }

    #[test]
    fn retry_after_is_for_the_header_only() {
        let problem = Problem::too_many_requests(7);
        assert_eq!(problem.retry_after, Some(7));
        assert!(!problem.to_json().contains("retry"));
        assert_eq!(Problem::unavailable(2).retry_after, Some(2));
    }

    #[test]
    fn detail_is_escaped() {
        let problem = Problem::bad_request("quote \" and \n newline");
        assert_eq!(body(&problem)["detail"], "quote \" and \n newline");
    }

    #[test]
    fn round_trips_for_clients() {
        let problem = Problem::conflict("device exists");
        let back: Problem = serde_json::from_str(&problem.to_json()).unwrap();
        assert_eq!(back, problem);
    }
}
