//! Backups that restore: `toaster backup` and `toaster restore`, over PostgreSQL's own
//! `pg_dump` and `pg_restore` (custom format, `-Fc`), with `psql` for the checks around
//! them. Decisions, and point-in-time recovery for production, in infra/deploy/backup.md.
//!
//! - **The programs** come from `$TOASTER_PG_BIN` (an explicit choice: nothing else is
//!   tried), else every `/usr/lib/postgresql/<major>/bin` (Debian keeps them off PATH),
//!   `pg_config --bindir` and PATH. Each directory must hold `pg_dump`, `pg_restore`
//!   and `psql`; its version is what its `pg_dump --version` says. Of those, we use the
//!   one of the server's major version, else the newest: `pg_dump` refuses a server
//!   newer than itself, so when every one found is older we stop and say what to
//!   install.
//! - **Passwords** never reach argv (where `ps` shows them) nor our output: the password
//!   is taken out of the URL and handed to the programs in `PGPASSWORD`; messages show
//!   the URL redacted. The programs run with `-w` (never prompt: a Job has no terminal)
//!   and `PGCONNECT_TIMEOUT=10` unless the caller set one. TLS and every other libpq
//!   option in the URL pass through untouched.
//! - **A backup** is written to `<out>.partial` and renamed over `<out>` only once
//!   `pg_dump` succeeded and `pg_restore --list` can read it back: a failed run never
//!   leaves a file that looks like a backup. It is a consistent snapshot (one
//!   repeatable-read transaction) taken while the app keeps serving.
//! - **A restore** goes into an empty database: if the target holds any table, it is
//!   refused (a non-zero exit) unless `--clean` is given, which first empties schema
//!   `public`, where Toaster keeps everything ([`DROP_PUBLIC`]). It applies whole or not
//!   at all ([`apply_archive`]). Objects are owned by the user of the `--database-url`
//!   (`--no-owner --no-privileges`): Toaster's schema grants nothing and assumes the app
//!   connects as the role that owns its tables, which on another server may not even
//!   exist under the old name.

use std::ffi::{OsStr, OsString};
use std::fmt;
use std::os::unix::ffi::OsStringExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use tokio::process::Command;

use toaster_setup::database::redact;

/// How long `pg_dump` waits for a table lock before it gives up, rather than queueing
/// (and making everything queue behind it) for ever.
const DUMP_LOCK_WAIT_MS: u32 = 60_000;
/// Tables named in the "not empty" refusal.
const EXAMPLE_TABLES: usize = 5;

#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error(
        "no PostgreSQL client programs found (pg_dump, pg_restore and psql in one directory). \
         Install them (Debian/Ubuntu: `apt-get install postgresql-client`; macOS: \
         `brew install libpq`) or set TOASTER_PG_BIN to the directory that holds them."
    )]
    ToolsNotFound,
    #[error("TOASTER_PG_BIN={dir} does not contain an executable {missing}")]
    BadPgBin { dir: PathBuf, missing: &'static str },
    #[error(
        "the PostgreSQL server is version {server}, but the newest pg_dump found is {newest} \
         (in {dir}), and pg_dump refuses to dump a server newer than itself. Install the \
         client programs of version {server} or newer (Debian/Ubuntu: \
         `apt-get install postgresql-client-{server}`, from apt.postgresql.org if your \
         release lacks it) and, if they are not found on their own, set TOASTER_PG_BIN to \
         their directory."
    )]
    ClientTooOld {
        server: u32,
        newest: String,
        dir: PathBuf,
    },
    #[error("invalid database URL {url}: {reason}")]
    InvalidUrl { url: String, reason: String },
    #[error("could not run {}: {source}", program.display())]
    Spawn {
        program: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{what} failed ({status}):\n{output}{}", hint_line(.hint))]
    Tool {
        what: String,
        status: String,
        output: String,
        hint: &'static str,
    },
    #[error(
        "database {database} already holds {count} table(s) ({examples}): nothing was \
         restored. A restore goes into an empty database: create one (e.g. `CREATE DATABASE \
         toaster_restored`), restore into it and point db_url at it. Or, to replace this \
         database's contents, pass --clean: in the restore's transaction it first drops \
         every table, view, sequence and function of schema public."
    )]
    NotEmpty {
        database: String,
        count: usize,
        examples: String,
    },
    #[error("{} is not a backup pg_restore {version} can read:\n{output}{}", path.display(), hint_line(.hint))]
    NotAnArchive {
        path: PathBuf,
        version: String,
        output: String,
        hint: &'static str,
    },
    #[error("{what} ({}): {source}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

