//! The smallest useful component: every request gets `200 hello\n` as `text/plain`.
//!
//! The host's benchmark measures per-request overhead with it, so it does as little as
//! spin-sdk allows: it takes the raw `IncomingRequest` (no body read, no header map) and
//! writes the response body with one blocking write instead of the SDK's async sink.

use spin_sdk::http::{Fields, IncomingRequest, OutgoingBody, OutgoingResponse, ResponseOutparam};
use spin_sdk::http_component;

const BODY: &[u8] = b"hello\n";

#[http_component]
fn handle(_req: IncomingRequest, out: ResponseOutparam) {
    let headers = Fields::new();
    // Cannot fail for a valid, non-forbidden header; if it somehow did, the body still goes out.
    let _ = headers.set("content-type", &[b"text/plain".to_vec()]);
    let response = OutgoingResponse::new(headers);
    let Ok(body) = response.body() else {
        out.set(response);
        return;
    };
    out.set(response);
    if let Ok(stream) = body.write() {
        let _ = stream.blocking_write_and_flush(BODY);
    }
    let _ = OutgoingBody::finish(body, None);
}
