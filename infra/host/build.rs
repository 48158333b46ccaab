//! Finds the WIT that ships inside the pinned spin-sdk crate and links it where
//! `bindgen!` can read it, so no WIT is copied into this repository.
//!
//! `cargo metadata` resolves the same Cargo.lock the workspace builds with, so the
//! host always binds exactly the interfaces the components were built against.

use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    if let Err(e) = run() {
        panic!("toaster host build: {e:#}");
    }
}

fn run() -> anyhow::Result<()> {
    let manifest_dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?);
    let workspace = manifest_dir.join("../..");
    println!(
        "cargo:rerun-if-changed={}",
        workspace.join("Cargo.lock").display()
    );
    println!("cargo:rerun-if-changed=build.rs");

    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .args(["metadata", "--format-version", "1", "--manifest-path"])
        .arg(workspace.join("Cargo.toml"))
        .output()?;
    if !out.status.success() {
        anyhow::bail!(
            "cargo metadata failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    let sdk = meta["packages"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|p| p["name"] == "spin-sdk")
        .ok_or_else(|| anyhow::anyhow!("spin-sdk is not in the workspace's dependency graph"))?;
    let sdk_manifest = sdk["manifest_path"]
        .as_str()
        .ok_or_else(|| anyhow::anyhow!("spin-sdk has no manifest_path"))?;
    let sdk_wit = Path::new(sdk_manifest)
        .parent()
        .ok_or_else(|| anyhow::anyhow!("bad spin-sdk manifest path"))?
        .join("wit");
    if !sdk_wit.join("world.wit").exists() {
        anyhow::bail!("no WIT found at {}", sdk_wit.display());
    }

    let link_dir = manifest_dir.join("wit");
    std::fs::create_dir_all(&link_dir)?;
    let link = link_dir.join("spin-sdk");
    let current = std::fs::read_link(&link).ok();
    if current.as_deref() != Some(sdk_wit.as_path()) {
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(&sdk_wit, &link)?;
    }
    Ok(())
}
