//! The `auth` component: tenants, the device registry, zero-touch provisioning, device
//! login and the audit log. Routes on the full request path (`req.path()`):
//!
//! | route | who | module |
//! |-------|-----|--------|
//! | `POST /v1/tenants`, `GET /v1/tenants` | operator | [`tenants`] |
//! | `GET /v1/tenants/{id}` | operator | [`tenants`] |
//! | `POST /v1/tenants/{id}/tokens` | operator | [`tenants`] |
//! | `GET /v1/auth/tokens`, `DELETE /v1/auth/tokens/{id}` | operator, admin | [`tokens`] |
//! | `POST /v1/auth/revoke` | operator, admin | [`tokens`] |
//! | `POST /v1/devices`, `GET /v1/devices` | admin | [`devices`] |
//! | `GET`, `PATCH`, `DELETE /v1/devices/{id}` | admin | [`devices`] |
//! | `POST /v1/claims`, `GET /v1/claims` | admin | [`claims`] |
//! | `GET`, `DELETE /v1/claims/{id}` | admin | [`claims`] |
//! | `POST /v1/provision` | a claim token in the body | [`claims`] |
//! | `POST /v1/auth/token` | a device's signed assertion in the body | [`login`] |
//! | `GET /v1/auth/me` | any token | [`login`] |
//! | `GET /v1/audit` | admin | [`audit`] |
//!
//! Every handler returns `Result<Response, Problem>`; nothing here panics on input.
//! The contracts are `schemas/openapi.yaml` and `schemas/json/`; the decisions are
//! explained in `docs/identity.md`.

// Functions stay under 100 lines (clippy.toml); tests may run longer.
#![cfg_attr(not(test), warn(clippy::too_many_lines))]

mod audit;
mod claims;
mod devices;
mod error;
mod login;
mod secrets;
mod tenants;
mod tokens;

use spin_sdk::http::{IncomingRequest, Request, Response, ResponseOutparam};
use spin_sdk::http_component;
use toaster_platform::{router, serve};

#[http_component]
async fn handle(req: IncomingRequest, out: ResponseOutparam) {
    serve::serve(req, out, route).await
}

fn route(req: &Request) -> Response {
    router::route(req, |path, on| match *path {
        ["v1", "tenants"] => Some(on.post(|| tenants::create(req)).get(|| tenants::list(req))),
        ["v1", "tenants", tenant] => Some(on.get(|| tenants::get(req, tenant))),
        ["v1", "tenants", tenant, "tokens"] => {
            Some(on.post(|| tenants::mint_admin_token(req, tenant)))
        }
        ["v1", "devices"] => Some(on.post(|| devices::create(req)).get(|| devices::list(req))),
        ["v1", "devices", device] => Some(
            on.get(|| devices::get(req, device))
                .patch(|| devices::patch(req, device))
                .delete(|| devices::delete(req, device)),
        ),
        ["v1", "claims"] => Some(on.post(|| claims::create(req)).get(|| claims::list(req))),
        ["v1", "claims", claim] => Some(
            on.get(|| claims::get(req, claim))
                .delete(|| claims::revoke(req, claim)),
        ),
        ["v1", "provision"] => Some(on.post(|| claims::provision(req))),
        ["v1", "auth", "me"] => Some(on.get(|| login::whoami(req))),
        ["v1", "auth", "token"] => Some(on.post(|| login::exchange(req))),
        ["v1", "auth", "tokens"] => Some(on.get(|| tokens::list(req))),
        ["v1", "auth", "tokens", token] => Some(on.delete(|| tokens::revoke(req, token))),
        ["v1", "auth", "revoke"] => Some(on.post(|| tokens::revoke_presented(req))),
        ["v1", "audit"] => Some(on.get(|| audit::list(req))),
        _ => None,
    })
}
