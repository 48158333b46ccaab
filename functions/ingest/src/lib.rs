//! The `ingest` component: Batched telemetry ingest.
//! No routes yet: every request is answered with a 404 problem.

use spin_sdk::http::{Request, Response};
use spin_sdk::http_component;

#[http_component]
fn handle(req: Request) -> Response {
    toaster_platform::respond::no_route(req.method(), req.path())
}