fn hint_line(hint: &str) -> String {
    if hint.is_empty() {
        String::new()
    } else {
        format!("\nWhat to do: {hint}")
    }
}

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
    fn program(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
}

const PROGRAMS: [&str; 3] = ["pg_dump", "pg_restore", "psql"];

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

fn client_in(dir: &Path) -> Option<PgClient> {
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
fn parse_version(text: &str) -> Option<(u32, String)> {
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

fn debian_bindirs() -> Vec<PathBuf> {
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

fn is_executable(path: &Path) -> bool {
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

// ---------------------------------------------------------------- the connection

/// A database URL split for libpq's programs: everything but the password (argv), and
/// the password (their environment).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Conn {
    /// The URL or key=value string without its password.
    libpq: String,
    password: Option<OsString>,
    /// For messages: the URL with the password shown as ***.
    shown: String,
    /// The database's name, for messages.
    database: String,
}

impl Conn {
    fn parse(url: &str) -> Result<Conn, BackupError> {
        let shown = redact(url);
        let invalid = |reason: String| BackupError::InvalidUrl {
            url: shown.clone(),
            reason,
        };
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            let mut parsed = url::Url::parse(url).map_err(|e| invalid(e.to_string()))?;
            let mut password = parsed
                .password()
                .map(|p| OsString::from_vec(percent_decode(p)));
            // libpq also takes ?password=… (and ?dbname=…, which wins over the path).
            let mut database =
                String::from_utf8_lossy(&percent_decode(parsed.path().trim_start_matches('/')))
                    .into_owned();
            let mut kept = Vec::new();
            for (k, v) in parsed.query_pairs() {
                match &*k {
                    "password" => password = Some(OsString::from(v.into_owned())),
                    "dbname" => {
                        database = v.to_string();
                        kept.push((k.into_owned(), v.into_owned()));
                    }
                    _ => kept.push((k.into_owned(), v.into_owned())),
                }
            }
            parsed
                .set_password(None)
                .map_err(|()| invalid("it cannot carry a password".into()))?;
            if kept.is_empty() {
                parsed.set_query(None);
            } else {
                parsed.query_pairs_mut().clear().extend_pairs(kept);
            }
            if database.is_empty() {
                database = parsed.username().to_string();
            }
            Ok(Conn {
                libpq: parsed.into(),
                password: password.filter(|p| !p.is_empty()),
                shown,
                database,
            })
        } else {
            let pairs = parse_conninfo(url).map_err(invalid)?;
            let mut password = None;
            let mut database = String::new();
            let mut user = String::new();
            let mut kept = Vec::new();
            for (k, v) in pairs {
                match k.as_str() {
                    "password" => password = Some(OsString::from(v)),
                    "dbname" => {
                        database = v.clone();
                        kept.push(format!("{k}={}", quote_conninfo(&v)));
                    }
                    "user" => {
                        user = v.clone();
                        kept.push(format!("{k}={}", quote_conninfo(&v)));
                    }
                    _ => kept.push(format!("{k}={}", quote_conninfo(&v))),
                }
            }
            Ok(Conn {
                libpq: kept.join(" "),
                password: password.filter(|p| !p.is_empty()),
                shown,
                database: if database.is_empty() { user } else { database },
            })
        }
    }

    /// `program` with the connection's environment: the password, no prompt, a timeout.
    fn command(&self, program: &Path) -> Command {
        let mut cmd = Command::new(program);
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        if let Some(p) = &self.password {
            cmd.env("PGPASSWORD", p);
        }
        if std::env::var_os("PGCONNECT_TIMEOUT").is_none() {
            cmd.env("PGCONNECT_TIMEOUT", "10");
        }
        if std::env::var_os("PGAPPNAME").is_none() {
            cmd.env("PGAPPNAME", "toaster");
        }
        cmd
    }

    fn dbname_arg(&self) -> OsString {
        let mut arg = OsString::from("--dbname=");
        arg.push(&self.libpq);
        arg
    }
}

fn percent_decode(text: &str) -> Vec<u8> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2]))
        {
            out.push((h * 16 + l) as u8);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    out
}

