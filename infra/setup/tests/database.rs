use std::time::{Duration, Instant};

use toaster_setup::database::{self, DatabaseError};
use toaster_tests::{TestDb, admin_url};

#[tokio::test]
async fn created_database_is_reachable_at_the_returned_url() {
    let db = TestDb::empty().await;
    let client = database::connect(&db.url).await.unwrap();
    let row = client
        .query_one("SELECT current_database()", &[])
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), db.name);
    database::ping(&db.url).await.unwrap();
}

#[tokio::test]
async fn dropped_database_is_gone_even_with_open_sessions() {
    let name = format!("toaster_test_{:016x}", rand::random::<u64>());
    let url = database::create_database(&admin_url().await, &name)
        .await
        .unwrap();
    let open = database::connect(&url).await.unwrap();
    database::drop_database(&admin_url().await, &name)
        .await
        .unwrap();
    assert!(
        open.simple_query("SELECT 1").await.is_err(),
        "FORCE ends open sessions"
    );
    assert!(database::connect(&url).await.is_err());
    // Dropping what is not there is fine.
    database::drop_database(&admin_url().await, &name)
        .await
        .unwrap();
}

#[tokio::test]
async fn creating_an_existing_database_says_so() {
    let db = TestDb::empty().await;
    let err = database::create_database(&admin_url().await, &db.name)
        .await
        .unwrap_err();
    assert!(
        matches!(err, DatabaseError::AlreadyExists(ref n) if *n == db.name),
        "{err}"
    );
}

#[tokio::test]
async fn invalid_names_are_refused_before_any_sql() {
    for bad in [
        "",
        "Upper",
        "semi;colon",
        "quote\"",
        "space d",
        &"x".repeat(64),
    ] {
        let err = database::create_database("postgres://nobody@127.0.0.1:1/x", bad)
            .await
            .unwrap_err();
        assert!(matches!(err, DatabaseError::InvalidName(_)), "{bad}: {err}");
        let err = database::drop_database("postgres://nobody@127.0.0.1:1/x", bad)
            .await
            .unwrap_err();
        assert!(matches!(err, DatabaseError::InvalidName(_)), "{bad}: {err}");
    }
}

#[tokio::test]
async fn ping_fails_quickly_when_nothing_listens() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let started = Instant::now();
    let err = database::ping(&format!("postgres://postgres@127.0.0.1:{port}/postgres")).await;
    assert!(err.is_err());
    assert!(started.elapsed() < Duration::from_secs(3));
}

#[tokio::test]
async fn ping_times_out_on_a_server_that_never_answers() {
    // Accepts connections and then says nothing, like a hung server.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let _held = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((sock, _)) = listener.accept().await {
            held.push(sock);
        }
    });
    let started = Instant::now();
    let err = database::ping(&format!(
        "postgres://postgres:secret@127.0.0.1:{port}/postgres"
    ))
    .await
    .unwrap_err();
    assert!(matches!(err, DatabaseError::Timeout { .. }), "{err}");
    assert!(started.elapsed() < Duration::from_secs(3));
    assert!(!err.to_string().contains("secret"), "{err}");
}

/// A server that speaks just enough PostgreSQL to show what a client does about TLS: it
/// reads the first message, answers an SSLRequest with `S` and a TLS handshake under a
/// self-signed certificate, and reports whether the client asked for TLS.
async fn fake_tls_postgres() -> (std::net::SocketAddr, tokio::task::JoinHandle<bool>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let (mut socket, _) = listener.accept().await.unwrap();
        let mut first = [0u8; 8];
        socket.read_exact(&mut first).await.unwrap();
        // SSLRequest: length 8, code 80877103.
        let asked_for_tls = first == [0, 0, 0, 8, 4, 210, 22, 47];
        if asked_for_tls {
            socket.write_all(b"S").await.unwrap();
            let cert = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()]).unwrap();
            let key =
                rustls::pki_types::PrivateKeyDer::Pkcs8(cert.signing_key.serialize_der().into());
            let config = rustls::ServerConfig::builder_with_provider(std::sync::Arc::new(
                rustls::crypto::ring::default_provider(),
            ))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![cert.cert.der().clone()], key)
            .unwrap();
            let acceptor = tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(config));
            // The client refuses the certificate: the handshake fails on its side.
            let _ = acceptor.accept(socket).await;
        }
        asked_for_tls
    });
    (addr, task)
}

#[tokio::test]
async fn tls_is_tried_and_a_self_signed_certificate_refused_unless_sslmode_is_disable() {
    // As Spin does (native-tls, system roots): sslmode=prefer (the default) and require
    // try TLS and verify the certificate; nothing falls back to plain text.
    for mode in ["", "?sslmode=prefer", "?sslmode=require"] {
        let (addr, server) = fake_tls_postgres().await;
        let url = format!("postgres://u:secret@{addr}/db{mode}");
        let error = database::connect(&url).await.expect_err(mode).to_string();
        assert!(server.await.unwrap(), "{mode}: the client asked for TLS");
        assert!(error.contains("certificate"), "{mode}: {error}");
        assert!(
            error.contains("sslmode=disable"),
            "the way out is named: {error}"
        );
        assert!(!error.contains("secret"), "no password in errors: {error}");
    }
    // sslmode=disable starts in plain text (the fake server then hangs up).
    let (addr, server) = fake_tls_postgres().await;
    let url = format!("postgres://u@{addr}/db?sslmode=disable");
    assert!(database::connect(&url).await.is_err());
    assert!(
        !server.await.unwrap(),
        "no TLS asked for with sslmode=disable"
    );
}
