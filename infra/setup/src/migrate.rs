//! Forward-only schema migrations: numbered SQL files applied in order, each once.
//!
//! A migration is a file `NNNN_name.sql` (digits, underscore, name) in one directory
//! (`schemas/sql`). Each is applied in its own transaction together with its row in
//! `toaster_migrations`, so a failing migration leaves neither half its changes nor a record.
//! Files must therefore not contain `BEGIN`/`COMMIT` or statements that cannot run in a
//! transaction (`CREATE INDEX CONCURRENTLY`).
//!
//! Forward-only: a landed migration is never edited. Its SHA-256 is recorded, and a file whose
//! content no longer matches stops the run before anything is applied; fix forward with a new
//! migration instead.
//!
//! Concurrent runs (several replicas or `toaster migrate` processes starting together) are
//! serialised by a session-level advisory lock, [`MIGRATION_LOCK_KEY`], held for the whole run:
//! the first applies, the others wait, then find nothing left to do.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use tokio_postgres::Client;

/// The `pg_advisory_lock` key of migration runs: the ASCII bytes of "toasterm" as a big-endian
/// i64. Anything else taking this key would block migrations.
pub const MIGRATION_LOCK_KEY: i64 = i64::from_be_bytes(*b"toasterm");

const CREATE_TABLE: &str = "CREATE TABLE IF NOT EXISTS toaster_migrations (
    version    integer PRIMARY KEY,
    name       text NOT NULL,
    sha256     text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
)";

#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    #[error("could not read migrations from {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("migrations {first} and {second} have the same number {version}")]
    DuplicateVersion {
        version: i32,
        first: String,
        second: String,
    },
    #[error(
        "migration {name} was changed after it was applied (recorded sha256 {recorded}, file \
         {file}). Migrations are forward-only: restore the file and add a new migration instead."
    )]
    Changed {
        name: String,
        recorded: String,
        file: String,
    },
    #[error("migration {name} failed, nothing of it was applied: {}", crate::database::detail(.source))]
    Apply {
        name: String,
        #[source]
        source: tokio_postgres::Error,
    },
    #[error("{what}: {}", crate::database::detail(.source))]
    Database {
        what: &'static str,
        #[source]
        source: tokio_postgres::Error,
    },
}

/// What a run did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MigrationReport {
    /// Names (`0001_init`) of the migrations this run applied, in order.
    pub applied: Vec<String>,
    /// How many of the directory's migrations had been applied before.
    pub already: usize,
}

/// One migration file.
#[derive(Debug)]
struct Migration {
    version: i32,
    /// File name without `.sql`, e.g. `0001_init`.
    name: String,
    sql: String,
    sha256: String,
}

/// Applies the migrations in `dir` that the database does not have yet.
#[tracing::instrument(skip_all, fields(dir = %dir.display()))]
pub async fn migrate(client: &mut Client, dir: &Path) -> Result<MigrationReport, MigrateError> {
    // Read and check the files before touching the database.
    let migrations = read_dir(dir)?;

    let locked: bool = client
        .query_one("SELECT pg_try_advisory_lock($1)", &[&MIGRATION_LOCK_KEY])
        .await
        .map_err(db("could not take the migration lock"))?
        .get(0);
    if !locked {
        tracing::info!("another migration run holds the lock; waiting for it");
        client
            .execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK_KEY])
            .await
            .map_err(db("could not take the migration lock"))?;
    }

    let result = migrate_locked(client, &migrations).await;

    // The lock would also go with the session; the caller may keep using it.
    let unlocked = client
        .execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK_KEY])
        .await
        .map_err(db("could not release the migration lock"));
    let report = result?;
    unlocked?;
    Ok(report)
}

