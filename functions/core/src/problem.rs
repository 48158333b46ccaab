//! Error responses as RFC 9457 problem details (`application/problem+json`).
//!
//! Every error a component returns is a [`Problem`]. Its `type` is a stable URI that
//! clients may match on; the `title` is fixed per type; `detail` and `errors` explain
//! this occurrence. Nothing here ever puts a secret, token or SQL into a body: callers
//! pass only messages they wrote.
//!
//! The `type` URIs, all under `https://toaster.dev/problems/`, and their one title
//! each, are the table [`ProblemType`]: every problem is built from it, so a `type` has
//! the same title wherever it is sent. The titles of the generic types are HTTP's
//! reason phrases (RFC 9110), as the host's own answers use them.

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
    /// The methods for the `Allow` header of a 405; empty otherwise. Not part of the
    /// body. A one-byte set: every `Result<_, Problem>` carries the field.
    #[serde(skip)]
    pub allow: Methods,
}

/// Every problem `type` Toaster sends: its slug under `https://toaster.dev/problems/`,
/// its one title and its status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProblemType {
    /// 400: the request cannot be read at all (malformed JSON, bad query string).
    BadRequest,
    /// 401: the bearer token is missing, invalid or expired.
    Unauthorized,
    /// 403: authenticated, but the role may not do this.
    Forbidden,
    /// 404: no such resource (or another tenant's).
    NotFound,
    /// 405: the resource exists, not with this method (sent with `Allow`).
    MethodNotAllowed,
    /// 408: the request body did not arrive in time (the host).
    RequestTimeout,
    /// 409: the request conflicts with the current state.
    Conflict,
    /// 412: the request's `If-Match` names a version that is no longer current.
    PreconditionFailed,
    /// 413: the body is too large.
    PayloadTooLarge,
    /// 414: the request target is too long (the host).
    UriTooLong,
    /// 415: the body is not of the expected media type.
    UnsupportedMediaType,
    /// 422: the body is well-formed but breaks the schema.
    Validation,
    /// 429: a rate limit was hit.
    RateLimited,
    /// 431: the request's headers are too large (the host).
    HeadersTooLarge,
    /// 500: our fault.
    Internal,
    /// 503: storage unreachable, or the server at capacity.
    Unavailable,
    /// 504: the component did not answer in time (the host).
    Timeout,
}

impl ProblemType {
    /// Every type, in status order.
    pub const ALL: [ProblemType; 17] = [
        Self::BadRequest,
        Self::Unauthorized,
        Self::Forbidden,
        Self::NotFound,
        Self::MethodNotAllowed,
        Self::RequestTimeout,
        Self::Conflict,
        Self::PreconditionFailed,
        Self::PayloadTooLarge,
        Self::UriTooLong,
        Self::UnsupportedMediaType,
        Self::Validation,
        Self::RateLimited,
        Self::HeadersTooLarge,
        Self::Internal,
        Self::Unavailable,
        Self::Timeout,
    ];

