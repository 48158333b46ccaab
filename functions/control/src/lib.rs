//! The `control` component: talking back to devices. Per-device state documents
//! (`desired`, written by the tenant's admins; `reported`, written by the device)
//! changed by JSON Merge Patch, and commands with a lifecycle. Routes on the full
//! request path:
//!
//! | route | who | module |
//! |-------|-----|--------|
//! | `GET /v1/devices/{id}/state` | admin | [`state`] |
//! | `PATCH /v1/devices/{id}/state/desired` | admin | [`state`] |
//! | `PATCH /v1/fleet/state/desired?model=&channel=&tag=` (or `?all=true`) | admin | [`state`] |
//! | `POST /v1/devices/{id}/commands`, `GET /v1/devices/{id}/commands` | admin | [`commands`] |
//! | `GET /v1/devices/{id}/commands/{command}` | admin | [`commands`] |
//! | `POST /v1/devices/{id}/commands/{command}/cancel` | admin | [`commands`] |
//! | `POST /v1/fleet/commands?model=&channel=&tag=` (or `?all=true`) | admin | [`commands`] |
//! | `GET /v1/fleet/commands/{batch}` | admin | [`commands`] |
//! | `GET /v1/device/state`, `PATCH /v1/device/state/reported` | device | [`state`] |
//! | `GET /v1/device/commands` | device | [`inbox`] |
//! | `POST /v1/device/commands/{command}/result` | device | [`inbox`] |
//!
//! spin.toml routes `/v1/devices/:device_id/state/...` and `…/commands/...` here
//! (Spin's single-segment parameters, more specific than auth's `/v1/devices/...`).
//! Every write is one SQL statement; a device's poll when nothing changed is answered
//! from the key-value store ([`marker`]). The rules are `toaster_core::control`; the
//! model and its choices are in docs/control.md.

// Functions stay under 100 lines (clippy.toml); tests may run longer.
#![cfg_attr(not(test), warn(clippy::too_many_lines))]

mod commands;
mod error;
mod inbox;
mod limits;
mod marker;
mod patch;
mod selector;
mod state;
mod views;

use spin_sdk::http::{IncomingRequest, Request, Response, ResponseOutparam};
use spin_sdk::http_component;
use toaster_core::ids::{DeviceId, TenantId};
use toaster_core::problem::Problem;
use toaster_platform::auth::Caller;
use toaster_platform::{router, serve};
// Ids made and recognised the same way in every component (`crate::new_id`).
pub(crate) use toaster_platform::random::{is_id, new_id};

use crate::state::Side;

#[http_component]
async fn handle(req: IncomingRequest, out: ResponseOutparam) {
    serve::serve(req, out, route).await
}

fn route(req: &Request) -> Response {
    router::route(req, |path, on| match *path {
        ["v1", "devices", id, "state"] => Some(on.get(|| state::get(req, id))),
        ["v1", "devices", id, "state", "desired"] => {
            Some(on.patch(|| state::patch_desired(req, id)))
        }
        ["v1", "devices", id, "commands"] => Some(
            on.post(|| commands::send(req, id))
                .get(|| commands::list(req, id)),
        ),
        ["v1", "devices", id, "commands", command] => {
            Some(on.get(|| commands::get(req, id, command)))
        }
        ["v1", "devices", id, "commands", command, "cancel"] => {
            Some(on.post(|| commands::cancel(req, id, command)))
        }
        ["v1", "fleet", "state", "desired"] => Some(on.patch(|| state::patch_fleet(req))),
        ["v1", "fleet", "commands"] => Some(on.post(|| commands::send_fleet(req))),
        ["v1", "fleet", "commands", batch] => Some(on.get(|| commands::batch(req, batch))),
        ["v1", "device", "state"] => Some(on.get(|| state::get_own(req))),
        ["v1", "device", "state", "reported"] => {
            Some(on.patch(|| state::patch_own(req, Side::Reported)))
        }
        ["v1", "device", "commands"] => Some(on.get(|| inbox::fetch(req))),
        ["v1", "device", "commands", command, "result"] => {
            Some(on.post(|| inbox::result(req, command)))
        }
        _ => None,
    })
}

/// The device named by a path segment (percent-decoded); one that cannot be a device
/// id names nothing: 404.
fn device_in_path(raw: &str) -> Result<DeviceId, Problem> {
    router::path_segment(raw)
        .and_then(|id| DeviceId::parse(&id).ok())
        .ok_or_else(Problem::not_found)
}

/// The tenant and device of a device token.
fn own(caller: &Caller) -> Result<(&TenantId, &DeviceId), Problem> {
    let tenant = caller.tenant()?;
    let device = caller.device().ok_or_else(Problem::forbidden)?;
    Ok((tenant, device))
}
