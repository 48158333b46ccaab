//! A PostgreSQL cluster of our own, for `toaster up` and for tests when no server is configured.
//!
//! This module owns one directory, laid out as:
//!
//! ```text
//! <dir>/data/            the cluster (initdb), with `toaster.conf` included from postgresql.conf
//! <dir>/postgres.log     the server's log (pg_ctl -l)
//! <dir>/.s.PGSQL.<port>  the unix socket, so nothing is written to /var/run
//! ```
//!
//! The server listens on 127.0.0.1 only, on a port picked once and kept in `toaster.conf`, so a
//! second `toaster up` finds the same cluster on the same port (and reuses it if it is still
//! running). Authentication is `trust`: anyone on this machine can connect, which is the point of
//! a local development database and the reason it never listens beyond loopback.
//!
//! Running as root: `initdb` and `postgres` refuse to run as root, and `toaster` often does (CI,
//! containers). Rather than telling the user to create an account, we run `initdb` and `pg_ctl`
//! as an unprivileged user with `setuid`/`setgid` (tokio's `Command::uid/gid`): the owner of an
//! existing cluster, else `postgres` if /etc/passwd has it (Debian's package creates it), else
//! `nobody`. That user must own `<dir>` (we chown it) and be able to reach it, i.e. search
//! (`x`) every parent directory. We do not loosen the permissions of parents ourselves (that could
//! expose a home directory): we check them and say which one is in the way.

use std::ffi::OsString;
use std::fmt::Write as _;
use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::process::Command;

/// Name of the settings file we own inside the cluster; rewritten on every start.
const SETTINGS_FILE: &str = "toaster.conf";
/// The line that makes postgresql.conf read [`SETTINGS_FILE`].
const INCLUDE_LINE: &str = "include_if_exists = 'toaster.conf'";
/// Longest unix socket path the kernel accepts (sun_path is 108 bytes with the final NUL).
const MAX_SOCKET_PATH: usize = 107;
/// How many lines of a log an error carries.
const LOG_TAIL_LINES: usize = 30;

#[derive(Debug, thiserror::Error)]
pub enum LocalPgError {
    #[error(
        "no PostgreSQL server binaries found (initdb, pg_ctl). Install them (Debian/Ubuntu: \
         `apt-get install postgresql`; macOS: `brew install postgresql@16`) or pass \
         --database-url to use an existing server."
    )]
    BinariesNotFound,
    #[error("TOASTER_PG_BIN={dir} does not contain {missing}")]
    BadPgBin { dir: PathBuf, missing: &'static str },
    #[error("{what} ({path}): {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "PostgreSQL refuses to run as root, so it runs as user `{user}`, but `{user}` cannot reach \
         {dir}: {blocked} (mode {mode:o}) is not searchable by it. Choose a data directory \
         `{user}` can reach, or allow it with `chmod o+x {blocked}`."
    )]
    NotTraversable {
        user: String,
        dir: PathBuf,
        blocked: PathBuf,
        mode: u32,
    },
    #[error(
        "the PostgreSQL cluster in {dir} is owned by root; PostgreSQL cannot run as root. \
         Remove it or `chown -R postgres {dir}`."
    )]
    OwnedByRoot { dir: PathBuf },
    #[error(
        "no unprivileged user to run PostgreSQL as (neither `postgres` nor `nobody` in /etc/passwd)"
    )]
    NoUnprivilegedUser,
    #[error("could not find a free TCP port on 127.0.0.1: {0}")]
    NoFreePort(#[source] io::Error),
    #[error("{what} failed ({status}).\n{output}")]
    Command {
        what: String,
        status: String,
        /// The command's own output, then the tail of the server log where there is one.
        output: String,
    },
}

/// Where the server programs are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PgBinaries {
    pub initdb: PathBuf,
    pub pg_ctl: PathBuf,
    pub postgres: PathBuf,
}

