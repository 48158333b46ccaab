//! The component's edge: one request read, one response written, with as few calls
//! into the host as the interface allows.
//!
//! ```ignore
//! #[http_component]
//! async fn handle(req: IncomingRequest, out: ResponseOutparam) {
//!     serve::serve(req, out, |req| respond::outcome(route(req))).await
//! }
//! ```
//!
//! Every call across the component boundary costs the host about a microsecond, and a
//! device request is a few dozen microseconds in all, so this does what the SDK's
//! `Request`/`Response` conversions do with fewer of them:
//!
//! - the head with three calls: method, path-with-query (handlers route on the path and
//!   read the query; nothing reads the scheme or authority, which `spin-full-url`
//!   carries), and the header list;
//! - the body only when the request may have one (`declares_body`): a GET is never
//!   read for a body it does not have;
//! - the response in one piece: one header list, the status, and the body in blocking
//!   writes of at most 4 KiB (the interface's limit for one write), instead of the
//!   SDK's asynchronous sink polling the stream.

use spin_sdk::http::{
    Fields, IncomingRequest, Method, OutgoingBody, OutgoingResponse, Request, Response,
    ResponseOutparam,
};
use toaster_core::problem::Problem;

use crate::respond;

/// The most bytes one `blocking-write-and-flush` may take.
const MAX_WRITE: usize = 4096;

/// Reads `req`, answers it with `route`, and writes the answer to `out`.
pub async fn serve(
    req: IncomingRequest,
    out: ResponseOutparam,
    route: impl FnOnce(&Request) -> Response,
) {
    let response = match read(req).await {
        Ok(request) => route(&request),
        Err(problem) => respond::problem(&problem),
    };
    write(out, &response);
}

/// The whole request: its head, and its body when the head declares one.
pub async fn read(req: IncomingRequest) -> Result<Request, Problem> {
    let method = req.method();
    let uri = req.path_with_query().unwrap_or_else(|| "/".to_owned());
    let headers = req.headers().entries();
    let has_body = declares_body(&method, &headers);
    let body = if has_body {
        req.into_body().await.map_err(|e| {
            eprintln!(
                "serve: reading the request body failed: {}",
                e.to_debug_string()
            );
            Problem::bad_request("the request body could not be read")
        })?
    } else {
        Vec::new()
    };
    Ok(Request::builder()
        .method(method)
        .uri(uri)
        .headers(headers)
        .body(body)
        .build())
}

/// Whether a request with this head may carry a body. HTTP/1.1 declares one with
/// `content-length` or `transfer-encoding`; HTTP/2 (which `spin up` may serve) need
/// not declare it at all, so a method that usually has a body is read unless it says
/// `content-length: 0`. Only a GET, HEAD or OPTIONS without either header is taken
/// as bodiless: no handler reads a body there.
fn declares_body(method: &Method, headers: &[(String, Vec<u8>)]) -> bool {
    let header = |wanted: &str| {
        headers
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case(wanted))
            .map(|(_, value)| value.as_slice())
    };
    match header("content-length") {
        Some(length) => length.trim_ascii() != b"0",
        None => {
            header("transfer-encoding").is_some()
                || !matches!(method, Method::Get | Method::Head | Method::Options)
        }
    }
}

/// Writes `response` to `out`. Past the point where the response is set, a failure
/// can only mean the client has gone: it is logged and the rest is dropped.
pub fn write(out: ResponseOutparam, response: &Response) {
    match head(response) {
        Ok(head) => send(out, head, response.body()),
        Err(e) => {
            // Our own header names, values and statuses: only a bug gets here.
            eprintln!("serve: {e}");
            let internal = respond::problem(&respond::internal());
            match head(&internal) {
                Ok(head) => send(out, head, internal.body()),
                Err(_) => send(out, OutgoingResponse::new(Fields::new()), &[]),
            }
        }
    }
}

/// Sets `outgoing` as the answer and streams `body` after it.
fn send(out: ResponseOutparam, outgoing: OutgoingResponse, body: &[u8]) {
    let Ok(outgoing_body) = outgoing.body() else {
        eprintln!("serve: the response body was already taken");
        out.set(outgoing);
        return;
    };
    out.set(outgoing);
    if !body.is_empty() {
        let Ok(stream) = outgoing_body.write() else {
            eprintln!("serve: the response body stream was already taken");
            return;
        };
        for chunk in body.chunks(MAX_WRITE) {
            if let Err(e) = stream.blocking_write_and_flush(chunk) {
                eprintln!(
                    "serve: the response was not sent whole: {}",
                    stream_error(&e)
                );
                return;
            }
        }
    }
    if let Err(e) = OutgoingBody::finish(outgoing_body, None) {
        // wasi:http's error-code has no message beyond its name.
        eprintln!("serve: cannot finish the response: {e:?}");
    }
}

/// A write's failure, in words: the client went away, or the host's own message.
fn stream_error(error: &wasi::io::streams::StreamError) -> String {
    use wasi::io::streams::StreamError;
    match error {
        StreamError::Closed => "the client went away".to_owned(),
        StreamError::LastOperationFailed(e) => e.to_debug_string(),
    }
}

/// The status and headers of `response`, as the interface's response.
fn head(response: &Response) -> Result<OutgoingResponse, String> {
    let headers: Vec<(String, Vec<u8>)> = response
        .headers()
        .map(|(name, value)| (name.to_owned(), value.as_bytes().to_vec()))
        .collect();
    let fields =
        Fields::from_list(&headers).map_err(|e| format!("a response header was refused: {e:?}"))?;
    let outgoing = OutgoingResponse::new(fields);
    outgoing
        .set_status_code(*response.status())
        .map_err(|()| format!("status {} was refused", response.status()))?;
    Ok(outgoing)
}
