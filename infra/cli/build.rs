//! Says, early in the first (long) build of the `toaster` command, when the Rust target
//! the components need, wasm32-wasip2, is not installed: `toaster up` would find out only
//! once the command is built.

use std::path::PathBuf;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    warn_without_wasm_target();
}

/// A cargo warning when the toolchain building the host has no wasm32-wasip2 standard
/// library: shown as soon as this script has run, near the start of the first build.
fn warn_without_wasm_target() {
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let Ok(out) = Command::new(rustc).args(["--print", "sysroot"]).output() else {
        return;
    };
    let sysroot = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    if out.status.success() && !sysroot.join("lib/rustlib/wasm32-wasip2").exists() {
        println!(
            "cargo:warning=the Rust target wasm32-wasip2, which the components are built \
             for, is not installed. `toaster up` adds it with rustup once this build is \
             done; to add it now: rustup target add wasm32-wasip2"
        );
    }
}
