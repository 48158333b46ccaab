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
//! | `GET /v1/ota/devices/{device_id}/rollouts` | admin | [`history`] |
//! | `GET /v1/ota/check?version=` | device | [`check`] |
//! | `POST /v1/ota/report` | device | [`report`] |
//! | `GET /v1/ota/signing-key` | anyone | [`check`] |
//!
//! The pure decisions (versions, cohorts, transitions, the halt rule, canonical
//! manifest bytes) are `toaster_core::ota`; the choices are explained in `docs/ota.md`.

// Functions stay under 100 lines (clippy.toml); tests may run longer.
#![cfg_attr(not(test), warn(clippy::too_many_lines))]

mod audit;
mod cache;
mod check;
mod error;
mod firmware;
mod history;
mod report;
mod rollouts;

use spin_sdk::http::{IncomingRequest, Request, Response, ResponseOutparam};
use spin_sdk::http_component;
use toaster_core::ota::RolloutAction;
use toaster_platform::{router, serve};
// Ids made and recognised the same way in every component (`crate::new_id`).
pub(crate) use toaster_platform::random::{is_id, new_id};

#[http_component]
async fn handle(req: IncomingRequest, out: ResponseOutparam) {
    serve::serve(req, out, route).await
}

fn route(req: &Request) -> Response {
    router::route(req, |path, on| match *path {
        ["v1", "ota", "check"] => Some(on.get(|| check::check(req))),
        ["v1", "ota", "report"] => Some(on.post(|| report::report(req))),
        ["v1", "ota", "signing-key"] => Some(on.get(check::signing_key)),
        ["v1", "ota", "firmware"] => Some(
            on.post(|| firmware::create(req))
                .get(|| firmware::list(req)),
        ),
        ["v1", "ota", "firmware", id] => Some(on.get(|| firmware::get(req, id))),
        ["v1", "ota", "rollouts"] => Some(
            on.post(|| rollouts::create(req))
                .get(|| rollouts::list(req)),
        ),
        ["v1", "ota", "rollouts", id] => Some(on.get(|| rollouts::get(req, id))),
        ["v1", "ota", "devices", device, "rollouts"] => Some(on.get(|| history::list(req, device))),
        // An action that is not one names no resource: 404.
        ["v1", "ota", "rollouts", id, action] => {
            let action = RolloutAction::parse(action)?;
            Some(on.post(|| rollouts::act(req, id, action)))
        }
        _ => None,
    })
}
