//! The host against slow and abusive clients, with real sockets: stalled bodies,
//! idle and trickling connections, too many connections from one address, overload,
//! and requests hyper cannot parse. (The open-file limit case runs `toaster up` in a
//! process of its own: infra/cli/tests/open_files.rs.)

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use toaster_host::Limits;
use toaster_tests::{HostOptions, TestApp, TestDb, TestHost};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

/// A connection from `source` (another loopback address than the test's own client,
/// so per-address limits fall on the attacker, not on the legitimate requests).
async fn connect_from(source: &str, server: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(format!("{source}:0").parse().expect("address"))?;
    socket.connect(server).await
}

/// Everything the server sends until it closes the connection or `wait` passes.
async fn read_until_closed(stream: &mut TcpStream, wait: Duration) -> (Vec<u8>, bool) {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Err(_) => return (out, false),
            Ok(Ok(0)) | Ok(Err(_)) => return (out, true),
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
        }
    }
}

/// The JSON body of a raw HTTP/1.1 answer.
fn body_of(answer: &[u8]) -> Value {
    let text = String::from_utf8_lossy(answer);
    let body = text.split("\r\n\r\n").nth(1).unwrap_or("");
    serde_json::from_str(body).unwrap_or(Value::Null)
}

#[tokio::test]
async fn stalled_bodies_hold_no_slot_and_an_authenticated_request_is_answered_meanwhile() {
    let app = TestApp::start().await;
    let operator = app.operator_token();
    let created = app
        .http()
        .post(app.url("/v1/tenants"))
        .bearer_auth(&operator)
        .json(&json!({"id": "acme", "name": "Acme"}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let admin = app.admin_token("acme");

    // 300 connections from another address, each announcing a 1000-byte body to an
    // unauthenticated endpoint, sending one byte, then nothing.
    let mut stalled = Vec::new();
    for i in 0..300 {
        let path = ["/v1/provision", "/v1/telemetry", "/v1/auth/token"][i % 3];
        let Ok(mut s) = connect_from("127.0.0.2", app.host.addr).await else {
            continue;
        };
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{{"
        );
        if s.write_all(head.as_bytes()).await.is_ok() {
            stalled.push(s);
        }
    }
    tokio::time::sleep(Duration::from_millis(300)).await;

    // Meanwhile the API answers at once.
    let mut latencies = Vec::new();
    for _ in 0..40 {
        let started = Instant::now();
        let r = app
            .http()
            .get(app.url("/v1/auth/me"))
            .bearer_auth(&admin)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        latencies.push(started.elapsed());
    }
    latencies.sort();
    let p99 = latencies[latencies.len() * 99 / 100];
    assert!(p99 < Duration::from_secs(1), "p99 {p99:?} under the attack");

    // One address may hold 256 connections; the rest were refused with a 503.
    let mut refused = 0;
    let mut timed_out = 0;
    for mut s in stalled {
        let (answer, closed) = read_until_closed(&mut s, Duration::from_secs(10)).await;
        let text = String::from_utf8_lossy(&answer);
        if text.starts_with("HTTP/1.1 503") {
            assert!(text.contains("retry-after: "), "{text}");
            assert_eq!(body_of(&answer)["status"], 503);
            refused += 1;
        } else {
            // The stalled body is given up on after the grace period: 408, closed.
            assert!(text.starts_with("HTTP/1.1 408"), "{text}");
            assert!(closed, "the stalled connection is closed");
            timed_out += 1;
        }
    }
    assert_eq!(refused, 300 - 256, "refused over the per-address cap");
    assert_eq!(timed_out, 256);
    app.stop().await;
}

async fn probe_host(limits: Limits) -> (TestHost, TestDb) {
    let db = TestDb::new().await;
    let host = TestHost::start(
        PROBE_APP,
        HostOptions {
            variables: BTreeMap::from([
                ("db_url".to_string(), db.url.clone()),
                ("db_host".to_string(), db.host_port()),
            ]),
            limits,
            ..Default::default()
        },
    )
    .await
    .expect("host starts");
    (host, db)
}

const PROBE_APP: &str = r#"
spin_manifest_version = 2
[application]
name = "hardening"
[variables]
db_url = { required = true, secret = true }
db_host = { default = "127.0.0.1:5432" }
[[trigger.http]]
route = "/probe/..."
component = "probe"
[component.probe]
source = "{wasm:probe}"
allowed_outbound_hosts = ["postgres://{{ db_host }}"]
[component.probe.variables]
component_name = "probe"
db_url = "{{ db_url }}"
"#;

#[tokio::test]
async fn idle_and_trickling_connections_are_closed_by_the_header_timeout() {
    let (host, _db) = probe_host(Limits {
        header_timeout: Duration::from_secs(1),
        ..Limits::default()
    })
    .await;

    // A connection that never sends anything.
    let mut idle = TcpStream::connect(host.addr).await.unwrap();
    let started = Instant::now();
    let (_, closed) = read_until_closed(&mut idle, Duration::from_secs(5)).await;
    assert!(closed, "an idle connection is closed");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );

    // A connection idle after a request (keep-alive) is closed as well.
    let mut kept = TcpStream::connect(host.addr).await.unwrap();
    kept.write_all(b"GET /probe/hello HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let started = Instant::now();
    let (answer, closed) = read_until_closed(&mut kept, Duration::from_secs(5)).await;
    assert!(String::from_utf8_lossy(&answer).starts_with("HTTP/1.1 200"));
    assert!(closed, "an idle keep-alive connection is closed");
    assert!(started.elapsed() < Duration::from_secs(3));

    // Header lines trickling in, one byte every 100 ms: closed at the timeout, not
    // kept alive by the trickle.
    let mut slow = TcpStream::connect(host.addr).await.unwrap();
    slow.write_all(b"GET /probe/hello HTTP/1.1\r\n")
        .await
        .unwrap();
    let started = Instant::now();
    let mut closed = false;
    for byte in b"X-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
        .iter()
        .cycle()
        .take(100)
    {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if slow.write_all(&[*byte]).await.is_err() {
            closed = true;
            break;
        }
        let mut probe = [0u8; 1];
        if let Ok(Ok(0)) =
            tokio::time::timeout(Duration::from_millis(1), slow.read(&mut probe)).await
        {
            closed = true;
            break;
        }
    }
    assert!(closed, "a trickling head is closed");
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );
    host.stop().await;
}

#[tokio::test]
async fn past_the_slot_wait_requests_get_503_with_retry_after() {
    let (host, _db) = probe_host(Limits {
        max_concurrent_requests: 1,
        queue_timeout: Duration::from_millis(300),
        ..Limits::default()
    })
    .await;
    // One request holds the only slot for 3 s.
    let busy = {
        let (http, url) = (host.http.clone(), host.url("/probe/pg"));
        tokio::spawn(async move {
            http.post(url)
                .json(
                    &json!({"steps": [{"op": "query", "sql": "SELECT pg_sleep(3)", "params": []}]}),
                )
                .send()
                .await
                .map(|r| r.status().as_u16())
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    let started = Instant::now();
    let r = host
        .http
        .get(host.url("/probe/hello"))
        .send()
        .await
        .unwrap();
    let waited = started.elapsed();
    assert_eq!(r.status(), 503);
    assert_eq!(r.headers()["retry-after"], "1");
    assert_eq!(r.headers()["content-type"], "application/problem+json");
    assert!(
        waited >= Duration::from_millis(250) && waited < Duration::from_secs(2),
        "shed after the slot wait, not queued: {waited:?}"
    );
    assert_eq!(busy.await.unwrap().unwrap(), 200);
    // With the slot free again, requests are served.
    let r = host
        .http
        .get(host.url("/probe/hello"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    host.stop().await;
}

#[tokio::test]
async fn what_hyper_cannot_parse_is_answered_with_problem_json() {
    let (host, _db) = probe_host(Limits::default()).await;
    let long_path = format!("/probe/{}", "a".repeat(100 * 1024));
    for (request, status) in [
        (format!("GET {long_path} HTTP/1.1\r\nHost: x\r\n\r\n"), 414),
        (
            "GET /probe/hello HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n".to_string(),
            400,
        ),
        (
            format!(
                "GET /probe/hello HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
                "b".repeat(512 * 1024)
            ),
            431,
        ),
    ] {
        let mut s = TcpStream::connect(host.addr).await.unwrap();
        let _ = s.write_all(request.as_bytes()).await;
        let (answer, _) = read_until_closed(&mut s, Duration::from_secs(5)).await;
        let text = String::from_utf8_lossy(&answer);
        assert!(text.starts_with(&format!("HTTP/1.1 {status} ")), "{text}");
        assert!(
            text.contains("content-type: application/problem+json"),
            "{text}"
        );
        assert_eq!(body_of(&answer)["status"], status, "{text}");
    }

    // The host's health endpoint answers GET and HEAD only.
    let r = host.http.post(host.url("/healthz")).send().await.unwrap();
    assert_eq!(r.status(), 405);
    assert_eq!(r.headers()["allow"], "GET, HEAD");
    assert_eq!(r.headers()["content-type"], "application/problem+json");
    let r = host.http.head(host.url("/healthz")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    host.stop().await;
}
