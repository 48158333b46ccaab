//! The host's own responses (no route, body too large, timeout, a failing
//! component), as `application/problem+json` like everything else in Toaster.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use toaster_core::problem::ProblemType;
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;

pub use toaster_core::problem::CONTENT_TYPE;

/// The problem+json document: its type, title and status from the one table of
/// problem types the components use too ([`ProblemType`]).
fn body(kind: ProblemType, detail: &str) -> String {
    serde_json::json!({
        "type": kind.uri(),
        "title": kind.title(),
        "status": kind.status(),
        "detail": detail,
    })
    .to_string()
}

pub fn response(kind: ProblemType, detail: &str) -> http::Response<HyperOutgoingBody> {
    let status = kind.status();
    let body = body(kind, detail);
    let mut resp = http::Response::new(
        Full::new(Bytes::from(body))
            .map_err(|never| match never {})
            .boxed_unsync(),
    );
    *resp.status_mut() =
        http::StatusCode::from_u16(status).unwrap_or(http::StatusCode::INTERNAL_SERVER_ERROR);
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static(CONTENT_TYPE),
    );
    resp
}

pub fn not_found(path: &str) -> http::Response<HyperOutgoingBody> {
    let shown: String = path.chars().take(200).collect();
    response(ProblemType::NotFound, &format!("no route matches {shown}"))
}

pub fn too_large(limit: usize) -> http::Response<HyperOutgoingBody> {
    response(
        ProblemType::PayloadTooLarge,
        &format!("request bodies are limited to {limit} bytes"),
    )
}

pub fn timeout() -> http::Response<HyperOutgoingBody> {
    response(ProblemType::Timeout, "the component did not answer in time")
}

pub fn internal() -> http::Response<HyperOutgoingBody> {
    response(
        ProblemType::Internal,
        "the component failed; see the server log",
    )
}

pub fn unavailable(detail: &str) -> http::Response<HyperOutgoingBody> {
    let mut r = response(ProblemType::Unavailable, detail);
    r.headers_mut().insert(
        http::header::RETRY_AFTER,
        http::HeaderValue::from_static("5"),
    );
    r
}

pub fn bad_request(detail: &str) -> http::Response<HyperOutgoingBody> {
    response(ProblemType::BadRequest, detail)
}

pub fn request_timeout() -> http::Response<HyperOutgoingBody> {
    response(
        ProblemType::RequestTimeout,
        "the request body did not arrive in time",
    )
}

/// 503 when every request slot stayed busy for the whole queue wait: the server is
/// past saturation and sheds the request instead of queueing it without bound.
pub fn overloaded(retry_after_secs: u32) -> http::Response<HyperOutgoingBody> {
    let mut r = response(
        ProblemType::Unavailable,
        "the server is at capacity; retry later",
    );
    r.headers_mut().insert(
        http::header::RETRY_AFTER,
        http::HeaderValue::from(retry_after_secs),
    );
    r
}

/// 405 for a method the host's own endpoint does not answer, with the `Allow` header
/// RFC 9110 requires.
pub fn method_not_allowed(allow: &'static str) -> http::Response<HyperOutgoingBody> {
    let mut r = response(
        ProblemType::MethodNotAllowed,
        &format!("this endpoint answers {allow}"),
    );
    r.headers_mut()
        .insert(http::header::ALLOW, http::HeaderValue::from_static(allow));
    r
}

/// A whole HTTP/1.1 response, problem+json, that closes the connection: for answers
/// written to the socket without hyper (a refused connection, a request hyper could
/// not parse).
pub fn raw(kind: ProblemType, detail: &str, retry_after: Option<u32>) -> Vec<u8> {
    let status = kind.status();
    let body = body(kind, detail);
    let reason = http::StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("Error");
    let retry = retry_after
        .map(|s| format!("retry-after: {s}\r\n"))
        .unwrap_or_default();
    format!(
        "HTTP/1.1 {status} {reason}\r\ncontent-type: {CONTENT_TYPE}\r\ncontent-length: {}\r\n{retry}connection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}
