//! The deployment's limits for state documents and commands (spin.toml variables,
//! parsed by `toaster_core::config`; a bad value is a 500 naming it).

use toaster_core::config;
use toaster_core::control::state::Limits;
use toaster_core::problem::Problem;
use toaster_platform::config as variables;

/// `state_max_bytes`, `state_max_depth`, `state_max_keys`.
pub fn state() -> Result<Limits, Problem> {
    Ok(Limits {
        max_bytes: variables::get("state_max_bytes", config::byte_size)?,
        max_depth: variables::get("state_max_depth", config::count)? as usize,
        max_keys: variables::get("state_max_keys", config::count)? as usize,
    })
}

/// `command_queue_limit`: the most pending commands one device may have.
pub fn queue() -> Result<u32, Problem> {
    variables::get("command_queue_limit", config::count)
}

/// `command_max_bytes`: the largest parameters or output, as compact JSON.
pub fn command_bytes() -> Result<usize, Problem> {
    variables::get("command_max_bytes", config::byte_size)
}
