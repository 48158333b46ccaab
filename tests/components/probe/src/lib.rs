//! `probe`: a test-only component that the host's integration tests drive to observe the
//! host from inside a guest. It routes on the request's own path (not spin-sdk's `Router`),
//! so it sees exactly the path the client sent.
//!
//! | Request | Response |
//! |---|---|
//! | `GET /probe/hello` | 200 `hello` |
//! | any method, `/probe/headers`, or any path not under `/probe/` | 200 JSON [request echo](#request-echo) |
//! | `GET /probe/kv/{label}/{key}` | 200 stored bytes, 404 if missing |
//! | `PUT /probe/kv/{label}/{key}` | stores the body, 204 |
//! | `DELETE /probe/kv/{label}/{key}` | 204 |
//! | `GET /probe/kv/{label}` | 200 JSON sorted list of keys |
//! | `GET /probe/kv-exists/{label}/{key}` | 200 JSON `true` / `false` |
//! | `GET /probe/var/{name}` | 200 plain value; 404 JSON error |
//! | `POST /probe/pg` | 200 JSON, see [`pg`] |
//! | `POST /probe/http` `{"url": ..., "method": "GET", "body": optional string}` | 200 `{"status": n}` or `{"error": "<Debug of the SendError>"}` |
//! | `POST /probe/echo` | 200, body = request body, `x-body-len` header |
//! | `POST /probe/log` | writes the body to stderr in small pieces and `probe: to stdout` to stdout; 204 |
//! | `GET /probe/trap` | panics (the guest traps) |
//! | `GET /probe/loop` | never returns (for timeout tests) |
//! | anything else under `/probe/` | 404 |
//!
//! Path segments `{label}`, `{key}` and `{name}` are percent-decoded; `{key}` is the whole
//! rest of the path, so it may contain `/`.
//!
//! # Request echo
//!
//! `{"path": "/raw/path", "query": "a=1" | null, "method": "GET", "headers": {...},
//! "component": <variable component_name> | null}`, where `headers` holds every request header
//! whose name starts with `spin-` (names lower-case). Unmatched paths fall back to it so routing
//! tests can tell which component answered.
//!
//! # Errors
//!
//! Key-value errors: 409 `{"error": "no-such-store" | "access-denied" | "store-table-full" |
//! "other", "message": ...}`. Variable errors: 404 `{"error": "undefined" | "invalid-name" |
//! "provider" | "other", "message": ...}`. A malformed probe request (bad JSON): 400
//! `{"error": "bad-request", "message": ...}`.

pub mod pg;

use std::collections::BTreeMap;

use serde_json::{Value, json};
use spin_sdk::http::{Method, Request, Response};
use spin_sdk::http_component;
use spin_sdk::key_value::{self, Store};
use spin_sdk::variables;

#[http_component]
async fn handle(req: Request) -> Response {
    let target = req.path_and_query().unwrap_or("").to_owned();
    let (path, query) = match target.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (target.as_str(), None),
    };
    let Some(rest) = path.strip_prefix("/probe/") else {
        return echo_request(&req, path, query);
    };
    let method = req.method();
    let (head, tail) = match rest.split_once('/') {
        Some((head, tail)) => (head, Some(tail)),
        None => (rest, None),
    };
    match (method, head, tail) {
        (_, "headers", None) => echo_request(&req, path, query),
        (Method::Get, "hello", None) => text(200, "hello"),
        (_, "kv", Some(tail)) => match tail.split_once('/') {
            Some((label, key)) if !key.is_empty() => {
                kv_entry(method, &decode(label), &decode(key), req.body())
            }
            None if *method == Method::Get => kv_keys(&decode(tail)),
            _ => not_found(),
        },
        (Method::Get, "kv-exists", Some(tail)) => match tail.split_once('/') {
            Some((label, key)) => kv_exists(&decode(label), &decode(key)),
            None => not_found(),
        },
        (Method::Get, "var", Some(name)) => variable(&decode(name)),
        (Method::Post, "pg", None) => match pg::run(req.body()) {
            Ok(outcome) => json_response(200, &outcome),
            Err(message) => bad_request(&message),
        },
        (Method::Post, "http", None) => outbound(req.body()).await,
        (Method::Get, "trap", None) => panic!("probe: deliberate trap"),
        (Method::Get, "loop", None) => spin_forever(),
        (Method::Post, "echo", None) => echo_body(&req),
        (Method::Post, "log", None) => log(req.body()),
        _ => not_found(),
    }
}

fn echo_request(req: &Request, path: &str, query: Option<&str>) -> Response {
    let headers: BTreeMap<&str, String> = req
        .headers()
        .filter(|(name, _)| name.starts_with("spin-"))
        .map(|(name, value)| (name, String::from_utf8_lossy(value.as_bytes()).into_owned()))
        .collect();
    json_response(
        200,
        &json!({
            "path": path,
            "query": query,
            "method": req.method().to_string(),
            "headers": headers,
            "component": variables::get("component_name").ok(),
        }),
    )
}

fn kv_entry(method: &Method, label: &str, key: &str, body: &[u8]) -> Response {
    let outcome = match method {
        Method::Get => Store::open(label)
            .and_then(|store| store.get(key))
            .map(stored_value),
        Method::Put => Store::open(label)
            .and_then(|store| store.set(key, body))
            .map(|()| empty(204)),
        Method::Delete => Store::open(label)
            .and_then(|store| store.delete(key))
            .map(|()| empty(204)),
        _ => return not_found(),
    };
    outcome.unwrap_or_else(kv_error)
}