impl PgBinaries {
    fn in_dir(dir: &Path) -> Option<PgBinaries> {
        let bins = PgBinaries {
            initdb: dir.join("initdb"),
            pg_ctl: dir.join("pg_ctl"),
            postgres: dir.join("postgres"),
        };
        (is_executable(&bins.initdb)
            && is_executable(&bins.pg_ctl)
            && is_executable(&bins.postgres))
        .then_some(bins)
    }
}

/// Finds `initdb`, `pg_ctl` and `postgres`: in `$TOASTER_PG_BIN`, then `pg_config --bindir`,
/// then the newest `/usr/lib/postgresql/<major>/bin` (Debian keeps them off PATH), then PATH.
pub fn find_binaries() -> Result<PgBinaries, LocalPgError> {
    if let Some(dir) = std::env::var_os("TOASTER_PG_BIN").filter(|d| !d.is_empty()) {
        // An explicit choice that does not work is an error, not a reason to guess elsewhere.
        let dir = PathBuf::from(dir);
        for (name, missing) in [
            ("initdb", "initdb"),
            ("pg_ctl", "pg_ctl"),
            ("postgres", "postgres"),
        ] {
            if !is_executable(&dir.join(name)) {
                return Err(LocalPgError::BadPgBin { dir, missing });
            }
        }
        return PgBinaries::in_dir(&dir).ok_or(LocalPgError::BinariesNotFound);
    }
    // pg_config may come from libpq-dev alone, naming a bindir with no server in it: check.
    if let Some(bins) = pg_config_bindir().and_then(|d| PgBinaries::in_dir(&d)) {
        return Ok(bins);
    }
    if let Some(bins) = newest_debian_bindir().and_then(|d| PgBinaries::in_dir(&d)) {
        return Ok(bins);
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .find_map(|d| PgBinaries::in_dir(&d))
        .ok_or(LocalPgError::BinariesNotFound)
}

fn pg_config_bindir() -> Option<PathBuf> {
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

fn newest_debian_bindir() -> Option<PathBuf> {
    std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            // Majors are "9.6", "10" … "17": compare numerically, not as strings.
            let major: Vec<u32> = name
                .split('.')
                .map(|p| p.parse().ok())
                .collect::<Option<_>>()?;
            Some((major, e.path().join("bin")))
        })
        .filter(|(_, bin)| PgBinaries::in_dir(bin).is_some())
        .max_by(|a, b| a.0.cmp(&b.0))
        .map(|(_, bin)| bin)
}

