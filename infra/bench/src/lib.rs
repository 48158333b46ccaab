//! `toaster bench` ([`bench`]) and `toaster simulate` ([`simulate`]): the `toaster`
//! command runs them as its subcommands.

pub mod bench;
pub mod simulate;