fn stored_value(value: Option<Vec<u8>>) -> Response {
    match value {
        Some(bytes) => Response::builder()
            .status(200)
            .header("content-type", "application/octet-stream")
            .body(bytes)
            .build(),
        None => empty(404),
    }
}

fn kv_keys(label: &str) -> Response {
    match Store::open(label).and_then(|store| store.get_keys()) {
        Ok(mut keys) => {
            keys.sort();
            json_response(200, &json!(keys))
        }
        Err(e) => kv_error(e),
    }
}

fn kv_exists(label: &str, key: &str) -> Response {
    match Store::open(label).and_then(|store| store.exists(key)) {
        Ok(exists) => json_response(200, &json!(exists)),
        Err(e) => kv_error(e),
    }
}

fn kv_error(error: key_value::Error) -> Response {
    let (kind, message) = match error {
        key_value::Error::NoSuchStore => ("no-such-store", "no such store".to_owned()),
        key_value::Error::AccessDenied => ("access-denied", "access denied".to_owned()),
        key_value::Error::StoreTableFull => ("store-table-full", "store table full".to_owned()),
        key_value::Error::Other(message) => ("other", message),
    };
    json_response(409, &json!({"error": kind, "message": message}))
}

fn variable(name: &str) -> Response {
    match variables::get(name) {
        Ok(value) => text(200, value),
        Err(error) => {
            let (kind, message) = match error {
                variables::Error::Undefined(m) => ("undefined", m),
                variables::Error::InvalidName(m) => ("invalid-name", m),
                variables::Error::Provider(m) => ("provider", m),
                variables::Error::Other(m) => ("other", m),
            };
            json_response(404, &json!({"error": kind, "message": message}))
        }
    }
}

async fn outbound(body: &[u8]) -> Response {
    let spec: Value = match serde_json::from_slice(body) {
        Ok(spec) => spec,
        Err(e) => return bad_request(&format!("body is not JSON: {e}")),
    };
    let Some(url) = spec.get("url").and_then(Value::as_str) else {
        return bad_request("\"url\" must be a string");
    };
    let method = match spec.get("method") {
        None | Some(Value::Null) => Method::Get,
        Some(Value::String(m)) => parse_method(m),
        Some(_) => return bad_request("\"method\" must be a string"),
    };
    let body = spec
        .get("body")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .as_bytes()
        .to_vec();
    let request = Request::builder()
        .method(method)
        .uri(url)
        .body(body)
        .build();
    let outcome = match spin_sdk::http::send::<_, Response>(request).await {
        Ok(response) => json!({"status": *response.status()}),
        Err(e) => json!({"error": format!("{e:?}")}),
    };
    json_response(200, &outcome)
}

fn parse_method(method: &str) -> Method {
    match method.to_ascii_uppercase().as_str() {
        "GET" => Method::Get,
        "HEAD" => Method::Head,
        "POST" => Method::Post,
        "PUT" => Method::Put,
        "DELETE" => Method::Delete,
        "CONNECT" => Method::Connect,
        "OPTIONS" => Method::Options,
        "TRACE" => Method::Trace,
        "PATCH" => Method::Patch,
        _ => Method::Other(method.to_owned()),
    }
}

/// Burns CPU until the host interrupts the instance (epoch deadline or fuel).
fn spin_forever() -> ! {
    let mut n: u64 = 0;
    loop {
        n = std::hint::black_box(n.wrapping_add(1));
    }
}

fn echo_body(req: &Request) -> Response {
    let content_type = req
        .header("content-type")
        .and_then(|v| v.as_str())
        .unwrap_or("application/octet-stream");
    Response::builder()
        .status(200)
        .header("content-type", content_type)
        .header("x-body-len", req.body().len().to_string())
        .body(req.body().to_vec())
        .build()
}

/// Percent-decodes a path segment; invalid escapes stay as they are, invalid UTF-8 is replaced.
fn decode(segment: &str) -> String {
    let bytes = segment.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = match (bytes[i], bytes.get(i + 1..i + 3)) {
            (b'%', Some(&[hi, lo])) => hex(hi).zip(hex(lo)).map(|(hi, lo)| hi << 4 | lo),
            _ => None,
        };
        match escaped {
            Some(byte) => {
                out.push(byte);
                i += 3;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex(digit: u8) -> Option<u8> {
    char::from(digit)
        .to_digit(16)
        .and_then(|d| u8::try_from(d).ok())
}

fn json_response(status: u16, body: &Value) -> Response {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(body.to_string())
        .build()
}

/// Writes `body` to stderr a few bytes at a time (as a formatted line may arrive), and
/// one line to stdout.
fn log(body: &[u8]) -> Response {
    use std::io::Write;
    let mut stderr = std::io::stderr();
    for piece in body.chunks(5) {
        let _ = stderr.write_all(piece);
        let _ = stderr.flush();
    }
    println!("probe: to stdout");
    empty(204)
}

fn text(status: u16, body: impl Into<String>) -> Response {
    Response::builder()
        .status(status)
        .header("content-type", "text/plain")
        .body(body.into())
        .build()
}

fn empty(status: u16) -> Response {
    Response::builder().status(status).build()
}

fn not_found() -> Response {
    empty(404)
}

fn bad_request(message: &str) -> Response {
    json_response(400, &json!({"error": "bad-request", "message": message}))
}

#[cfg(test)]
mod tests {
    use super::decode;

    #[test]
    fn decode_handles_escapes_and_leaves_bad_ones() {
        assert_eq!(decode("a%2Fb%20c"), "a/b c");
        assert_eq!(decode("%e2%9c%93"), "\u{2713}");
        assert_eq!(decode("100%"), "100%");
        assert_eq!(decode("%zz%4"), "%zz%4");
    }
}