/// libpq's `key=value key='quoted \' value'` connection strings.
fn parse_conninfo(text: &str) -> Result<Vec<(String, String)>, String> {
    let mut pairs = Vec::new();
    let mut chars = text.chars().peekable();
    loop {
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.peek().is_none() {
            return Ok(pairs);
        }
        let mut key = String::new();
        while let Some(c) = chars.next_if(|c| *c != '=' && !c.is_whitespace()) {
            key.push(c);
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.next() != Some('=') {
            return Err(format!(
                "expected a postgres:// URL or key=value pairs; {key:?} has no value"
            ));
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        let mut value = String::new();
        if chars.next_if_eq(&'\'').is_some() {
            loop {
                match chars.next() {
                    Some('\\') => value.extend(chars.next()),
                    Some('\'') => break,
                    Some(c) => value.push(c),
                    None => return Err(format!("unterminated quoted value of {key:?}")),
                }
            }
        } else {
            while let Some(c) = chars.next_if(|c| !c.is_whitespace()) {
                if c == '\\' {
                    value.extend(chars.next());
                } else {
                    value.push(c);
                }
            }
        }
        pairs.push((key, value));
    }
}

fn quote_conninfo(value: &str) -> String {
    format!("'{}'", value.replace('\\', "\\\\").replace('\'', "\\'"))
}

// ---------------------------------------------------------------- running them

/// Runs `cmd` to completion; its stdout, or an error with its output and a hint.
async fn run(mut cmd: Command, what: &str, conn: &Conn) -> Result<String, BackupError> {
    let program = PathBuf::from(cmd.as_std().get_program());
    let out = cmd
        .output()
        .await
        .map_err(|source| BackupError::Spawn { program, source })?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if out.status.success() {
        return Ok(stdout);
    }
    let output = scrub(String::from_utf8_lossy(&out.stderr).trim(), conn);
    Err(BackupError::Tool {
        what: format!("{what} ({})", conn.shown),
        status: out.status.to_string(),
        hint: hint(&output),
        output,
    })
}

/// libpq's programs do not print passwords; this makes sure of it.
fn scrub(text: &str, conn: &Conn) -> String {
    match conn.password.as_ref().and_then(|p| p.to_str()) {
        Some(p) if p.len() >= 4 => text.replace(p, "***"),
        _ => text.to_string(),
    }
}

/// What to do about the failures people meet.
fn hint(output: &str) -> &'static str {
    let has = |s: &str| output.contains(s);
    if has("server version mismatch") {
        "the server is newer than this pg_dump: install the client programs of the server's \
         version (or newer) and set TOASTER_PG_BIN to their directory."
    } else if has("unsupported version") && has("file header") {
        "this backup was written by a newer pg_dump: restore it with pg_restore of that \
         version or newer (set TOASTER_PG_BIN to its directory)."
    } else if has("database \"") && has("does not exist") {
        "create the database first (`CREATE DATABASE <name>` or `createdb`), then run this \
         again."
    } else if has("password authentication failed") || has("no password supplied") {
        "check the user and password in --database-url (or PGPASSWORD, ~/.pgpass)."
    } else if has("Connection refused") || has("could not translate host name") || has("timeout") {
        "check that PostgreSQL is running and reachable at the host and port of \
         --database-url."
    } else if has("SSL") || has("certificate") {
        "check the TLS settings in --database-url (sslmode=require, sslrootcert=…)."
    } else if has("permission denied") || has("must be owner") {
        "connect as a role that owns the database's tables (the role the app and \
         `toaster migrate` use)."
    } else {
        ""
    }
}

/// One psql query whose result is a single column; its rows.
async fn psql_rows(client: &PgClient, conn: &Conn, sql: &str) -> Result<Vec<String>, BackupError> {
    let mut cmd = conn.command(&client.program("psql"));
    cmd.args(["-X", "-A", "-t", "-q", "-w", "-v", "ON_ERROR_STOP=1"])
        .arg(conn.dbname_arg())
        .arg("-c")
        .arg(sql);
    let out = run(cmd, "psql", conn).await?;
    Ok(out
        .lines()
        .map(str::to_string)
        .filter(|l| !l.is_empty())
        .collect())
}

/// The server's major version, asked with the newest psql found (psql talks to older
/// and newer servers alike).
async fn server_major(clients: &[PgClient], conn: &Conn) -> Result<u32, BackupError> {
    let newest = clients
        .iter()
        .max_by_key(|c| c.major)
        .ok_or(BackupError::ToolsNotFound)?;
    let rows = psql_rows(newest, conn, "SHOW server_version_num").await?;
    let num: u32 = rows
        .first()
        .and_then(|r| r.trim().parse().ok())
        .ok_or_else(|| BackupError::Tool {
            what: format!("asking {} for its version", conn.shown),
            status: "unexpected answer".into(),
            output: rows.join("\n"),
            hint: "",
        })?;
    // 150020 → 15; before PostgreSQL 10, 90624 → 9 (unsupported either way).
    Ok(num / 10_000)
}

const USER_TABLES: &str = "SELECT format('%I.%I', n.nspname, c.relname) \
     FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
     WHERE c.relkind IN ('r', 'p') \
       AND n.nspname NOT IN ('pg_catalog', 'information_schema') \
       AND n.nspname NOT LIKE 'pg_toast%' \
     ORDER BY (c.relname = 'toaster_migrations') DESC, 1";

// ---------------------------------------------------------------- backup

/// What a backup wrote.
#[derive(Debug, Clone)]
pub struct BackupReport {
    pub file: PathBuf,
    pub bytes: u64,
    /// Tables whose rows the archive holds (TABLE DATA entries).
    pub tables: usize,
    pub database: String,
    pub server_major: u32,
    pub pg_dump: PgClient,
}

impl fmt::Display for BackupReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "wrote {} ({} bytes, the rows of {} tables) from database {} (PostgreSQL {}) with pg_dump {}",
            self.file.display(),
            self.bytes,
            self.tables,
            self.database,
            self.server_major,
            self.pg_dump.version
        )
    }
}

