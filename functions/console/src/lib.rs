//! The `console` component: the web console (web/, built with Vite) served from the
//! files embedded at build time. Routes (spin.toml): `/` redirects to `/console/`;
//! `/console/...` answers
//!
//! | path | answer | Cache-Control |
//! |------|--------|---------------|
//! | `/console/assets/<name>-<hash>.<ext>` | the file, or 404 | a year, immutable |
//! | any other `/console/...` | `index.html` (the application routes on the path) | `no-cache` (revalidated: 304) |
//!
//! with an ETag (304 on `If-None-Match`), the gzip copy when the client accepts it
//! (`Vary: Accept-Encoding`), and a strict Content-Security-Policy. GET and HEAD
//! only (405 otherwise). The console talks to the public API only, with the token
//! it holds; this component reads no variable, store or database.

// Functions stay under 100 lines (clippy.toml); tests may run longer.
#![cfg_attr(not(test), warn(clippy::too_many_lines))]

mod files;

use spin_sdk::http::{IncomingRequest, Method, Request, Response, ResponseOutparam};
use spin_sdk::http_component;
use toaster_core::problem::{Problem, ProblemType};
use toaster_platform::{respond, serve};

use files::{Answer, Asset};

/// web/dist, embedded by build.rs.
static ASSETS: &[Asset] = include!(concat!(env!("OUT_DIR"), "/assets.rs"));

#[http_component]
async fn handle(req: IncomingRequest, out: ResponseOutparam) {
    serve::serve(req, out, route).await
}

fn route(req: &Request) -> Response {
    let head = match req.method() {
        Method::Get => false,
        Method::Head => true,
        _ => {
            let problem = Problem::of(ProblemType::MethodNotAllowed)
                .with_detail("the console answers GET and HEAD");
            let mut response = respond::problem(&problem);
            response.set_header("allow", "GET, HEAD");
            return response;
        }
    };
    let header = |name: &str| req.header(name).and_then(|v| v.as_str());
    let path = req.path();
    let answer = files::answer(
        ASSETS,
        path,
        header("accept-encoding"),
        header("if-none-match"),
    );
    match answer {
        Answer::File {
            asset,
            gzip,
            not_modified,
            cache_control,
        } => file(asset, gzip, not_modified, cache_control, head),
        Answer::Redirect(to) => Response::builder()
            .status(302)
            .header("location", to)
            .header("cache-control", "no-cache")
            .body(Vec::new())
            .build(),
        Answer::NotFound => respond::no_route(req.method(), path),
        Answer::NotBuilt => respond::problem(&Problem::unavailable(60).with_detail(
            "the console was built without its web assets: run `npm ci && npm run build` \
                 in functions/console/web, then rebuild the component",
        )),
    }
}

fn file(
    asset: &Asset,
    gzip: bool,
    not_modified: bool,
    cache_control: &str,
    head: bool,
) -> Response {
    let mut builder = Response::builder();
    builder
        .status(if not_modified { 304 } else { 200 })
        .header("etag", asset.etag)
        .header("cache-control", cache_control)
        .header("vary", "accept-encoding")
        .header("content-security-policy", files::CSP)
        .header("x-content-type-options", "nosniff")
        .header("referrer-policy", "no-referrer")
        .header("cross-origin-opener-policy", "same-origin")
        .header("x-frame-options", "DENY");
    if not_modified {
        return builder.body(Vec::new()).build();
    }
    builder.header("content-type", asset.content_type);
    let body = match (gzip, asset.gzip) {
        (true, Some(compressed)) => {
            builder.header("content-encoding", "gzip");
            compressed
        }
        _ => asset.body,
    };
    if head {
        // No content-length either: the runtime checks it against the bytes written.
        return builder.body(Vec::new()).build();
    }
    builder.header("content-length", body.len().to_string());
    builder.body(body.to_vec()).build()
}