    /// The last segment of the `type` URI.
    pub const fn slug(self) -> &'static str {
        match self {
            Self::BadRequest => "bad-request",
            Self::Unauthorized => "unauthorized",
            Self::Forbidden => "forbidden",
            Self::NotFound => "not-found",
            Self::MethodNotAllowed => "method-not-allowed",
            Self::RequestTimeout => "request-timeout",
            Self::Conflict => "conflict",
            Self::PreconditionFailed => "precondition-failed",
            Self::PayloadTooLarge => "payload-too-large",
            Self::UriTooLong => "uri-too-long",
            Self::UnsupportedMediaType => "unsupported-media-type",
            Self::Validation => "validation",
            Self::RateLimited => "rate-limited",
            Self::HeadersTooLarge => "headers-too-large",
            Self::Internal => "internal",
            Self::Unavailable => "unavailable",
            Self::Timeout => "timeout",
        }
    }

    /// The one title of this type.
    pub const fn title(self) -> &'static str {
        match self {
            Self::BadRequest => "Bad Request",
            Self::Unauthorized => "Unauthorized",
            Self::Forbidden => "Forbidden",
            Self::NotFound => "Not Found",
            Self::MethodNotAllowed => "Method Not Allowed",
            Self::RequestTimeout => "Request Timeout",
            Self::Conflict => "Conflict",
            Self::PreconditionFailed => "Precondition Failed",
            Self::PayloadTooLarge => "Payload Too Large",
            Self::UriTooLong => "URI Too Long",
            Self::UnsupportedMediaType => "Unsupported Media Type",
            Self::Validation => "Validation failed",
            Self::RateLimited => "Too Many Requests",
            Self::HeadersTooLarge => "Request Header Fields Too Large",
            Self::Internal => "Internal Server Error",
            Self::Unavailable => "Service Unavailable",
            Self::Timeout => "Gateway Timeout",
        }
    }

    /// The HTTP status sent with this type.
    pub const fn status(self) -> u16 {
        match self {
            Self::BadRequest => 400,
            Self::Unauthorized => 401,
            Self::Forbidden => 403,
            Self::NotFound => 404,
            Self::MethodNotAllowed => 405,
            Self::RequestTimeout => 408,
            Self::Conflict => 409,
            Self::PreconditionFailed => 412,
            Self::PayloadTooLarge => 413,
            Self::UriTooLong => 414,
            Self::UnsupportedMediaType => 415,
            Self::Validation => 422,
            Self::RateLimited => 429,
            Self::HeadersTooLarge => 431,
            Self::Internal => 500,
            Self::Unavailable => 503,
            Self::Timeout => 504,
        }
    }

    /// The full `type` URI.
    pub fn uri(self) -> String {
        format!("{TYPE_BASE}{}", self.slug())
    }

    /// The type a `type` URI names, if it is one of ours.
    pub fn from_uri(uri: &str) -> Option<Self> {
        let slug = uri.strip_prefix(TYPE_BASE)?;
        Self::ALL.into_iter().find(|t| t.slug() == slug)
    }
}

/// A set of the HTTP methods a resource may answer, for the `Allow` header of a 405.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Methods(u8);

impl Methods {
    /// No method: a problem that is not a 405.
    pub const NONE: Methods = Methods(0);
    /// In the order the `Allow` header lists them.
    const NAMES: [&'static str; 5] = ["GET", "POST", "PUT", "PATCH", "DELETE"];

    /// The set of the one method `name` (`"GET"`), if it is one of [`Self::NAMES`].
    pub fn named(name: &str) -> Option<Methods> {
        let index = Self::NAMES.iter().position(|n| *n == name)?;
        Some(Methods(1 << index))
    }

    /// Both sets.
    pub fn union(self, other: Methods) -> Methods {
        Methods(self.0 | other.0)
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The `Allow` header value: `GET, POST`.
    pub fn header(self) -> String {
        Self::NAMES
            .iter()
            .enumerate()
            .filter(|(i, _)| self.0 & (1 << i) != 0)
            .map(|(_, name)| *name)
            .collect::<Vec<_>>()
            .join(", ")
    }
}

impl Problem {
    /// A problem of `kind`, without detail.
    pub fn of(kind: ProblemType) -> Self {
        Self {
            type_: kind.uri(),
            title: kind.title().to_owned(),
            status: kind.status(),
            detail: None,
            errors: Vec::new(),
            retry_after: None,
            allow: Methods::NONE,
        }
    }

    /// Adds an explanation of this occurrence. It is sent to the client as is.
    pub fn with_detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = Some(detail.into());
        self
    }

    /// 400: the request cannot be read at all (malformed JSON, bad query string).
    pub fn bad_request(detail: impl Into<String>) -> Self {
        Self::of(ProblemType::BadRequest).with_detail(detail)
    }

    /// 401: the bearer token is missing, invalid or expired. Send
    /// [`WWW_AUTHENTICATE`] with it.
    pub fn unauthorized() -> Self {
        Self::of(ProblemType::Unauthorized)
    }

    /// 403: authenticated, but the role may not do this.
    pub fn forbidden() -> Self {
        Self::of(ProblemType::Forbidden)
    }

    /// 404: no such resource, or it belongs to another tenant (the two must look
    /// alike so that tenants cannot probe each other).
    pub fn not_found() -> Self {
        Self::of(ProblemType::NotFound)
    }

    /// 409: the request conflicts with the current state, such as a duplicate id.
    pub fn conflict(detail: impl Into<String>) -> Self {
        Self::of(ProblemType::Conflict).with_detail(detail)
    }

    /// 412: `If-Match` named another version than the current one.
    pub fn precondition_failed(detail: impl Into<String>) -> Self {
        Self::of(ProblemType::PreconditionFailed).with_detail(detail)
    }

    /// 413: the body is larger than `limit_bytes`.
    pub fn payload_too_large(limit_bytes: usize) -> Self {
        Self::of(ProblemType::PayloadTooLarge).with_detail(format!(
            "the request body must be at most {limit_bytes} bytes"
        ))
    }

    /// 415: the body is not of the `expected` media type.
    pub fn unsupported_media_type(expected: &str) -> Self {
        Self::of(ProblemType::UnsupportedMediaType)
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
            ..Self::of(ProblemType::Validation).with_detail(detail)
        }
    }