/// Writes a custom-format backup of the database at `url` to `out`.
pub async fn backup(url: &str, out: &Path) -> Result<BackupReport, BackupError> {
    let conn = Conn::parse(url)?;
    let clients = find_clients()?;
    let server = server_major(&clients, &conn).await?;
    let client = choose(&clients, server)?.clone();

    let partial = partial_path(out);
    let mut cmd = conn.command(&client.program("pg_dump"));
    cmd.arg("--format=custom")
        .arg("-w")
        .arg(format!("--lock-wait-timeout={DUMP_LOCK_WAIT_MS}"))
        .arg(OsString::from_iter([
            OsStr::new("--file="),
            partial.as_os_str(),
        ]))
        .arg(conn.dbname_arg());
    let dumped = run(cmd, "pg_dump", &conn).await;
    if let Err(e) = dumped {
        let _ = std::fs::remove_file(&partial);
        return Err(e);
    }
    let tables = match list_archive(&client, &partial, &conn).await {
        Ok(list) => list.table_data,
        Err(e) => {
            let _ = std::fs::remove_file(&partial);
            return Err(e);
        }
    };
    std::fs::rename(&partial, out).map_err(|source| BackupError::Io {
        what: "could not move the finished backup into place",
        path: out.to_path_buf(),
        source,
    })?;
    let bytes = std::fs::metadata(out).map(|m| m.len()).unwrap_or(0);
    Ok(BackupReport {
        file: out.to_path_buf(),
        bytes,
        tables,
        database: conn.database.clone(),
        server_major: server,
        pg_dump: client,
    })
}

fn partial_path(out: &Path) -> PathBuf {
    let mut name = out.file_name().unwrap_or_default().to_os_string();
    name.push(".partial");
    out.with_file_name(name)
}

/// What `pg_restore --list` says an archive holds.
struct ArchiveList {
    table_data: usize,
}

