use std::path::Path;

use toaster_setup::database;
use toaster_setup::migrate::{MIGRATION_LOCK_KEY, MigrateError, MigrationReport, migrate};
use toaster_tests::TestDb;

fn write(dir: &Path, name: &str, sql: &str) {
    std::fs::write(dir.join(name), sql).unwrap();
}

fn two_migrations() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "0001_tenants.sql",
        "CREATE TABLE tenants (id text PRIMARY KEY);\nINSERT INTO tenants VALUES ('t1');",
    );
    // 0010 uses 0002's table: numeric order matters, and directory order is arbitrary.
    write(
        dir.path(),
        "0010_devices.sql",
        "CREATE TABLE devices (tenant text REFERENCES tenants, id text, extra text REFERENCES kinds);",
    );
    write(
        dir.path(),
        "0002_kinds.sql",
        "CREATE TABLE kinds (id text PRIMARY KEY);",
    );
    write(dir.path(), "README.md", "not a migration");
    write(
        dir.path(),
        "notes.sql",
        "this is not SQL and not a migration",
    );
    dir
}

async fn recorded(client: &tokio_postgres::Client) -> Vec<(i32, String)> {
    client
        .query(
            "SELECT version, name FROM toaster_migrations ORDER BY version",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
}

async fn table_exists(client: &tokio_postgres::Client, table: &str) -> bool {
    client
        .query_one("SELECT to_regclass($1) IS NOT NULL", &[&table])
        .await
        .unwrap()
        .get(0)
}

#[tokio::test]
async fn migrations_are_applied_in_numeric_order_and_recorded() {
    let db = TestDb::empty().await;
    let dir = two_migrations();
    let mut client = database::connect(&db.url).await.unwrap();

    let report = migrate(&mut client, dir.path()).await.unwrap();

    assert_eq!(
        report.applied,
        ["0001_tenants", "0002_kinds", "0010_devices"]
    );
    assert_eq!(report.already, 0);
    assert_eq!(
        recorded(&client).await,
        [
            (1, "0001_tenants".into()),
            (2, "0002_kinds".into()),
            (10, "0010_devices".into())
        ]
    );
    assert!(table_exists(&client, "devices").await);
    let sha: String = client
        .query_one(
            "SELECT sha256 FROM toaster_migrations WHERE version = 1",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(sha.len(), 64);
}

#[tokio::test]
async fn second_run_changes_nothing() {
    let db = TestDb::empty().await;
    let dir = two_migrations();
    let mut client = database::connect(&db.url).await.unwrap();
    migrate(&mut client, dir.path()).await.unwrap();
    let before: Vec<String> = client
        .query("SELECT version || name || sha256 || applied_at::text FROM toaster_migrations ORDER BY 1", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();

    let report = migrate(&mut client, dir.path()).await.unwrap();

    assert_eq!(
        report,
        MigrationReport {
            applied: vec![],
            already: 3
        }
    );
    let after: Vec<String> = client
        .query("SELECT version || name || sha256 || applied_at::text FROM toaster_migrations ORDER BY 1", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(before, after);
    let tenants: i64 = client
        .query_one("SELECT count(*) FROM tenants", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(tenants, 1, "0001's INSERT ran once");
}

#[tokio::test]
async fn a_new_migration_is_applied_on_the_next_run() {
    let db = TestDb::empty().await;
    let dir = two_migrations();
    let mut client = database::connect(&db.url).await.unwrap();
    migrate(&mut client, dir.path()).await.unwrap();
    write(
        dir.path(),
        "0011_firmware.sql",
        "CREATE TABLE firmware (version text);",
    );

    let report = migrate(&mut client, dir.path()).await.unwrap();

    assert_eq!(
        report,
        MigrationReport {
            applied: vec!["0011_firmware".into()],
            already: 3
        }
    );
    assert!(table_exists(&client, "firmware").await);
}

#[tokio::test]
async fn a_changed_migration_is_refused_and_nothing_is_applied() {
    let db = TestDb::empty().await;
    let dir = two_migrations();
    let mut client = database::connect(&db.url).await.unwrap();
    migrate(&mut client, dir.path()).await.unwrap();
    write(
        dir.path(),
        "0002_kinds.sql",
        "CREATE TABLE kinds (id text PRIMARY KEY, label text);",
    );
    write(
        dir.path(),
        "0011_firmware.sql",
        "CREATE TABLE firmware (version text);",
    );

    let err = migrate(&mut client, dir.path()).await.unwrap_err();

    assert!(
        matches!(err, MigrateError::Changed { ref name, .. } if name == "0002_kinds"),
        "{err}"
    );
    assert!(err.to_string().contains("0002_kinds"), "{err}");
    assert!(
        !table_exists(&client, "firmware").await,
        "pending migrations wait for the fix"
    );
    assert_eq!(recorded(&client).await.len(), 3);
}

#[tokio::test]
async fn a_failing_migration_leaves_nothing_behind() {
    let db = TestDb::empty().await;
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "0001_ok.sql", "CREATE TABLE ok (id int);");
    write(
        dir.path(),
        "0002_broken.sql",
        "CREATE TABLE half (id int);\nINSERT INTO half VALUES (1);\nSELECT no_such_column FROM ok;",
    );
    write(dir.path(), "0003_later.sql", "CREATE TABLE later (id int);");
    let mut client = database::connect(&db.url).await.unwrap();

    let err = migrate(&mut client, dir.path()).await.unwrap_err();

    assert!(
        matches!(err, MigrateError::Apply { ref name, .. } if name == "0002_broken"),
        "{err}"
    );
    assert!(
        err.to_string().contains("no_such_column"),
        "the server's message is shown: {err}"
    );
    assert!(
        table_exists(&client, "ok").await,
        "0001 was committed on its own"
    );
    assert!(
        !table_exists(&client, "half").await,
        "0002 was rolled back whole"
    );
    assert!(
        !table_exists(&client, "later").await,
        "nothing after a failure runs"
    );
    assert_eq!(recorded(&client).await, [(1, "0001_ok".into())]);

    // The lock is released on failure, for this session and others.
    let other = database::connect(&db.url).await.unwrap();
    let free: bool = other
        .query_one("SELECT pg_try_advisory_lock($1)", &[&MIGRATION_LOCK_KEY])
        .await
        .unwrap()
        .get(0);
    assert!(free);
    drop(other);

    // Fixed (it was never recorded, so it may be edited), the run goes on from there.
    write(dir.path(), "0002_broken.sql", "CREATE TABLE half (id int);");
    let report = migrate(&mut client, dir.path()).await.unwrap();
    assert_eq!(
        report,
        MigrationReport {
            applied: vec!["0002_broken".into(), "0003_later".into()],
            already: 1
        }
    );
}

#[tokio::test]
async fn duplicate_numbers_are_refused_before_touching_the_database() {
    let db = TestDb::empty().await;
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "0001_a.sql", "CREATE TABLE a (id int);");
    write(dir.path(), "0002_b.sql", "CREATE TABLE b (id int);");
    write(dir.path(), "02_c.sql", "CREATE TABLE c (id int);");
    let mut client = database::connect(&db.url).await.unwrap();

    let err = migrate(&mut client, dir.path()).await.unwrap_err();

    match &err {
        MigrateError::DuplicateVersion {
            version,
            first,
            second,
        } => {
            assert_eq!(
                (*version, first.as_str(), second.as_str()),
                (2, "0002_b", "02_c")
            );
        }
        other => panic!("expected DuplicateVersion, got {other}"),
    }
    assert!(!table_exists(&client, "toaster_migrations").await);
    assert!(!table_exists(&client, "a").await);
}

#[tokio::test]
async fn a_missing_directory_is_an_error() {
    let db = TestDb::empty().await;
    let mut client = database::connect(&db.url).await.unwrap();
    let err = migrate(&mut client, Path::new("/nonexistent/schemas/sql"))
        .await
        .unwrap_err();
    assert!(matches!(err, MigrateError::Read { .. }), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_runs_apply_each_migration_exactly_once() {
    let db = TestDb::empty().await;
    let dir = tempfile::tempdir().unwrap();
    // Not idempotent on purpose: applied twice, each of these fails or counts twice.
    write(
        dir.path(),
        "0001_counter.sql",
        "CREATE TABLE runs (migration int);\nINSERT INTO runs VALUES (1);",
    );
    write(
        dir.path(),
        "0002_slow.sql",
        "SELECT pg_sleep(0.3);\nCREATE TABLE slow (id int);\nINSERT INTO runs VALUES (2);",
    );
    write(
        dir.path(),
        "0003_more.sql",
        "CREATE TABLE more (id int);\nINSERT INTO runs VALUES (3);",
    );
    const RUNNERS: usize = 6;

    let mut tasks = Vec::new();
    for _ in 0..RUNNERS {
        let url = db.url.clone();
        let path = dir.path().to_path_buf();
        tasks.push(tokio::spawn(async move {
            let mut client = database::connect(&url).await.unwrap();
            migrate(&mut client, &path).await
        }));
    }
    let mut applied = Vec::new();
    for task in tasks {
        let report = task.await.unwrap().expect("every concurrent run succeeds");
        assert_eq!(report.applied.len() + report.already, 3);
        applied.extend(report.applied);
    }

    applied.sort();
    assert_eq!(
        applied,
        ["0001_counter", "0002_slow", "0003_more"],
        "each applied by exactly one run"
    );
    let client = database::connect(&db.url).await.unwrap();
    let runs: Vec<i32> = client
        .query("SELECT migration FROM runs ORDER BY migration", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(runs, [1, 2, 3]);
}
