//! The database URL as libpq's programs take it (the password apart, in their
//! environment), and running them with it (see [`super`]).

use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use toaster_setup::database::redact;
use tokio::process::Command;

use super::BackupError;
use super::programs::PgClient;

// ---------------------------------------------------------------- the connection

/// A database URL split for libpq's programs: everything but the password (argv), and
/// the password (their environment).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Conn {
    /// The URL or key=value string without its password.
    pub(super) libpq: String,
    pub(super) password: Option<OsString>,
    /// For messages: the URL with the password shown as ***.
    pub(super) shown: String,
    /// The database's name, for messages.
    pub(super) database: String,
}

impl Conn {
    pub(super) fn parse(url: &str) -> Result<Conn, BackupError> {
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
    pub(super) fn command(&self, program: &Path) -> Command {
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

    pub(super) fn dbname_arg(&self) -> OsString {
        let mut arg = OsString::from("--dbname=");
        arg.push(&self.libpq);
        arg
    }
}

pub(super) fn percent_decode(text: &str) -> Vec<u8> {
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
pub(super) fn parse_conninfo(text: &str) -> Result<Vec<(String, String)>, String> {
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

pub(super) fn quote_conninfo(value: &str) -> String {
    format!("'{}'", value.replace('\\', "\\\\").replace('\'', "\\'"))
}

// ---------------------------------------------------------------- running them

/// Runs `cmd` to completion; its stdout, or an error with its output and a hint.
pub(super) async fn run(mut cmd: Command, what: &str, conn: &Conn) -> Result<String, BackupError> {
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
pub(super) fn scrub(text: &str, conn: &Conn) -> String {
    match conn.password.as_ref().and_then(|p| p.to_str()) {
        Some(p) if p.len() >= 4 => text.replace(p, "***"),
        _ => text.to_string(),
    }
}

/// What to do about the failures people meet.
pub(super) fn hint(output: &str) -> &'static str {
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
pub(super) async fn psql_rows(
    client: &PgClient,
    conn: &Conn,
    sql: &str,
) -> Result<Vec<String>, BackupError> {
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
pub(super) async fn server_major(clients: &[PgClient], conn: &Conn) -> Result<u32, BackupError> {
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

pub(super) const USER_TABLES: &str = "SELECT format('%I.%I', n.nspname, c.relname) \
     FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
     WHERE c.relkind IN ('r', 'p') \
       AND n.nspname NOT IN ('pg_catalog', 'information_schema') \
       AND n.nspname NOT LIKE 'pg_toast%' \
     ORDER BY (c.relname = 'toaster_migrations') DESC, 1";
