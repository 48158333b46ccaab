use toaster_setup::database;
use toaster_setup::localpg::{LocalPgError, LocalPostgres, find_binaries};

fn is_root() -> bool {
    // SAFETY: geteuid cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// A temporary directory PostgreSQL's user can reach when we run as root, whatever the umask.
fn reachable_tempdir() -> tempfile::TempDir {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().unwrap();
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    tmp
}

#[test]
fn server_binaries_are_found() {
    let bins = find_binaries().expect("PostgreSQL server binaries are installed on this machine");
    for bin in [&bins.initdb, &bins.pg_ctl, &bins.postgres] {
        assert!(bin.is_file(), "{}", bin.display());
    }
}

#[test]
fn missing_binaries_say_how_to_install_them() {
    let msg = LocalPgError::BinariesNotFound.to_string();
    assert!(msg.contains("apt-get install postgresql"), "{msg}");
    assert!(msg.contains("--database-url"), "{msg}");
}

#[tokio::test]
async fn a_local_cluster_keeps_its_data_and_port_across_restarts() {
    let tmp = reachable_tempdir();
    let dir = tmp.path().join("pg");

    let pg = LocalPostgres::builder(&dir)
        .ephemeral(true)
        .start()
        .await
        .unwrap();
    assert!(pg.started_by_us());
    let port = pg.port();
    assert_eq!(
        pg.url("postgres"),
        format!("postgres://postgres@127.0.0.1:{port}/postgres")
    );
    let client = database::connect(&pg.url("postgres")).await.unwrap();
    client
        .batch_execute("CREATE TABLE kept (id int); INSERT INTO kept VALUES (42);")
        .await
        .unwrap();
    let listen: String = client
        .query_one("SHOW listen_addresses", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(listen, "127.0.0.1");
    drop(client);

    // A second start while it runs reuses it, and leaves it running when dropped.
    let again = LocalPostgres::start(&dir).await.unwrap();
    assert!(!again.started_by_us());
    assert_eq!(again.port(), port);
    drop(again);
    database::ping(&pg.url("postgres"))
        .await
        .expect("still running");

    pg.stop().await.unwrap();
    assert!(
        database::ping(&format!("postgres://postgres@127.0.0.1:{port}/postgres"))
            .await
            .is_err()
    );

    let pg = LocalPostgres::builder(&dir)
        .ephemeral(true)
        .start()
        .await
        .unwrap();
    assert!(pg.started_by_us());
    assert_eq!(
        pg.port(),
        port,
        "the port is kept for the next `toaster up`"
    );
    let client = database::connect(&pg.url("postgres")).await.unwrap();
    let id: i32 = client
        .query_one("SELECT id FROM kept", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(id, 42);
    drop(client);
    pg.stop().await.unwrap();
}

#[tokio::test]
async fn dropping_a_cluster_we_started_stops_it() {
    let tmp = reachable_tempdir();
    let pg = LocalPostgres::builder(&tmp.path().join("pg"))
        .ephemeral(true)
        .start()
        .await
        .unwrap();
    let url = pg.url("postgres");
    database::ping(&url).await.unwrap();
    drop(pg);
    assert!(database::ping(&url).await.is_err());
}

#[tokio::test]
async fn as_root_an_unreachable_directory_is_explained() {
    if !is_root() {
        eprintln!("skipped: only root hands the cluster to another user");
        return;
    }
    // Like a home directory: root's, mode 0700, so the postgres user cannot search it.
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().unwrap();
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
    let err = LocalPostgres::builder(&tmp.path().join("a/pg"))
        .ephemeral(true)
        .start()
        .await
        .unwrap_err();
    assert!(matches!(err, LocalPgError::NotTraversable { .. }), "{err}");
    let msg = err.to_string();
    assert!(msg.contains(&tmp.path().display().to_string()), "{msg}");
    assert!(msg.contains("chmod o+x"), "{msg}");
}

#[tokio::test]
async fn a_failed_start_shows_the_server_log() {
    let tmp = reachable_tempdir();
    let dir = tmp.path().join("pg");
    let pg = LocalPostgres::builder(&dir)
        .ephemeral(true)
        .start()
        .await
        .unwrap();
    pg.stop().await.unwrap();
    // A setting the server rejects at startup.
    let conf = dir.join("data/postgresql.conf");
    let mut text = std::fs::read_to_string(&conf).unwrap();
    text.push_str("\nshared_buffers = 'plenty'\n");
    std::fs::write(&conf, text).unwrap();

    let err = LocalPostgres::builder(&dir)
        .ephemeral(true)
        .start()
        .await
        .unwrap_err();

    let msg = err.to_string();
    assert!(matches!(err, LocalPgError::Command { .. }), "{msg}");
    assert!(msg.contains("pg_ctl start"), "{msg}");
    assert!(
        msg.contains("shared_buffers"),
        "the log's tail names the problem: {msg}"
    );
}