async fn list_archive(
    client: &PgClient,
    file: &Path,
    conn: &Conn,
) -> Result<ArchiveList, BackupError> {
    let mut cmd = Command::new(client.program("pg_restore"));
    cmd.arg("--list")
        .arg(file)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    match run(cmd, "pg_restore --list", conn).await {
        Ok(list) => Ok(ArchiveList {
            table_data: list
                .lines()
                .filter(|l| !l.starts_with(';') && l.contains(" TABLE DATA "))
                .count(),
        }),
        Err(BackupError::Tool { output, hint, .. }) => Err(BackupError::NotAnArchive {
            path: file.to_path_buf(),
            version: client.version.clone(),
            output,
            hint,
        }),
        Err(e) => Err(e),
    }
}

// ---------------------------------------------------------------- restore

#[derive(Debug, Clone, Copy, Default)]
pub struct RestoreOptions {
    /// Drop and recreate the objects the backup contains, even if the target is not empty.
    pub clean: bool,
}

/// What a restore did.
#[derive(Debug, Clone)]
pub struct RestoreReport {
    pub database: String,
    /// Tables in the database afterwards.
    pub tables: usize,
    /// The newest migration recorded in the restored `toaster_migrations`, if any.
    pub latest_migration: Option<String>,
    pub pg_restore: PgClient,
}

impl fmt::Display for RestoreReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "restored into database {} with pg_restore {}: {} tables",
            self.database, self.pg_restore.version, self.tables
        )?;
        match &self.latest_migration {
            Some(m) => write!(
                f,
                ", migrations up to {m}. Next: `toaster migrate` (applies what this version \
                 adds), and empty the key-value store before the app serves again (see \
                 infra/deploy/backup.md)."
            ),
            None => write!(
                f,
                "; no toaster_migrations table: is this a Toaster backup?"
            ),
        }
    }
}

/// Restores the custom-format backup `file` into the database at `url`, which must hold
/// no table unless `options.clean`.
pub async fn restore(
    url: &str,
    file: &Path,
    options: RestoreOptions,
) -> Result<RestoreReport, BackupError> {
    let conn = Conn::parse(url)?;
    std::fs::File::open(file).map_err(|source| BackupError::Io {
        what: "cannot read the backup",
        path: file.to_path_buf(),
        source,
    })?;
    let clients = find_clients()?;
    let server = server_major(&clients, &conn).await?;
    let client = choose(&clients, server)?.clone();
    // Read the archive before touching the database.
    list_archive(&client, file, &conn).await?;

    let tables = psql_rows(&client, &conn, USER_TABLES).await?;
    if !tables.is_empty() && !options.clean {
        let mut examples = tables
            .iter()
            .take(EXAMPLE_TABLES)
            .cloned()
            .collect::<Vec<_>>()
            .join(", ");
        if tables.len() > EXAMPLE_TABLES {
            examples.push_str(", …");
        }
        return Err(BackupError::NotEmpty {
            database: conn.database.clone(),
            count: tables.len(),
            examples,
        });
    }

    apply_archive(&client, &conn, file, options.clean).await?;

    let tables = psql_rows(&client, &conn, USER_TABLES).await?.len();
    let latest_migration = psql_rows(
        &client,
        &conn,
        "SELECT CASE WHEN to_regclass('toaster_migrations') IS NOT NULL THEN \
         (SELECT name FROM toaster_migrations ORDER BY version DESC LIMIT 1) END",
    )
    .await?
    .into_iter()
    .next();
    Ok(RestoreReport {
        database: conn.database.clone(),
        tables,
        latest_migration,
        pg_restore: client,
    })
}

/// What `--clean` drops before restoring, in the restore's transaction: every table (with
/// its partitions, sequences and dependent views), view, sequence and function of schema
/// `public`, where Toaster keeps everything, except what an extension owns.
const DROP_PUBLIC: &str = r#"DO $clean$
DECLARE
    stmt text;
