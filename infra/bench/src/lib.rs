//! `toaster bench` ([`bench`]) and `toaster simulate` ([`simulate`]): the `toaster`
//! command runs them as its subcommands.

// Functions stay under 100 lines (clippy.toml); tests may run longer.
#![cfg_attr(not(test), warn(clippy::too_many_lines))]

pub mod bench;
pub mod simulate;
