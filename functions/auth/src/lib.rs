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

mod audit;
mod claims;
mod devices;
mod login;
mod secrets;
mod tenants;
mod tokens;

use spin_sdk::http::{IncomingRequest, Method, Request, Response, ResponseOutparam};
use spin_sdk::http_component;
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
        ["v1", "tenants"] => match method {
            Method::Post => tenants::create(req),
            Method::Get => tenants::list(req),
            _ => Err(respond::method_not_allowed(method)),
        },
        ["v1", "tenants", tenant] => match method {
            Method::Get => tenants::get(req, tenant),
            _ => Err(respond::method_not_allowed(method)),
        },
        ["v1", "tenants", tenant, "tokens"] => match method {
            Method::Post => tenants::mint_admin_token(req, tenant),
            _ => Err(respond::method_not_allowed(method)),
        },
        ["v1", "devices"] => match method {
            Method::Post => devices::create(req),
            Method::Get => devices::list(req),
            _ => Err(respond::method_not_allowed(method)),
        },
        ["v1", "devices", device] => match method {
            Method::Get => devices::get(req, device),
            Method::Patch => devices::patch(req, device),
            Method::Delete => devices::delete(req, device),
            _ => Err(respond::method_not_allowed(method)),
        },
        ["v1", "claims"] => match method {
            Method::Post => claims::create(req),
            Method::Get => claims::list(req),
            _ => Err(respond::method_not_allowed(method)),
        },
        ["v1", "claims", claim] => match method {
            Method::Get => claims::get(req, claim),
            Method::Delete => claims::revoke(req, claim),
            _ => Err(respond::method_not_allowed(method)),
        },
        ["v1", "provision"] => match method {
            Method::Post => claims::provision(req),
            _ => Err(respond::method_not_allowed(method)),
        },
        ["v1", "auth", "me"] => match method {
            Method::Get => login::whoami(req),
            _ => Err(respond::method_not_allowed(method)),
        },
        ["v1", "auth", "token"] => match method {
            Method::Post => login::exchange(req),
            _ => Err(respond::method_not_allowed(method)),
        },
        ["v1", "auth", "tokens"] => match method {
            Method::Get => tokens::list(req),
            _ => Err(respond::method_not_allowed(method)),
        },
        ["v1", "auth", "tokens", token] => match method {
            Method::Delete => tokens::revoke(req, token),
            _ => Err(respond::method_not_allowed(method)),
        },
        ["v1", "auth", "revoke"] => match method {
            Method::Post => tokens::revoke_presented(req),
            _ => Err(respond::method_not_allowed(method)),
        },
        ["v1", "audit"] => match method {
            Method::Get => audit::list(req),
            _ => Err(respond::method_not_allowed(method)),
        },
        _ => Err(respond::no_route_problem(method, req.path())),
    }
}

/// Percent-decodes one path segment; `None` if it is not valid UTF-8 once decoded.
/// Identifiers are ASCII, so a client that escapes `:` as `%3A` still names the
/// same device.
fn path_segment(raw: &str) -> Option<String> {
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}