BEGIN
    FOR stmt IN
        SELECT format('DROP %s IF EXISTS %I.%I CASCADE',
                      CASE c.relkind WHEN 'v' THEN 'VIEW' WHEN 'm' THEN 'MATERIALIZED VIEW'
                                     WHEN 'S' THEN 'SEQUENCE' WHEN 'f' THEN 'FOREIGN TABLE'
                                     ELSE 'TABLE' END,
                      n.nspname, c.relname)
        FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f')
          AND NOT c.relispartition
          AND NOT EXISTS (SELECT 1 FROM pg_depend d
                          WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid
                            AND d.deptype = 'e')
        ORDER BY c.relkind IN ('r', 'p') DESC, c.relname
    LOOP
        EXECUTE stmt;
    END LOOP;
    FOR stmt IN
        SELECT format('DROP %s IF EXISTS %I.%I(%s) CASCADE',
                      CASE p.prokind WHEN 'p' THEN 'PROCEDURE' WHEN 'a' THEN 'AGGREGATE'
                                     ELSE 'FUNCTION' END,
                      'public', p.proname, pg_get_function_identity_arguments(p.oid))
        FROM pg_proc p
        WHERE p.pronamespace = 'public'::regnamespace
          AND NOT EXISTS (SELECT 1 FROM pg_depend d
                          WHERE d.classid = 'pg_proc'::regclass AND d.objid = p.oid
                            AND d.deptype = 'e')
    LOOP
        EXECUTE stmt;
    END LOOP;
END
$clean$"#;

