//! What serving Toaster's app needs besides the runtime ([`toaster_host`]), shared by the
//! `toaster` command, `toaster bench` and the end-to-end tests: its PostgreSQL database
//! ([`database`]: connecting, creating, dropping; [`migrate`]; [`localpg`], a cluster of
//! its own for development), its signing keys ([`keys`]) and the durations their flags
//! take ([`duration`]).

// Functions stay under 100 lines (clippy.toml); tests may run longer.
#![cfg_attr(not(test), warn(clippy::too_many_lines))]

pub mod database;
pub mod duration;
pub mod keys;
pub mod localpg;
pub mod migrate;
