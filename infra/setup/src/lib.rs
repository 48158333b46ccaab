//! What serving Toaster's app needs besides the runtime ([`toaster_host`]), shared by the
//! `toaster` command, `toaster bench` and the end-to-end tests: its PostgreSQL database
//! ([`database`]: connecting, creating, dropping; [`migrate`]; [`localpg`], a cluster of
//! its own for development), its signing keys ([`keys`]) and the durations their flags
//! take ([`duration`]).

pub mod database;
pub mod duration;
pub mod keys;
pub mod localpg;
pub mod migrate;
