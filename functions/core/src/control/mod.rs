//! Talking back to devices: per-device state documents (`desired`, `reported`) changed
//! by JSON Merge Patch, and commands with a lifecycle. The rules only; the `control`
//! component stores them (docs/control.md).

pub mod command;
pub mod state;
