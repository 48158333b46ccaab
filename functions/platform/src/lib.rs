//! What every Toaster component shares on top of spin-sdk. Domain rules live in
//! `toaster-core`; this crate owns only the platform edge:
//!
//! - [`serve`]: the entry point's edge: the request read and the response written
//!   with few calls into the host;
//! - [`router`]: the path matched to a resource and its methods (404, 405 with
//!   `Allow`), path segments percent-decoded;
//! - [`respond`]: `Problem` → problem+json responses (with `WWW-Authenticate` on 401 and
//!   `Retry-After` on 429/503), JSON bodies;
//! - [`config`]: the deployment's variables, parsed by `toaster_core::config`; a bad
//!   value is a 500 naming it, never a default;
//! - [`auth`]: `authenticate(&req, &[Role])` → the verified [`auth::Caller`]: bearer
//!   token, role, device revocation and the per-device rate limit;
//! - [`body`]: typed JSON request bodies (415, 413, 400, 422 with JSON pointers);
//! - [`query`]: query-string parameters, `limit` and cursors;
//! - [`db`]: the `db_url` PostgreSQL connection, its errors as problems (503 when
//!   unreachable), transactions, typed row values;
//! - [`kv`]: every key-value key and the shape of its value;
//! - [`throttle`]: the budgets of refused attempts at the endpoints without a token,
//!   per client address and per claim token or device;
//! - [`time`]: the clock and RFC 3339 output;
//! - [`random`]: identifiers from the host's CSPRNG (`cmd_…`, `ro_…`).
//!
//! A handler reads: `authenticate` → `body::json` → `core` → `db`/`kv` → `respond`,
//! returning `Result<Response, Problem>`; the entry point hands the request to
//! `router::route` with the component's table of paths and methods. A component's own
//! refusals are an error enum with `impl From<…> for Problem` (its `error` module).

// Functions stay under 100 lines (clippy.toml); tests may run longer.
#![cfg_attr(not(test), warn(clippy::too_many_lines))]

pub mod auth;
pub mod body;
pub mod config;
pub mod db;
pub mod kv;
pub mod query;
pub mod random;
pub mod respond;
pub mod router;
pub mod serve;
pub mod throttle;
pub mod time;