async fn migrate_locked(
    client: &mut Client,
    migrations: &[Migration],
) -> Result<MigrationReport, MigrateError> {
    client
        .batch_execute(CREATE_TABLE)
        .await
        .map_err(db("could not create toaster_migrations"))?;
    let recorded: BTreeMap<i32, (String, String)> = client
        .query("SELECT version, name, sha256 FROM toaster_migrations", &[])
        .await
        .map_err(db("could not read toaster_migrations"))?
        .iter()
        .map(|row| (row.get(0), (row.get(1), row.get(2))))
        .collect();

    // Every check before the first change: a changed file stops the whole run.
    for m in migrations {
        if let Some((_, sha)) = recorded.get(&m.version)
            && *sha != m.sha256
        {
            return Err(MigrateError::Changed {
                name: m.name.clone(),
                recorded: sha.clone(),
                file: m.sha256.clone(),
            });
        }
    }
    let known: Vec<i32> = migrations.iter().map(|m| m.version).collect();
    for (version, (name, _)) in &recorded {
        if !known.contains(version) {
            // The database is ahead of these files: e.g. an older replica during a rollout.
            tracing::warn!(
                version,
                name,
                "the database has a migration these files do not"
            );
        }
    }

    let mut report = MigrationReport::default();
    for m in migrations {
        if recorded.contains_key(&m.version) {
            report.already += 1;
            continue;
        }
        apply(client, m).await?;
        tracing::info!(migration = %m.name, "applied migration");
        report.applied.push(m.name.clone());
    }
    Ok(report)
}

async fn apply(client: &mut Client, m: &Migration) -> Result<(), MigrateError> {
    let failed = |source| MigrateError::Apply {
        name: m.name.clone(),
        source,
    };
    let tx = client.transaction().await.map_err(failed)?;
    tx.batch_execute(&m.sql).await.map_err(failed)?;
    tx.execute(
        "INSERT INTO toaster_migrations (version, name, sha256) VALUES ($1, $2, $3)",
        &[&m.version, &m.name, &m.sha256],
    )
    .await
    .map_err(failed)?;
    tx.commit().await.map_err(failed)
    // On an error, dropping `tx` rolls it back.
}

/// The migrations in `dir`, ordered by number.
fn read_dir(dir: &Path) -> Result<Vec<Migration>, MigrateError> {
    let read_err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| MigrateError::Read { path, source }
    };
    let mut by_version: BTreeMap<i32, Migration> = BTreeMap::new();
    for entry in std::fs::read_dir(dir).map_err(read_err(dir))? {
        let path = entry.map_err(read_err(dir))?.path();
        let Some(file_name) = path.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        let Some((version, name)) = parse_file_name(file_name) else {
            if file_name.ends_with(".sql") {
                tracing::warn!(
                    file = file_name,
                    "ignoring an .sql file not named NNNN_name.sql"
                );
            }
            continue;
        };
        let sql = std::fs::read_to_string(&path).map_err(read_err(&path))?;
        let sha256 = hex::encode(Sha256::digest(sql.as_bytes()));
        let migration = Migration {
            version,
            name: name.to_string(),
            sql,
            sha256,
        };
        if let Some(other) = by_version.get(&version) {
            let (first, second) = if other.name < migration.name {
                (other.name.clone(), migration.name)
            } else {
                (migration.name, other.name.clone())
            };
            return Err(MigrateError::DuplicateVersion {
                version,
                first,
                second,
            });
        }
        by_version.insert(version, migration);
    }
    Ok(by_version.into_values().collect())
}

/// `0001_init.sql` → `(1, "0001_init")`.
fn parse_file_name(file_name: &str) -> Option<(i32, &str)> {
    let stem = file_name.strip_suffix(".sql")?;
    let (digits, rest) = stem.split_once('_')?;
    let valid = !digits.is_empty()
        && digits.bytes().all(|b| b.is_ascii_digit())
        && !rest.is_empty()
        && rest
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    valid.then_some(())?;
    Some((digits.parse().ok()?, stem))
}

fn db(what: &'static str) -> impl FnOnce(tokio_postgres::Error) -> MigrateError {
    move |source| MigrateError::Database { what, source }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names() {
        assert_eq!(parse_file_name("0001_init.sql"), Some((1, "0001_init")));
        assert_eq!(
            parse_file_name("0042_add_rollouts.sql"),
            Some((42, "0042_add_rollouts"))
        );
        for ignored in [
            "README.md",
            "0001_init.sql.bak",
            "init.sql",
            "0001.sql",
            "0001_.sql",
            "x001_a.sql",
            "_a.sql",
        ] {
            assert_eq!(parse_file_name(ignored), None, "{ignored}");
        }
    }

    #[test]
    fn lock_key_is_stable() {
        // Changing it would let an old and a new binary migrate at once.
        assert_eq!(MIGRATION_LOCK_KEY, 0x746f_6173_7465_726d);
    }
}