    /// 429: a rate limit was hit; the client may retry after `retry_after` seconds.
    pub fn too_many_requests(retry_after: u32) -> Self {
        Self {
            retry_after: Some(retry_after),
            ..Self::of(ProblemType::RateLimited)
        }
    }

    /// 503: storage is unreachable; the client may retry after `retry_after` seconds.
    pub fn unavailable(retry_after: u32) -> Self {
        Self {
            retry_after: Some(retry_after),
            ..Self::of(ProblemType::Unavailable)
        }
    }

    /// 500 without detail. Log the cause (without secrets) before returning it; the
    /// client learns nothing but that it was our fault.
    pub fn internal() -> Self {
        Self::of(ProblemType::Internal)
    }

    /// 405: the resource exists, but answers only `allow` (send them as `Allow`).
    pub fn method_not_allowed(allow: Methods) -> Self {
        Self {
            allow,
            ..Self::of(ProblemType::MethodNotAllowed)
                .with_detail(format!("this resource answers {}", allow.header()))
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
            let kind = ProblemType::from_uri(&problem.type_).unwrap();
            assert_eq!(problem.title, kind.title(), "{slug}");
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
    fn each_type_has_one_slug_title_and_status() {
        let mut slugs = std::collections::HashSet::new();
        let mut titles = std::collections::HashSet::new();
        for kind in ProblemType::ALL {
            assert!(slugs.insert(kind.slug()), "{kind:?}: slug used twice");
            assert!(titles.insert(kind.title()), "{kind:?}: title used twice");
            assert_eq!(ProblemType::from_uri(&kind.uri()), Some(kind));
            let problem = Problem::of(kind);
            assert_eq!(problem.status, kind.status());
            assert_eq!(problem.title, kind.title());
        }
        assert_eq!(
            ProblemType::from_uri("https://example.com/problems/not-found"),
            None
        );
        assert_eq!(
            ProblemType::from_uri("https://toaster.dev/problems/nonsense"),
            None
        );
    }

    #[test]
    fn method_not_allowed_names_the_allowed_methods_outside_the_body() {
        let allow = Methods::named("PUT")
            .unwrap()
            .union(Methods::named("GET").unwrap());
        let problem = Problem::method_not_allowed(allow);
        assert_eq!(problem.status, 405);
        assert_eq!(problem.allow.header(), "GET, PUT");
        assert_eq!(Methods::named("HEAD"), None);
        assert!(Problem::not_found().allow.is_empty());
        // Small enough that returning it in a Result stays cheap (clippy's limit).
        assert!(std::mem::size_of::<Problem>() < 128);
        assert_eq!(
            problem.detail.as_deref(),
            Some("this resource answers GET, PUT")
        );
        assert!(!problem.to_json().contains("allow\""));
        assert_eq!(Problem::internal().status, 500);
        assert_eq!(Problem::internal().title, "Internal Server Error");
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
