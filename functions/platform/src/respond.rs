//! HTTP responses: `application/problem+json` (RFC 9457) errors, rendered from
//! `toaster_core::problem::Problem`, and JSON bodies.
//!
//! Every builder here is infallible: a body that cannot be serialised becomes a fixed
//! 500 problem instead of a panic, so handlers never need `unwrap`.
//!
//! A handler returns `Result<Response, Problem>` and the component's entry point ends
//! with [`outcome`]. [`problem`] adds the headers a problem needs: `WWW-Authenticate`
//! on every 401 and `Retry-After` whenever [`Problem::retry_after`] is set (429, 503).

use serde::Serialize;
use spin_sdk::http::{Method, Response};
use toaster_core::problem::{self as core_problem, Problem};

/// Media type of every error body.
pub const PROBLEM_JSON: &str = core_problem::CONTENT_TYPE;
/// Media type of every success body.
pub const JSON: &str = "application/json";

/// Sent when a body cannot be serialised. Written out by hand so that building it cannot fail.
const SERIALISATION_FAILED: &str = r#"{"type":"https://toaster.dev/problems/internal","title":"Internal Server Error","status":500,"detail":"the response could not be serialised"}"#;

/// The response for a problem, with its headers (`WWW-Authenticate`, `Retry-After`,
/// `Allow`).
pub fn problem(problem: &Problem) -> Response {
    let mut builder = Response::builder();
    builder
        .status(problem.status)
        .header("content-type", PROBLEM_JSON);
    if problem.status == 401 {
        builder.header("www-authenticate", core_problem::WWW_AUTHENTICATE);
    }
    if let Some(seconds) = problem.retry_after {
        builder.header("retry-after", seconds.to_string());
    }
    if !problem.allow.is_empty() {
        builder.header("allow", problem.allow.header());
    }
    builder.body(problem.to_json()).build()
}

/// The response of a handler: its own on success, the problem's otherwise.
pub fn outcome(result: Result<Response, Problem>) -> Response {
    result.unwrap_or_else(|p| problem(&p))
}

/// A JSON response with `body` serialised as it is.
pub fn json<T: Serialize + ?Sized>(status: u16, body: &T) -> Response {
    match serde_json::to_vec(body) {
        Ok(bytes) => with_body(status, JSON, bytes),
        Err(_) => serialisation_failed(),
    }
}

/// 200 with one page of a keyset-paginated list: `{"items": [...], "next_cursor": ...}`.
/// The query fetches `limit + 1` rows; the extra one only says that a next page
/// exists, and the next page starts after the key (`cursor`) of the last item shown.
pub fn page<T: Serialize>(
    mut items: Vec<T>,
    limit: u32,
    cursor: impl Fn(&T) -> Option<String>,
) -> Response {
    let more = items.len() > limit as usize;
    items.truncate(limit as usize);
    let next_cursor = if more {
        items.last().and_then(cursor)
    } else {
        None
    };
    json(
        200,
        &serde_json::json!({"items": items, "next_cursor": next_cursor}),
    )
}

/// A response without a body, such as 204.
pub fn empty(status: u16) -> Response {
    Response::builder().status(status).body(Vec::new()).build()
}

/// 500 with a fixed body: [`Problem::internal`]. Log the cause (without secrets)
/// before returning it; the client learns nothing but that it was our fault.
pub fn internal() -> Problem {
    Problem::internal()
}

/// 404 for a request that no route of the component matches. The path is cut to 200
/// characters, so a hostile path does not grow the response.
pub fn no_route(method: &Method, path: &str) -> Response {
    problem(&no_route_problem(method, path))
}

