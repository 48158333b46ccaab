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
use std::path::{Path, PathBuf};
use std::process::Stdio;

use tokio::process::Command;

mod conn;
mod programs;
mod restore;

#[cfg(test)]
use conn::*;
use conn::{Conn, run, server_major};
#[cfg(test)]
use programs::*;
pub use programs::{PgClient, choose, find_clients};
pub use restore::{RestoreOptions, RestoreReport, restore};

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
