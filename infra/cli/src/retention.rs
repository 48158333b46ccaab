//! `toaster retention`: the daily maintenance a scheduler (cron, the Kubernetes CronJob in
//! infra/deploy/spinkube/) runs against the database, with no token and no HTTP:
//!
//! 1. `toaster_ensure_telemetry_partitions(now(), now())` (0002): today through 7 days
//!    ahead exist, so no ingest batch pays for creating them;
//! 2. `toaster_retention_run(tenant)` (0004): drops the daily partitions past every
//!    tenant's raw retention and deletes rows and rollups past each tenant's own;
//! 3. `control_retention_run(keep, tenant)` (0007): stores overdue pending commands as
//!    `expired` and deletes finished commands older than `--command-retention`
//!    (default 30 days).
//!
//! Each is idempotent; the first two are serialised in the database by advisory
//! locks, and the third's statements are safe to run concurrently (a second run finds
//! nothing left to do). The session
//! sets `lock_timeout`: dropping a partition needs an ACCESS EXCLUSIVE lock on
//! `telemetry`, and while it waits for one (behind a long `pg_dump`, say) every ingest
//! statement would queue behind it. Better to give up and let the next run do it.

use std::fmt;
use std::time::Duration;

use tokio_postgres::Client;
use tokio_postgres::error::SqlState;

use toaster_setup::database::detail;

#[derive(Debug, thiserror::Error)]
pub enum RetentionError {
    #[error(
        "the database has no {function}: apply the migrations first (`toaster migrate \
         --database-url …`)"
    )]
    NotMigrated { function: &'static str },
    #[error(
        "gave up after waiting {waited:?} for a lock on the telemetry tables (another session \
         holds them: a backup, a long query or another maintenance run). Nothing was removed; \
         the next run will do it. Schedule retention apart from backups."
    )]
    LockTimeout { waited: Duration },
    #[error("{what}: {}", detail(.source))]
    Database {
        what: &'static str,
        #[source]
        source: tokio_postgres::Error,
    },
}

/// What one run did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetentionReport {
    /// Daily partitions created ahead.
    pub partitions_created: i32,
    /// Tenants whose policy was applied.
    pub tenants: i64,
    pub partitions_dropped: Vec<String>,
    pub raw_rows_deleted: i64,
    pub minute_rows_deleted: i64,
    pub hour_rows_deleted: i64,
    /// Pending commands found past their expiry and stored as expired.
    pub commands_expired: i64,
    /// Finished commands older than the command retention, deleted.
    pub commands_deleted: i64,
}

/// How long finished commands are kept unless `--command-retention` says otherwise.
pub const DEFAULT_COMMAND_RETENTION: Duration = Duration::from_secs(30 * 86_400);

impl fmt::Display for RetentionReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} partition(s) created ahead; {} tenant(s): {} partition(s) dropped{}, {} raw, {} minute and {} hour row(s) deleted; {} command(s) expired, {} deleted",
            self.partitions_created,
            self.tenants,
            self.partitions_dropped.len(),
            if self.partitions_dropped.is_empty() {
                String::new()
            } else {
                format!(" ({})", self.partitions_dropped.join(", "))
            },
            self.raw_rows_deleted,
            self.minute_rows_deleted,
            self.hour_rows_deleted,
            self.commands_expired,
            self.commands_deleted
        )
    }
}

/// Creates the partitions ahead, then applies every tenant's retention (`tenant`: only
/// that one's rows, rollups and commands; partitions past everyone's policy go either
/// way), keeping finished commands for `command_retention`.
#[tracing::instrument(skip_all)]
pub async fn run(
    client: &Client,
    tenant: Option<&str>,
    lock_timeout: Duration,
    command_retention: Duration,
) -> Result<RetentionReport, RetentionError> {
    client
        .batch_execute(&format!(
            "SET lock_timeout = {}",
            lock_timeout.as_millis().max(1)
        ))
        .await
        .map_err(|source| RetentionError::Database {
            what: "could not set lock_timeout",
            source,
        })?;
    let failed = |function: &'static str, what: &'static str| {
        move |source: tokio_postgres::Error| match source.code() {
            Some(c) if *c == SqlState::UNDEFINED_FUNCTION => {
                RetentionError::NotMigrated { function }
            }
            Some(c) if *c == SqlState::LOCK_NOT_AVAILABLE => RetentionError::LockTimeout {
                waited: lock_timeout,
            },
            _ => RetentionError::Database { what, source },
        }
    };
    let partitions_created: i32 = client
        .query_one(
            "SELECT toaster_ensure_telemetry_partitions(now(), now())",
            &[],
        )
        .await
        .map_err(failed(
            "toaster_ensure_telemetry_partitions",
            "creating partitions ahead failed",
        ))?
        .get(0);
    let row = client
        .query_one(
            "SELECT tenant_count, partitions_dropped, raw_rows_deleted, minute_rows_deleted, \
             hour_rows_deleted FROM toaster_retention_run($1::text)",
            &[&tenant],
        )
        .await
        .map_err(failed("toaster_retention_run", "the retention run failed"))?;
    let keep_secs = i64::try_from(command_retention.as_secs()).unwrap_or(i64::MAX);
    let commands = client
        .query_one(
            "SELECT commands_expired, commands_deleted FROM control_retention_run($1::int8, $2::text)",
            &[&keep_secs, &tenant],
        )
        .await
        .map_err(failed("control_retention_run", "the command retention run failed"))?;
    Ok(RetentionReport {
        commands_expired: commands.get(0),
        commands_deleted: commands.get(1),
        partitions_created,
        tenants: row.get(0),
        partitions_dropped: row.get(1),
        raw_rows_deleted: row.get(2),
        minute_rows_deleted: row.get(3),
        hour_rows_deleted: row.get(4),
    })
}
