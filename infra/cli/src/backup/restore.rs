//! `toaster restore`: a backup into an empty database, whole or not at all (see
//! [`super`]).

use std::fmt;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use tokio::process::Command;

use super::conn::{Conn, USER_TABLES, hint, psql_rows, scrub, server_major};
use super::programs::{PgClient, choose, find_clients};
use super::{BackupError, EXAMPLE_TABLES, list_archive};

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
pub(super) const DROP_PUBLIC: &str = r#"DO $clean$
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
pub(super) async fn apply_archive(
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
