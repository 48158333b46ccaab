//! Building components the way `spin build` does: each component's
//! `[component.<id>.build] command`, run by the shell in its `workdir` (relative to
//! the manifest), one after another.

use std::process::Command;

use anyhow::{Context, bail};

use toaster_host::manifest::Manifest;

/// Components whose wasm file is missing.
pub fn missing(manifest: &Manifest) -> Vec<String> {
    manifest
        .components
        .keys()
        .filter(|id| manifest.source_path(id).is_some_and(|p| !p.exists()))
        .cloned()
        .collect()
}

/// The target every component is built for.
const WASM_TARGET: &str = "wasm32-wasip2";

/// Adds [`WASM_TARGET`] through rustup when it is missing, before any component is
/// built. rust-toolchain.toml names it, but rustup installs a toolchain file's targets
/// only along with the toolchain itself, so a machine that already had stable lacks
/// it. Both commands run in the manifest's directory, so that they see the toolchain
/// its rust-toolchain.toml names. Without rustup, a missing target is an error saying
/// so, not a failed build.
fn ensure_wasm_target(dir: &std::path::Path) -> anyhow::Result<()> {
    let sysroot = Command::new("rustc")
        .args(["--print", "sysroot"])
        .current_dir(dir)
        .output()
        .ok()
        .filter(|out| out.status.success())
        .map(|out| std::path::PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()));
    if sysroot
        .as_ref()
        .is_some_and(|s| s.join("lib/rustlib").join(WASM_TARGET).exists())
    {
        return Ok(());
    }
    let Ok(out) = Command::new("rustup")
        .args(["target", "list", "--installed"])
        .current_dir(dir)
        .output()
    else {
        if sysroot.is_some() {
            bail!(
                "the Rust target {WASM_TARGET}, which the components are built for, is not \
                 installed, and there is no rustup to add it: install it for your Rust \
                 toolchain, then retry"
            );
        }
        return Ok(());
    };
    if String::from_utf8_lossy(&out.stdout)
        .lines()
        .any(|l| l.trim() == WASM_TARGET)
    {
        return Ok(());
    }
    eprintln!("adding the Rust target {WASM_TARGET} (rustup target add {WASM_TARGET})");
    let status = Command::new("rustup")
        .args(["target", "add", WASM_TARGET])
        .current_dir(dir)
        .status()
        .context("cannot run rustup")?;
    if !status.success() {
        bail!("`rustup target add {WASM_TARGET}` failed ({status}); run it by hand, then retry");
    }
    Ok(())
}

/// Runs the build command of each component in `ids` (all when empty).
pub fn build(manifest: &Manifest, ids: &[String]) -> anyhow::Result<()> {
    if manifest.components.values().any(|c| {
        c.build
            .as_ref()
            .is_some_and(|b| b.command.contains(WASM_TARGET))
    }) {
        ensure_wasm_target(&manifest.root)?;
    }
    let mut seen = std::collections::BTreeSet::new();
    for (id, c) in &manifest.components {
        if !ids.is_empty() && !ids.contains(id) {
            continue;
        }
        let Some(b) = &c.build else {
            if manifest.source_path(id).is_some_and(|p| !p.exists()) {
                bail!(
                    "component {id:?} has no [component.{id}.build] command and {} is missing",
                    c.source
                );
            }
            continue;
        };
        let dir = manifest.root.join(b.workdir.as_deref().unwrap_or("."));
        // Several components may share one command; run each distinct one once.
        if !seen.insert((b.command.clone(), dir.clone())) {
            continue;
        }
        eprintln!("building component {id}: {}", b.command);
        let status = Command::new("sh")
            .arg("-c")
            .arg(&b.command)
            .current_dir(&dir)
            .status()
            .with_context(|| format!("cannot run the build command of component {id:?}"))?;
        if !status.success() {
            bail!(
                "building component {id:?} failed ({status}); its command was `{}`",
                b.command
            );
        }
    }
    Ok(())
}
