//! HTTP responses: `application/problem+json` (RFC 9457) errors and JSON bodies.
//!
//! Every builder here is infallible: a body that cannot be serialised becomes a fixed
//! 500 problem instead of a panic, so handlers never need `unwrap`.

use serde::Serialize;
use spin_sdk::http::{Method, Response};

/// Prefix of every problem `type` URI; the suffix names the problem (`not-found`, ...).
pub const PROBLEM_TYPE_BASE: &str = "https://toaster.dev/problems/";
/// Media type of every error body.
pub const PROBLEM_JSON: &str = "application/problem+json";
/// Media type of every success body.
pub const JSON: &str = "application/json";

/// Sent when a body cannot be serialised. Written out by hand so that building it cannot fail.
const SERIALISATION_FAILED: &str = r#"{"type":"https://toaster.dev/problems/internal","title":"Internal Server Error","status":500,"detail":"the response could not be serialised"}"#;

#[derive(Serialize)]
struct Problem<'a> {
    #[serde(rename = "type")]
    kind: String,
    title: &'a str,
    status: u16,
    detail: &'a str,
}

/// A problem+json response: `type` is [`PROBLEM_TYPE_BASE`] followed by `type_suffix`.
pub fn problem(status: u16, type_suffix: &str, title: &str, detail: &str) -> Response {
    let body = Problem {
        kind: format!("{PROBLEM_TYPE_BASE}{type_suffix}"),
        title,
        status,
        detail,
    };
    match serde_json::to_vec(&body) {
        Ok(bytes) => with_body(status, PROBLEM_JSON, bytes),
        Err(_) => serialisation_failed(),
    }
}

/// A JSON response with `body` serialised as it is.
pub fn json<T: Serialize + ?Sized>(status: u16, body: &T) -> Response {
    match serde_json::to_vec(body) {
        Ok(bytes) => with_body(status, JSON, bytes),
        Err(_) => serialisation_failed(),
    }
}

/// 404 for a request that no route of the component matches.
pub fn no_route(method: &Method, path: &str) -> Response {
    problem(
        404,
        "not-found",
        "Not Found",
        &format!("no route for {method} {path}"),
    )
}

fn with_body(status: u16, content_type: &str, body: Vec<u8>) -> Response {
    Response::builder()
        .status(status)
        .header("content-type", content_type)
        .body(body)
        .build()
}

fn serialisation_failed() -> Response {
    with_body(500, PROBLEM_JSON, SERIALISATION_FAILED.as_bytes().to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn body_json(response: &Response) -> Value {
        serde_json::from_slice(response.body()).unwrap_or(Value::Null)
    }

    fn content_type(response: &Response) -> Option<&str> {
        response.header("content-type").and_then(|v| v.as_str())
    }

    #[test]
    fn problem_has_rfc9457_members_and_media_type() {
        let response = problem(409, "conflict", "Conflict", "device exists");
        assert_eq!(*response.status(), 409);
        assert_eq!(content_type(&response), Some(PROBLEM_JSON));
        assert_eq!(
            body_json(&response),
            json!({
                "type": "https://toaster.dev/problems/conflict",
                "title": "Conflict",
                "status": 409,
                "detail": "device exists",
            })
        );
    }

    #[test]
    fn no_route_names_method_and_path() {
        let response = no_route(&Method::Delete, "/v1/ota/x");
        assert_eq!(*response.status(), 404);
        assert_eq!(
            body_json(&response)["detail"],
            json!("no route for DELETE /v1/ota/x")
        );
    }

    #[test]
    fn unserialisable_body_becomes_500_problem() {
        // Maps with non-string keys cannot be JSON objects.
        let body: std::collections::BTreeMap<(u8, u8), u8> = [((1, 2), 3)].into();
        let response = json(200, &body);
        assert_eq!(*response.status(), 500);
        assert_eq!(content_type(&response), Some(PROBLEM_JSON));
        assert_eq!(body_json(&response)["status"], json!(500));
    }

    #[test]
    fn json_sets_status_and_media_type() {
        let response = json(201, &json!({"id": 7}));
        assert_eq!(*response.status(), 201);
        assert_eq!(content_type(&response), Some(JSON));
        assert_eq!(body_json(&response), json!({"id": 7}));
    }
}