/// The problem behind [`no_route`].
pub fn no_route_problem(method: &Method, path: &str) -> Problem {
    let shown: String = path.chars().take(200).collect();
    Problem::not_found().with_detail(format!("no route for {method} {shown}"))
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
    use toaster_core::problem::Methods;

    fn body_json(response: &Response) -> Value {
        serde_json::from_slice(response.body()).unwrap_or(Value::Null)
    }

    fn header<'a>(response: &'a Response, name: &str) -> Option<&'a str> {
        response.header(name).and_then(|v| v.as_str())
    }

    #[test]
    fn problem_has_rfc9457_members_and_media_type() {
        let response = problem(&Problem::conflict("device exists"));
        assert_eq!(*response.status(), 409);
        assert_eq!(header(&response, "content-type"), Some(PROBLEM_JSON));
        assert_eq!(
            body_json(&response),
            json!({
                "type": "https://toaster.dev/problems/conflict",
                "title": "Conflict",
                "status": 409,
                "detail": "device exists",
            })
        );
        assert_eq!(header(&response, "www-authenticate"), None);
        assert_eq!(header(&response, "retry-after"), None);
    }

    #[test]
    fn unauthorized_carries_www_authenticate() {
        let response = problem(&Problem::unauthorized());
        assert_eq!(*response.status(), 401);
        assert_eq!(
            header(&response, "www-authenticate"),
            Some(core_problem::WWW_AUTHENTICATE)
        );
    }

    #[test]
    fn retry_after_travels_as_a_header_not_in_the_body() {
        for p in [Problem::too_many_requests(17), Problem::unavailable(17)] {
            let response = problem(&p);
            assert_eq!(header(&response, "retry-after"), Some("17"));
            assert_eq!(body_json(&response).get("retry_after"), None);
        }
    }

    #[test]
    fn method_not_allowed_carries_allow() {
        let allow = Methods::named("GET")
            .unwrap()
            .union(Methods::named("PUT").unwrap());
        let response = problem(&Problem::method_not_allowed(allow));
        assert_eq!(*response.status(), 405);
        assert_eq!(header(&response, "allow"), Some("GET, PUT"));
        assert_eq!(body_json(&response)["title"], json!("Method Not Allowed"));
        assert_eq!(body_json(&response).get("allow"), None);
    }

    #[test]
    fn the_fixed_500_body_is_the_tables_internal_problem() {
        let fixed: Problem = serde_json::from_str(SERIALISATION_FAILED).unwrap();
        let internal = Problem::internal();
        assert_eq!(
            (&fixed.type_, &fixed.title, fixed.status),
            (&internal.type_, &internal.title, internal.status)
        );
    }

    #[test]
    fn outcome_renders_either_side() {
        assert_eq!(*outcome(Ok(empty(204))).status(), 204);
        assert_eq!(*outcome(Err(Problem::forbidden())).status(), 403);
    }

    #[test]
    fn no_route_names_method_and_path_and_bounds_it() {
        let response = no_route(&Method::Delete, "/v1/ota/x");
        assert_eq!(*response.status(), 404);
        assert_eq!(
            body_json(&response)["detail"],
            json!("no route for DELETE /v1/ota/x")
        );
        let long = format!("/{}", "a".repeat(5000));
        let detail = no_route_problem(&Method::Get, &long).detail.unwrap();
        assert!(detail.len() < 300);
    }

    #[test]
    fn unserialisable_body_becomes_500_problem() {
        // Maps with non-string keys cannot be JSON objects.
        let body: std::collections::BTreeMap<(u8, u8), u8> = [((1, 2), 3)].into();
        let response = json(200, &body);
        assert_eq!(*response.status(), 500);
        assert_eq!(header(&response, "content-type"), Some(PROBLEM_JSON));
        assert_eq!(body_json(&response)["status"], json!(500));
    }

    #[test]
    fn json_sets_status_and_media_type() {
        let response = json(201, &json!({"id": 7}));
        assert_eq!(*response.status(), 201);
        assert_eq!(header(&response, "content-type"), Some(JSON));
        assert_eq!(body_json(&response), json!({"id": 7}));
    }
}
