//! Building components the way `spin build` does: each component's
//! `[component.<id>.build] command`, run by the shell in its `workdir` (relative to
//! the manifest), one after another.

use std::process::Command;

use anyhow::{Context, bail};

use crate::manifest::Manifest;

/// Components whose wasm file is missing.
pub fn missing(manifest: &Manifest) -> Vec<String> {
    manifest
        .components
        .keys()
        .filter(|id| manifest.source_path(id).is_some_and(|p| !p.exists()))
        .cloned()
        .collect()
}

/// Runs the build command of each component in `ids` (all when empty).
pub fn build(manifest: &Manifest, ids: &[String]) -> anyhow::Result<()> {
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
