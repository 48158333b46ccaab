//! The `ota` component: firmware releases, staged rollouts that stop themselves, and
//! signed update manifests. Routes on the full request path:
//!
//! | route | who | module |
//! |-------|-----|--------|
//! | `POST /v1/ota/firmware`, `GET /v1/ota/firmware` | admin | [`firmware`] |
//! | `GET /v1/ota/firmware/{id}` | admin | [`firmware`] |
//! | `POST /v1/ota/rollouts`, `GET /v1/ota/rollouts` | admin | [`rollouts`] |
//! | `GET /v1/ota/rollouts/{id}` | admin | [`rollouts`] |
//! | `POST /v1/ota/rollouts/{id}/advance\|pause\|resume\|abort` | admin | [`rollouts`] |
//! | `GET /v1/ota/check?version=` | device | [`check`] |
//! | `POST /v1/ota/report` | device | [`report`] |
//! | `GET /v1/ota/signing-key` | anyone | [`check`] |
//!
//! The pure decisions (versions, cohorts, transitions, the halt rule, canonical
//! manifest bytes) are `toaster_core::ota`; the choices are explained in `docs/ota.md`.

mod audit;
mod cache;
mod check;
mod firmware;
mod report;
mod rollouts;

use rand::TryRngCore;
use rand::rngs::OsRng;
use spin_sdk::http::{IncomingRequest, Method, Request, Response, ResponseOutparam};
use spin_sdk::http_component;
use toaster_core::ota::RolloutAction;
use toaster_core::problem::Problem;
use toaster_platform::{respond, serve};

#[http_component]
async fn handle(req: IncomingRequest, out: ResponseOutparam) {
    serve::serve(req, out, |req| respond::outcome(route(req))).await
}

fn route(req: &Request) -> Result<Response, Problem> {
    let path = req.path();
    let path = path.strip_suffix('/').unwrap_or(path);
    let segments: Vec<&str> = path.split('/').skip(1).collect();
    let method = req.method();
    match segments.as_slice() {
        ["v1", "ota", "check"] => match method {
            Method::Get => check::check(req),
            _ => Err(respond::method_not_allowed(method)),
        },
        ["v1", "ota", "report"] => match method {
            Method::Post => report::report(req),
            _ => Err(respond::method_not_allowed(method)),
        },
        ["v1", "ota", "signing-key"] => match method {
            Method::Get => check::signing_key(),
            _ => Err(respond::method_not_allowed(method)),
        },
        ["v1", "ota", "firmware"] => match method {
            Method::Post => firmware::create(req),
            Method::Get => firmware::list(req),
            _ => Err(respond::method_not_allowed(method)),
        },
        ["v1", "ota", "firmware", id] => match method {
            Method::Get => firmware::get(req, id),
            _ => Err(respond::method_not_allowed(method)),
        },
        ["v1", "ota", "rollouts"] => match method {
            Method::Post => rollouts::create(req),
            Method::Get => rollouts::list(req),
            _ => Err(respond::method_not_allowed(method)),
        },
        ["v1", "ota", "rollouts", id] => match method {
            Method::Get => rollouts::get(req, id),
            _ => Err(respond::method_not_allowed(method)),
        },
        ["v1", "ota", "rollouts", id, action] => {
            let Some(action) = RolloutAction::parse(action) else {
                return Err(respond::no_route_problem(method, req.path()));
            };
            match method {
                Method::Post => rollouts::act(req, id, action),
                _ => Err(respond::method_not_allowed(method)),
            }
        }
        _ => Err(respond::no_route_problem(method, req.path())),
    }
}

/// `prefix` and 16 hex digits from the host's CSPRNG: `fw_…`, `ro_…`.
fn new_id(prefix: &str) -> Result<String, Problem> {
    let mut bytes = [0u8; 8];
    OsRng.try_fill_bytes(&mut bytes).map_err(|e| {
        eprintln!("ota: the random source failed: {e}");
        respond::internal()
    })?;
    Ok(format!("{prefix}{}", hex::encode(bytes)))
}

/// Whether `raw` has the shape of an id made by [`new_id`] with `prefix`. Anything else
/// names nothing (404), and is never sent to the database.
fn is_id(prefix: &str, raw: &str) -> bool {
    raw.strip_prefix(prefix).is_some_and(|hex| {
        hex.len() == 16 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    })
}