fn is_executable(path: &Path) -> bool {
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// The account PostgreSQL's programs run as, when it is not ourselves.
#[derive(Debug, Clone)]
struct RunAs {
    name: String,
    uid: u32,
    gid: u32,
}

/// Options for [`LocalPostgres`]; [`LocalPostgres::start`] uses the defaults.
#[derive(Debug, Clone)]
pub struct LocalPostgresBuilder {
    dir: PathBuf,
    ephemeral: bool,
    binaries: Option<PgBinaries>,
}

impl LocalPostgresBuilder {
    /// A throwaway cluster (tests): `initdb --no-sync`, and `fsync`, `synchronous_commit` and
    /// `full_page_writes` off. Fast, and loses data on a crash of the machine. Never for
    /// `toaster up`, whose database is meant to outlive a power cut.
    pub fn ephemeral(mut self, ephemeral: bool) -> Self {
        self.ephemeral = ephemeral;
        self
    }

    /// Use these binaries rather than [`find_binaries`].
    pub fn binaries(mut self, binaries: PgBinaries) -> Self {
        self.binaries = Some(binaries);
        self
    }

    pub async fn start(self) -> Result<LocalPostgres, LocalPgError> {
        let bins = match self.binaries {
            Some(b) => b,
            None => find_binaries()?,
        };
        let dir = absolute(&self.dir)?;
        let data = dir.join("data");
        let fresh = !data.join("PG_VERSION").exists();

        std::fs::create_dir_all(&dir)
            .map_err(io_err("could not create the PostgreSQL directory", &dir))?;
        let run_as = if is_root() {
            Some(prepare_for_unprivileged(&dir, &data, fresh)?)
        } else {
            None
        };

        if fresh {
            initdb(&bins, &data, self.ephemeral, run_as.as_ref()).await?;
            append_include_line(&data)?;
        }

        let stored_port = read_stored_port(&data);
        if let Some(port) = stored_port
            && let Some(pid) = running_postmaster(&data)
        {
            if answers(port).await {
                tracing::info!(%port, pid, dir = %dir.display(), "reusing the running local PostgreSQL");
                return Ok(LocalPostgres {
                    dir,
                    port,
                    bins,
                    run_as,
                    started_by_us: false,
                });
            }
            // A postmaster that is alive but does not answer is starting up or shutting down, or
            // the pid was recycled: pg_ctl start tells which, and fails clearly if it is ours.
            tracing::debug!(pid, "postmaster.pid present but the server does not answer");
        }

        // Keep the port across restarts, unless something else has taken it meanwhile.
        let port = match stored_port {
            Some(p) if port_is_free(p) => p,
            Some(p) => {
                let new = free_port()?;
                tracing::warn!(
                    old = p,
                    new,
                    "the local PostgreSQL's port is taken; moving it"
                );
                new
            }
            None => free_port()?,
        };
        write_settings(&dir, &data, port, self.ephemeral)?;
        if let Some(user) = &run_as {
            // initdb made the files as `user`; our own settings file is made by us (root).
            chown(&data.join(SETTINGS_FILE), user)?;
        }

        pg_ctl_start(&bins, &dir, &data, run_as.as_ref()).await?;
        tracing::info!(%port, dir = %dir.display(), "started a local PostgreSQL");
        Ok(LocalPostgres {
            dir,
            port,
            bins,
            run_as,
            started_by_us: true,
        })
    }
}

/// A PostgreSQL server on 127.0.0.1 whose cluster lives in a directory of ours.
///
/// Dropping it stops the server if this value started it; [`LocalPostgres::stop`] does the same
/// without blocking the runtime. A server that was already running is left running.
#[derive(Debug)]
pub struct LocalPostgres {
    dir: PathBuf,
    port: u16,
    bins: PgBinaries,
    run_as: Option<RunAs>,
    started_by_us: bool,
}

impl LocalPostgres {
    pub fn builder(dir: &Path) -> LocalPostgresBuilder {
        LocalPostgresBuilder {
            dir: dir.to_path_buf(),
            ephemeral: false,
            binaries: None,
        }
    }

    /// Starts (or reuses) the durable cluster in `dir`, creating it if `dir` has none.
    pub async fn start(dir: &Path) -> Result<LocalPostgres, LocalPgError> {
        Self::builder(dir).start().await
    }

    /// `postgres://postgres@127.0.0.1:<port>/<database>`
    pub fn url(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Whether this value started the server (and so will stop it).
    pub fn started_by_us(&self) -> bool {
        self.started_by_us
    }

    /// Stops the server if we started it (`pg_ctl -m fast stop`: clients are disconnected,
    /// committed data is kept).
    pub async fn stop(mut self) -> Result<(), LocalPgError> {
        if !std::mem::take(&mut self.started_by_us) {
            return Ok(());
        }
        let mut cmd = Command::new(&self.bins.pg_ctl);
        cmd.args(stop_args(&self.dir.join("data")));
        run(cmd, "pg_ctl stop", &self.dir, self.run_as.as_ref(), None).await
    }
}

impl Drop for LocalPostgres {
    fn drop(&mut self) {
        if !self.started_by_us {
            return;
        }
        // Best effort: Drop cannot be async and has nowhere to report to but the log.
        let mut cmd = std::process::Command::new(&self.bins.pg_ctl);
        cmd.args(stop_args(&self.dir.join("data")))
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if let Some(user) = &self.run_as {
            use std::os::unix::process::CommandExt;
            cmd.uid(user.uid).gid(user.gid);
        }
        match cmd.status() {
            Ok(s) if s.success() => {}
            Ok(s) => tracing::warn!(status = %s, dir = %self.dir.display(), "pg_ctl stop failed"),
            Err(e) => tracing::warn!(error = %e, "could not run pg_ctl stop"),
        }
    }
}

fn stop_args(data: &Path) -> Vec<OsString> {
    vec![
        "stop".into(),
        "-D".into(),
        data.into(),
        "-m".into(),
        "fast".into(),
        "-w".into(),
    ]
}

async fn initdb(
    bins: &PgBinaries,
    data: &Path,
    ephemeral: bool,
    run_as: Option<&RunAs>,
) -> Result<(), LocalPgError> {
    let mut cmd = Command::new(&bins.initdb);
    cmd.arg("-D")
        .arg(data)
        .args(["-A", "trust", "-U", "postgres", "-E", "UTF8", "--no-locale"]);
    if ephemeral {
        cmd.arg("--no-sync");
    }
    let dir = data.parent().unwrap_or(data);
    run(cmd, "initdb", dir, run_as, None).await
}

async fn pg_ctl_start(
    bins: &PgBinaries,
    dir: &Path,
    data: &Path,
    run_as: Option<&RunAs>,
) -> Result<(), LocalPgError> {
    let log = dir.join("postgres.log");
    let mut cmd = Command::new(&bins.pg_ctl);
    cmd.arg("start")
        .arg("-D")
        .arg(data)
        .arg("-l")
        .arg(&log)
        .arg("-w")
        .args(["-t", "60"]);
    run(cmd, "pg_ctl start", dir, run_as, Some(&log)).await
}

/// Runs one of PostgreSQL's programs to completion; on failure, the error carries its output and
/// the tail of `log`.
async fn run(
    mut cmd: Command,
    what: &str,
    cwd: &Path,
    run_as: Option<&RunAs>,
    log: Option<&Path>,
) -> Result<(), LocalPgError> {
    // cwd: the unprivileged user may not be able to enter ours (e.g. /root).
    cmd.current_dir(cwd)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Settings from the caller's environment must not redirect our cluster elsewhere.
        .env_remove("PGDATA")
        .env_remove("PGPORT")
        .env_remove("PGHOST");
    if let Some(user) = run_as {
        // std drops root's supplementary groups too (setgroups(0)) when it changes the uid.
        cmd.uid(user.uid).gid(user.gid);
        cmd.env("HOME", cwd)
            .env("USER", &user.name)
            .env("LOGNAME", &user.name);
    }
    let out = cmd.output().await.map_err(|e| LocalPgError::Command {
        what: what.to_string(),
        status: "could not run it".into(),
        output: e.to_string(),
    })?;
    if out.status.success() {
        return Ok(());
    }
    let mut output = String::new();
    output.push_str(String::from_utf8_lossy(&out.stdout).trim_end());
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !stderr.trim().is_empty() {
        output.push('\n');
        output.push_str(stderr.trim_end());
    }
    if let Some(log) = log {
        let _ = write!(
            output,
            "\n--- last lines of {} ---\n{}",
            log.display(),
            log_tail(log)
        );
    }
    Err(LocalPgError::Command {
        what: what.to_string(),
        status: out.status.to_string(),
        output: output.trim().to_string(),
    })
}

fn log_tail(log: &Path) -> String {
    match std::fs::read_to_string(log) {
        Ok(text) => {
            let lines: Vec<&str> = text.lines().collect();
            lines[lines.len().saturating_sub(LOG_TAIL_LINES)..].join("\n")
        }
        Err(e) => format!("(could not read the log: {e})"),
    }
}

/// Writes the settings we own. Rewritten on every start, so a moved directory or a changed
/// `ephemeral` takes effect; the port is the one thing carried over.
fn write_settings(dir: &Path, data: &Path, port: u16, ephemeral: bool) -> Result<(), LocalPgError> {
    let mut conf = String::from("# Written by toaster on every start; edits are lost.\n");
    let _ = writeln!(conf, "port = {port}");
    conf.push_str("listen_addresses = '127.0.0.1'\n");
    let socket = dir.join(format!(".s.PGSQL.{port}"));
    if socket.as_os_str().len() <= MAX_SOCKET_PATH {
        let _ = writeln!(
            conf,
            "unix_socket_directories = '{}'",
            conf_quote(&dir.to_string_lossy())
        );
    } else {
        // Too long for a unix socket path: go without one. We only ever connect over TCP.
        conf.push_str("unix_socket_directories = ''\n");
    }
    if ephemeral {
        conf.push_str("fsync = off\nsynchronous_commit = off\nfull_page_writes = off\n");
    }
    let path = data.join(SETTINGS_FILE);
    std::fs::write(&path, conf).map_err(io_err("could not write the PostgreSQL settings", &path))
}

fn append_include_line(data: &Path) -> Result<(), LocalPgError> {
    let path = data.join("postgresql.conf");
    let mut conf = std::fs::read_to_string(&path).map_err(io_err("could not read", &path))?;
    if !conf.lines().any(|l| l.trim() == INCLUDE_LINE) {
        conf.push_str("\n# toaster's settings (port, listen address, socket directory)\n");
        conf.push_str(INCLUDE_LINE);
        conf.push('\n');
        std::fs::write(&path, conf).map_err(io_err("could not write", &path))?;
    }
    Ok(())
}

fn read_stored_port(data: &Path) -> Option<u16> {
    let conf = std::fs::read_to_string(data.join(SETTINGS_FILE)).ok()?;
    conf.lines()
        .filter_map(|l| l.trim().strip_prefix("port"))
        .filter_map(|rest| rest.trim_start().strip_prefix('='))
        .find_map(|v| v.trim().parse().ok())
}

/// The pid in postmaster.pid, if that process exists.
fn running_postmaster(data: &Path) -> Option<i32> {
    let pidfile = std::fs::read_to_string(data.join("postmaster.pid")).ok()?;
    let pid: i32 = pidfile.lines().next()?.trim().parse().ok()?;
    // SAFETY: kill with signal 0 only checks that the process exists.
    let alive = pid > 0
        && (unsafe { libc::kill(pid, 0) } == 0
            || io::Error::last_os_error().raw_os_error() == Some(libc::EPERM));
    alive.then_some(pid)
}

/// Whether a PostgreSQL server answers a query on 127.0.0.1:`port`.
async fn answers(port: u16) -> bool {
    let url = format!("host=127.0.0.1 port={port} user=postgres dbname=postgres connect_timeout=2");
    let attempt = async {
        let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
            .await
            .ok()?;
        let conn = tokio::spawn(conn);
        let ok = client.simple_query("SELECT 1").await.is_ok();
        drop(client);
        let _ = conn.await;
        Some(ok)
    };
    matches!(
        tokio::time::timeout(Duration::from_secs(3), attempt).await,
        Ok(Some(true))
    )
}

fn free_port() -> Result<u16, LocalPgError> {
    // The OS picks a free one; there is a window before postgres binds it, which pg_ctl start
    // would report plainly.
    let listener =
        std::net::TcpListener::bind(("127.0.0.1", 0)).map_err(LocalPgError::NoFreePort)?;
    Ok(listener
        .local_addr()
        .map_err(LocalPgError::NoFreePort)?
        .port())
}

fn port_is_free(port: u16) -> bool {
    std::net::TcpListener::bind(("127.0.0.1", port)).is_ok()
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Picks the unprivileged user, hands `dir` to it, and checks it can reach `dir`.
fn prepare_for_unprivileged(dir: &Path, data: &Path, fresh: bool) -> Result<RunAs, LocalPgError> {
    let user = if fresh {
        lookup_user("postgres")
            .or_else(|| lookup_user("nobody"))
            .ok_or(LocalPgError::NoUnprivilegedUser)?
    } else {
        // postgres insists on running as the owner of its data directory.
        let meta = std::fs::metadata(data).map_err(io_err("could not read", data))?;
        if meta.uid() == 0 {
            return Err(LocalPgError::OwnedByRoot {
                dir: data.to_path_buf(),
            });
        }
        lookup_uid(meta.uid()).unwrap_or(RunAs {
            name: meta.uid().to_string(),
            uid: meta.uid(),
            gid: meta.gid(),
        })
    };
    check_traversable(dir, &user)?;
    chown(dir, &user)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
        .map_err(io_err("could not set the mode of", dir))?;
    // The log belongs to the server; a leftover one from another owner would stop pg_ctl.
    let log = dir.join("postgres.log");
    if log.exists() {
        chown(&log, &user)?;
    }
    Ok(user)
}

fn check_traversable(dir: &Path, user: &RunAs) -> Result<(), LocalPgError> {
    for parent in dir.ancestors().skip(1) {
        let meta = std::fs::metadata(parent).map_err(io_err("could not read", parent))?;
        let mode = meta.permissions().mode();
        let bit = if meta.uid() == user.uid {
            0o100
        } else if meta.gid() == user.gid {
            0o010
        } else {
            0o001
        };
        if mode & bit == 0 {
            return Err(LocalPgError::NotTraversable {
                user: user.name.clone(),
                dir: dir.to_path_buf(),
                blocked: parent.to_path_buf(),
                mode: mode & 0o7777,
            });
        }
    }
    Ok(())
}

fn chown(path: &Path, user: &RunAs) -> Result<(), LocalPgError> {
    std::os::unix::fs::chown(path, Some(user.uid), Some(user.gid))
        .map_err(io_err("could not chown", path))
}

fn passwd_entries() -> Vec<RunAs> {
    let Ok(passwd) = std::fs::read_to_string("/etc/passwd") else {
        return Vec::new();
    };
    passwd
        .lines()
        .filter_map(|line| {
            let mut f = line.split(':');
            let name = f.next()?.to_string();
            let _password = f.next()?;
            let uid = f.next()?.parse().ok()?;
            let gid = f.next()?.parse().ok()?;
            Some(RunAs { name, uid, gid })
        })
        .collect()
}

fn lookup_user(name: &str) -> Option<RunAs> {
    passwd_entries()
        .into_iter()
        .find(|u| u.name == name && u.uid != 0)
}

fn lookup_uid(uid: u32) -> Option<RunAs> {
    passwd_entries().into_iter().find(|u| u.uid == uid)
}

fn absolute(dir: &Path) -> Result<PathBuf, LocalPgError> {
    std::path::absolute(dir).map_err(io_err("could not resolve", dir))
}

/// Quotes a value for postgresql.conf, whose strings are in single quotes with `''` for `'`.
fn conf_quote(value: &str) -> String {
    value.replace('\\', "\\\\").replace('\'', "''")
}

fn io_err(what: &'static str, path: &Path) -> impl FnOnce(io::Error) -> LocalPgError {
    let path = path.to_path_buf();
    move |source| LocalPgError::Io { what, path, source }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conf_strings_are_quoted() {
        assert_eq!(conf_quote("/tmp/it's"), "/tmp/it''s");
        assert_eq!(conf_quote(r"C:\x"), r"C:\\x");
    }

    #[test]
    fn stored_port_is_read_back() {
        let dir = std::env::temp_dir().join(format!("toaster-localpg-port-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        write_settings(&dir, &dir, 54321, true).unwrap();
        assert_eq!(read_stored_port(&dir), Some(54321));
        let conf = std::fs::read_to_string(dir.join(SETTINGS_FILE)).unwrap();
        assert!(conf.contains("listen_addresses = '127.0.0.1'"));
        assert!(conf.contains("fsync = off"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