/// `pg_restore -f -` (the archive as SQL, made without a connection) fed to one `psql`
/// session inside `BEGIN` … `COMMIT`, with `clean` preceded by [`DROP_PUBLIC`]. `COMMIT`
/// is sent only once pg_restore has exited successfully, so a backup that turns out to
/// be truncated or corrupt halfway leaves the database as it was (psql stops at the
/// first error, and a session that ends inside a transaction is rolled back). Not
/// `pg_restore --clean`: it drops object by object from the archive's list and fails on
/// the constraints of partitions, which only go with their parent.
async fn apply_archive(
    client: &PgClient,
    conn: &Conn,
    file: &Path,
    clean: bool,
) -> Result<(), BackupError> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let spawn_failed = |program: PathBuf| move |source| BackupError::Spawn { program, source };
    let mut script = Command::new(client.program("pg_restore"));
    script
        .args(["--no-owner", "--no-privileges", "--file=-"])
        .arg(file)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut script = script
        .spawn()
        .map_err(spawn_failed(client.program("pg_restore")))?;

    let mut psql = conn.command(&client.program("psql"));
    psql.args(["-X", "-q", "-w", "-v", "ON_ERROR_STOP=1", "-f", "-"])
        .arg(conn.dbname_arg())
        // Notices ("drop cascades to …") are not news.
        .env("PGOPTIONS", "-c client_min_messages=warning")
        .stdin(Stdio::piped());
    let mut psql = psql.spawn().map_err(spawn_failed(client.program("psql")))?;

    let (Some(mut sql), Some(mut script_err), Some(mut to_psql)) = (
        script.stdout.take(),
        script.stderr.take(),
        psql.stdin.take(),
    ) else {
        return Err(BackupError::Spawn {
            program: client.program("psql"),
            source: std::io::Error::other("no pipe between pg_restore and psql"),
        });
    };
    let feed = async move {
        let mut head = String::from("BEGIN;\n");
        if clean {
            head.push_str(DROP_PUBLIC);
            head.push_str(";\n");
        }
        // A write fails only when psql has stopped; its own output says why.
        let fed = async {
            to_psql.write_all(head.as_bytes()).await?;
            tokio::io::copy(&mut sql, &mut to_psql).await?;
            Ok::<_, std::io::Error>(())
        }
        .await;
        let mut stderr = Vec::new();
        let _ = script_err.read_to_end(&mut stderr).await;
        let status = script.wait().await;
        if fed.is_ok() && status.as_ref().is_ok_and(|s| s.success()) {
            let _ = to_psql.write_all(b"COMMIT;\n").await;
        }
        drop(to_psql);
        (status, stderr)
    };
    let (scripted, applied) = tokio::join!(feed, psql.wait_with_output());

    let applied = applied.map_err(spawn_failed(client.program("psql")))?;
    if !applied.status.success() {
        let output = scrub(String::from_utf8_lossy(&applied.stderr).trim(), conn);
        return Err(BackupError::Tool {
            what: format!("applying the backup with psql ({})", conn.shown),
            status: applied.status.to_string(),
            hint: match hint(&output) {
                "" => "the restore was rolled back: the database is as it was.",
                h => h,
            },
            output,
        });
    }
    let (status, stderr) = scripted;
    let status = status.map_err(spawn_failed(client.program("pg_restore")))?;
    if !status.success() {
        return Err(BackupError::Tool {
            what: format!("reading the backup {} with pg_restore", file.display()),
            status: status.to_string(),
            output: String::from_utf8_lossy(&stderr).trim().to_string(),
            hint: "the restore was rolled back: the database is as it was.",
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_read_from_pg_dump() {
        assert_eq!(
            parse_version("pg_dump (PostgreSQL) 15.20 (Debian 15.20-0+deb12u1)\n"),
            Some((15, "15.20".into()))
        );
        assert_eq!(
            parse_version("pg_dump (PostgreSQL) 17.2\n"),
            Some((17, "17.2".into()))
        );
        assert_eq!(
            parse_version("pg_dump (PostgreSQL) 18beta1\n"),
            Some((18, "18beta1".into()))
        );
        assert_eq!(parse_version("something else"), None);
    }

    fn client(major: u32) -> PgClient {
        PgClient {
            dir: PathBuf::from(format!("/usr/lib/postgresql/{major}/bin")),
            major,
            version: format!("{major}.1"),
        }
    }

    #[test]
    fn the_servers_version_wins_else_the_newest_never_an_older_one() {
        let clients = [client(15), client(17), client(16)];
        assert_eq!(choose(&clients, 16).unwrap().major, 16);
        assert_eq!(choose(&clients, 14).unwrap().major, 17);
        match choose(&clients, 18) {
            Err(e @ BackupError::ClientTooOld { .. }) => {
                let text = e.to_string();
                assert!(text.contains("server is version 18"), "{text}");
                assert!(text.contains("postgresql-client-18"), "{text}");
                assert!(text.contains("refuses to dump a server newer"), "{text}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn passwords_leave_the_url_for_the_environment() {
        let c =
            Conn::parse("postgres://toaster:s%40cret%2Fpw@db.example:5433/toaster?sslmode=require")
                .unwrap();
        assert_eq!(
            c.libpq,
            "postgres://toaster@db.example:5433/toaster?sslmode=require"
        );
        assert_eq!(c.password, Some(OsString::from("s@cret/pw")));
        assert_eq!(c.database, "toaster");
        assert!(!c.shown.contains("cret"), "{}", c.shown);

        let c = Conn::parse("postgresql://u@h/db?password=hunter22&application_name=x").unwrap();
        assert_eq!(c.libpq, "postgresql://u@h/db?application_name=x");
        assert_eq!(c.password, Some(OsString::from("hunter22")));

        let c = Conn::parse("postgres://postgres@127.0.0.1:5432/postgres").unwrap();
        assert_eq!(c.libpq, "postgres://postgres@127.0.0.1:5432/postgres");
        assert_eq!(c.password, None);

        let c = Conn::parse("host=db user=toaster password='p \\'q\\' r' dbname = t").unwrap();
        assert_eq!(c.password, Some(OsString::from("p 'q' r")));
        assert_eq!(c.libpq, "host='db' user='toaster' dbname='t'");
        assert_eq!(c.database, "t");
    }

    #[test]
    fn conninfo_values_round_trip_through_quoting() {
        for value in ["plain", "with space", "it's", "back\\slash", ""] {
            let text = format!("k={}", quote_conninfo(value));
            assert_eq!(
                parse_conninfo(&text).unwrap(),
                vec![("k".to_string(), value.to_string())]
            );
        }
    }

    #[test]
    fn hints_name_what_to_do() {
        assert!(
            hint("pg_dump: error: aborting because of server version mismatch").contains("newer")
        );
        assert!(
            hint("connection to server at \"h\" failed: FATAL:  database \"x\" does not exist")
                .contains("CREATE DATABASE")
        );
        assert!(hint("FATAL:  password authentication failed for user \"u\"").contains("password"));
        assert_eq!(hint("something unexpected"), "");
    }

    #[test]
    fn a_partial_backup_sits_next_to_the_final_one() {
        assert_eq!(
            partial_path(Path::new("/b/toaster.dump")),
            PathBuf::from("/b/toaster.dump.partial")
        );
    }
}
