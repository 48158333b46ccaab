//! The PostgreSQL client programs: where `pg_dump`, `pg_restore` and `psql` are found,
//! and which of them suits a server (see [`super`]).

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use super::BackupError;

// ---------------------------------------------------------------- the programs

/// One directory holding `pg_dump`, `pg_restore` and `psql` of one version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PgClient {
    pub dir: PathBuf,
    /// Major version: 15, 16, 17 …
    pub major: u32,
    /// As `pg_dump --version` printed it, e.g. "15.20".
    pub version: String,
}

impl PgClient {
    pub(super) fn program(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
}

pub(super) const PROGRAMS: [&str; 3] = ["pg_dump", "pg_restore", "psql"];

/// Every usable client directory, first found first, one per major version.
pub fn find_clients() -> Result<Vec<PgClient>, BackupError> {
    if let Some(dir) = std::env::var_os("TOASTER_PG_BIN").filter(|d| !d.is_empty()) {
        // An explicit choice that does not work is an error, not a reason to guess elsewhere.
        let dir = PathBuf::from(dir);
        for missing in PROGRAMS {
            if !is_executable(&dir.join(missing)) {
                return Err(BackupError::BadPgBin { dir, missing });
            }
        }
        return client_in(&dir)
            .map(|c| vec![c])
            .ok_or(BackupError::ToolsNotFound);
    }
    let mut dirs = debian_bindirs();
    dirs.extend(pg_config_bindir());
    dirs.extend(std::env::split_paths(
        &std::env::var_os("PATH").unwrap_or_default(),
    ));
    let mut found: Vec<PgClient> = Vec::new();
    for dir in dirs {
        if let Some(client) = client_in(&dir)
            && !found.iter().any(|c| c.major == client.major)
        {
            found.push(client);
        }
    }
    if found.is_empty() {
        Err(BackupError::ToolsNotFound)
    } else {
        Ok(found)
    }
}

/// The client for a server of major version `server`: the same major, else the newest
/// (pg_dump reads servers older than itself, never newer ones).
pub fn choose(clients: &[PgClient], server: u32) -> Result<&PgClient, BackupError> {
    let newest = clients
        .iter()
        .max_by_key(|c| c.major)
        .ok_or(BackupError::ToolsNotFound)?;
    if let Some(same) = clients.iter().find(|c| c.major == server) {
        return Ok(same);
    }
    if newest.major > server {
        Ok(newest)
    } else {
        Err(BackupError::ClientTooOld {
            server,
            newest: newest.version.clone(),
            dir: newest.dir.clone(),
        })
    }
}

pub(super) fn client_in(dir: &Path) -> Option<PgClient> {
    if !PROGRAMS.iter().all(|p| is_executable(&dir.join(p))) {
        return None;
    }
    let out = std::process::Command::new(dir.join("pg_dump"))
        .arg("--version")
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()?;
    let (major, version) = parse_version(&String::from_utf8_lossy(&out.stdout))?;
    out.status.success().then(|| PgClient {
        dir: dir.to_path_buf(),
        major,
        version,
    })
}

/// `pg_dump (PostgreSQL) 15.20 (Debian 15.20-0+deb12u1)` → (15, "15.20").
pub(super) fn parse_version(text: &str) -> Option<(u32, String)> {
    let rest = &text[text.find("(PostgreSQL) ")? + "(PostgreSQL) ".len()..];
    let version: String = rest
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '.')
        .collect();
    let major = version
        .split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()?;
    Some((major, version))
}

pub(super) fn debian_bindirs() -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir("/usr/lib/postgresql") else {
        return Vec::new();
    };
    let mut dirs: Vec<(u32, PathBuf)> = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let major = e.file_name().to_str()?.split('.').next()?.parse().ok()?;
            Some((major, e.path().join("bin")))
        })
        .collect();
    dirs.sort_by_key(|d| std::cmp::Reverse(d.0));
    dirs.into_iter().map(|(_, d)| d).collect()
}

pub(super) fn pg_config_bindir() -> Option<PathBuf> {
    let out = std::process::Command::new("pg_config")
        .arg("--bindir")
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()?;
    let dir = String::from_utf8(out.stdout).ok()?;
    let dir = dir.trim();
    (out.status.success() && !dir.is_empty()).then(|| PathBuf::from(dir))
}

pub(super) fn is_executable(path: &Path) -> bool {
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}
