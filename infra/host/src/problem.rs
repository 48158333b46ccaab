//! The host's own responses (no route, body too large, timeout, a failing
//! component), as `application/problem+json` like everything else in Toaster.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;

pub const CONTENT_TYPE: &str = "application/problem+json";

pub fn response(
    status: u16,
    kind: &str,
    title: &str,
    detail: &str,
) -> http::Response<HyperOutgoingBody> {
    let body = serde_json::json!({
        "type": format!("https://toaster.dev/problems/{kind}"),
        "title": title,
        "status": status,
        "detail": detail,
    })
    .to_string();
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
    response(
        404,
        "not-found",
        "Not Found",
        &format!("no route matches {shown}"),
    )
}

pub fn too_large(limit: usize) -> http::Response<HyperOutgoingBody> {
    response(
        413,
        "payload-too-large",
        "Payload Too Large",
        &format!("request bodies are limited to {limit} bytes"),
    )
}

pub fn timeout() -> http::Response<HyperOutgoingBody> {
    response(
        504,
        "timeout",
        "Gateway Timeout",
        "the component did not answer in time",
    )
}

pub fn internal() -> http::Response<HyperOutgoingBody> {
    response(
        500,
        "internal",
        "Internal Server Error",
        "the component failed; see the server log",
    )
}

pub fn unavailable(detail: &str) -> http::Response<HyperOutgoingBody> {
    let mut r = response(503, "unavailable", "Service Unavailable", detail);
    r.headers_mut().insert(
        http::header::RETRY_AFTER,
        http::HeaderValue::from_static("5"),
    );
    r
}

pub fn bad_request(detail: &str) -> http::Response<HyperOutgoingBody> {
    response(400, "bad-request", "Bad Request", detail)
}

pub fn request_timeout() -> http::Response<HyperOutgoingBody> {
    response(
        408,
        "request-timeout",
        "Request Timeout",
        "the request body did not arrive in time",
    )
}
