//! The HTTP(S) listener: hyper on tokio, one task per connection, and the defences
//! that keep one client from starving the others:
//!
//! - **Connections** are capped in all ([`Limits::max_connections`], by default what
//!   the open-file limit leaves after a reserve for PostgreSQL, the key-value store
//!   and the rest) and per client address; a connection over a cap is answered 503
//!   problem+json with `Retry-After` and closed. Accept errors (out of file
//!   descriptors, say) back off exponentially and are logged at most once per
//!   [`ACCEPT_LOG_EVERY`] with a count, instead of spinning and flooding the log.
//! - **Idle and slow heads**: a connection waiting for a request's head, idle between
//!   requests or trickling header lines, is closed after [`Limits::header_timeout`]
//!   (hyper's header-read timer, which runs whenever a head is awaited).
//! - **Bodies** are read before the request takes a slot, and must keep a minimum rate:
//!   after [`BODY_GRACE`], at least [`BODY_MIN_RATE`] bytes per second on average, and
//!   all of it within [`BODY_READ_TIMEOUT`]; else 408. A client sending a body slowly
//!   holds its own connection, never a slot.
//! - **Slots**: at most [`Limits::max_concurrent_requests`] requests run at once; a
//!   request waits at most [`Limits::queue_timeout`] for one, then gets 503 with
//!   `Retry-After` (load is shed, not queued without bound).
//!
//! `/healthz` is answered by the host itself (GET and HEAD; 405 otherwise); hyper's own
//! answers to requests it cannot parse (414, 431, 400) are rewritten as problem+json
//! (`conn_io`). One access-log line per request; graceful shutdown.

mod conn_io;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::{Bytes, BytesMut};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use wasmtime_wasi_http::p2::bindings::http::types::Scheme;
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;

use crate::guest_output::RequestId;
use toaster_core::problem::ProblemType;

use crate::problem;
use crate::runtime::App;
use crate::runtime::Limits;
use conn_io::{ConnIo, ServiceCalls};

/// The longest a client may take to send a whole request body.
const BODY_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a body may take before the minimum rate applies.
const BODY_GRACE: Duration = Duration::from_secs(5);
/// The slowest average a body may arrive at after [`BODY_GRACE`], in bytes per second.
const BODY_MIN_RATE: f64 = 1024.0;
/// How long in-flight requests get to finish after a shutdown signal.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
/// File descriptors kept back from connections for everything else the host opens
/// (PostgreSQL sessions, the key-value store, compiled components, the runtime).
const FD_RESERVE: usize = 128;
/// Connections at most when the open-file limit allows more.
const MAX_CONNECTIONS_CEILING: usize = 16_384;
/// Seconds a refused or shed client is told to wait.
const RETRY_AFTER_SECS: u32 = 1;
/// At most one log line about failing accepts (or refused connections) this often.
const ACCEPT_LOG_EVERY: Duration = Duration::from_secs(10);
/// How long a refused connection gets to take its 503 before it is closed.
const REFUSAL_WRITE_TIMEOUT: Duration = Duration::from_secs(1);

pub struct TlsFiles<'a> {
    pub cert: &'a Path,
    pub key: &'a Path,
}

pub fn tls_acceptor(files: &TlsFiles<'_>) -> anyhow::Result<tokio_rustls::TlsAcceptor> {
    let certs = rustls_pemfile::certs(&mut std::io::BufReader::new(
        std::fs::File::open(files.cert)
            .with_context(|| format!("cannot read --tls-cert {}", files.cert.display()))?,
    ))
    .collect::<Result<Vec<_>, _>>()
    .with_context(|| {
        format!(
            "--tls-cert {} is not PEM certificates",
            files.cert.display()
        )
    })?;
    if certs.is_empty() {
        anyhow::bail!("--tls-cert {} holds no certificate", files.cert.display());
    }
    let key = rustls_pemfile::private_key(&mut std::io::BufReader::new(
        std::fs::File::open(files.key)
            .with_context(|| format!("cannot read --tls-key {}", files.key.display()))?,
    ))
    .with_context(|| format!("--tls-key {} is not a PEM private key", files.key.display()))?
    .with_context(|| format!("--tls-key {} holds no private key", files.key.display()))?;
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .context("the TLS certificate and key do not match")?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

/// Raises the soft open-file limit to the hard one (what the kernel lets this user
/// have) and returns the soft limit in force.
fn raise_open_file_limit() -> usize {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit write/read the struct we pass and nothing else.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return 1024;
        }
        if limit.rlim_cur < limit.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: limit.rlim_max,
                rlim_max: limit.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                limit = raised;
            }
        }
    }
    usize::try_from(limit.rlim_cur).unwrap_or(usize::MAX)
}

/// The connection cap in force: the configured one, or what the open-file limit
/// leaves after [`FD_RESERVE`].
pub fn connection_cap(limits: &Limits) -> usize {
    let from_files = raise_open_file_limit()
        .saturating_sub(FD_RESERVE)
        .clamp(16, MAX_CONNECTIONS_CEILING);
    match limits.max_connections {
        0 => from_files,
        n => n.min(from_files.max(16)),
    }
}

/// Open connections, in all and per client address.
struct Connections {
    cap: usize,
    per_client: usize,
    open: Mutex<(usize, HashMap<IpAddr, usize>)>,
}

/// One counted connection; uncounted when dropped.
struct Admitted {
    connections: Arc<Connections>,
    client: IpAddr,
}

impl Connections {
    /// Counts a new connection from `client`, unless a cap is reached.
    fn admit(self: &Arc<Self>, client: IpAddr) -> Result<Admitted, &'static str> {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let (total, by_client) = &mut *open;
        if *total >= self.cap {
            return Err("the server has as many connections as it accepts");
        }
        let mine = by_client.entry(client).or_insert(0);
        if *mine >= self.per_client {
            return Err("this client address has as many connections as one address may");
        }
        *mine += 1;
        *total += 1;
        Ok(Admitted {
            connections: self.clone(),
            client,
        })
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        let mut open = self
            .connections
            .open
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let (total, by_client) = &mut *open;
        *total -= 1;
        if let Some(n) = by_client.get_mut(&self.client) {
            *n -= 1;
            if *n == 0 {
                by_client.remove(&self.client);
            }
        }
    }
}

/// Counts events (failed accepts, refusals) and logs them at most once per
/// [`ACCEPT_LOG_EVERY`], with how many there were since the last line.
struct ThrottledLog {
    what: &'static str,
    last: Option<Instant>,
    suppressed: u64,
}

impl ThrottledLog {
    fn new(what: &'static str) -> Self {
        ThrottledLog {
            what,
            last: None,
            suppressed: 0,
        }
    }

    fn record(&mut self, detail: &dyn std::fmt::Display) {
        let now = Instant::now();
        if self
            .last
            .is_some_and(|l| now.duration_since(l) < ACCEPT_LOG_EVERY)
        {
            self.suppressed += 1;
            return;
        }
        let before = std::mem::take(&mut self.suppressed);
        tracing::warn!(
            events_since_last_line = before + 1,
            "{}: {detail}",
            self.what
        );
        self.last = Some(now);
    }
}

/// Serves `app` on `listener` until `shutdown` turns true, then drains.
pub async fn serve(
    app: Arc<App>,
    listener: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    mut shutdown: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let limits = app.limits().clone();
    let permits = Arc::new(Semaphore::new(limits.max_concurrent_requests));
    let connections = Arc::new(Connections {
        cap: connection_cap(&limits),
        per_client: limits.max_connections_per_client.max(1),
        open: Mutex::new((0, HashMap::new())),
    });
    tracing::debug!(
        cap = connections.cap,
        per_client = connections.per_client,
        "connection limits"
    );
    let mut accept_errors = ThrottledLog::new("accept failed; backing off");
    let mut refusals = ThrottledLog::new("connection refused");
    let mut backoff = Duration::ZERO;
    let mut tasks = tokio::task::JoinSet::new();
    loop {
        let (stream, client) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => {
                    backoff = Duration::ZERO;
                    a
                }
                Err(e) => {
                    // Out of file descriptors (or another transient failure): wait
                    // before trying again, longer each time, so as not to spin.
                    accept_errors.record(&e);
                    backoff = (backoff * 2).clamp(Duration::from_millis(10), Duration::from_secs(1));
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = shutdown.changed() => break,
                    }
                    continue;
                }
            },
            _ = shutdown.changed() => break,
        };
        let admitted = match connections.admit(client.ip()) {
            Ok(a) => a,
            Err(why) => {
                refusals.record(&format_args!("{client}: {why}"));
                tasks.spawn(refuse(stream, why));
                while tasks.try_join_next().is_some() {}
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let app = app.clone();
        let permits = permits.clone();
        let tls = tls.clone();
        let stop = shutdown.clone();
        tasks.spawn(async move {
            let _admitted = admitted;
            match tls {
                None => serve_connection(app, permits, stream, client, Scheme::Http, stop).await,
                Some(acceptor) => {
                    let Ok(Ok(stream)) =
                        tokio::time::timeout(Duration::from_secs(10), acceptor.accept(stream))
                            .await
                    else {
                        return;
                    };
                    serve_connection(app, permits, stream, client, Scheme::Https, stop).await
                }
            }
        });
        while tasks.try_join_next().is_some() {}
    }
    drop(listener);
    // In-flight connections were told to finish; wait for them, bounded.
    let _ = tokio::time::timeout(DRAIN_TIMEOUT, async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    tasks.abort_all();
    Ok(())
}

/// Answers a connection over a cap with 503 problem+json and closes it.
async fn refuse(mut stream: tokio::net::TcpStream, why: &'static str) {
    let answer = problem::raw(ProblemType::Unavailable, why, Some(RETRY_AFTER_SECS));
    let _ = tokio::time::timeout(REFUSAL_WRITE_TIMEOUT, async {
        let _ = stream.write_all(&answer).await;
        let _ = stream.shutdown().await;
    })
    .await;
}

/// Serves one connection's requests until it closes, its head timer fires, or the
/// server stops (then in-flight requests finish first).
async fn serve_connection<S>(
    app: Arc<App>,
    permits: Arc<Semaphore>,
    stream: S,
    client: SocketAddr,
    scheme: Scheme,
    mut stop: watch::Receiver<bool>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let calls = ServiceCalls::default();
    let header_timeout = app.limits().header_timeout;
    let service = {
        let calls = calls.clone();
        hyper::service::service_fn(move |req| {
            calls.called();
            let app = app.clone();
            let permits = permits.clone();
            let scheme = scheme.clone();
            async move {
                Ok::<_, std::convert::Infallible>(handle(app, permits, req, client, scheme).await)
            }
        })
    };
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout);
    let conn = builder.serve_connection(TokioIo::new(ConnIo::new(stream, calls)), service);
    tokio::pin!(conn);
    tokio::select! {
        r = conn.as_mut() => { let _ = r; }
        _ = stop.changed() => {
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        }
    }
}

async fn handle(
    app: Arc<App>,
    permits: Arc<Semaphore>,
    req: hyper::Request<Incoming>,
    client: SocketAddr,
    scheme: Scheme,
) -> http::Response<HyperOutgoingBody> {
    let started = Instant::now();
    // The id the component's output lines carry too (`crate::guest_output`).
    let request_id = RequestId::next();
    // What the access line needs, copied only when the line is written.
    let logged = tracing::enabled!(target: "toaster::access", tracing::Level::INFO)
        .then(|| (req.method().clone(), req.uri().path().to_string()));
    let (resp, component) = route(app, permits, req, client, scheme, request_id).await;
    if let Some((method, path)) = logged {
        tracing::info!(
            target: "toaster::access",
            %request_id,
            %method,
            path = %path.chars().take(256).collect::<String>(),
            component = component.as_deref().unwrap_or("-"),
            status = resp.status().as_u16(),
            duration_us = started.elapsed().as_micros() as u64,
        );
    }
    resp
}

/// Why a request body was not read.
#[derive(Debug, PartialEq, Eq)]
enum BodyError {
    TooLarge,
    TooSlow,
    Broken,
}

/// The latest moment the body may still be arriving, having sent `received` bytes so
/// far since `started`: [`BODY_GRACE`] plus one second per [`BODY_MIN_RATE`] bytes,
/// and never past [`BODY_READ_TIMEOUT`].
fn body_deadline(started: Instant, received: usize) -> Instant {
    let earned = BODY_GRACE + Duration::from_secs_f64(received as f64 / BODY_MIN_RATE);
    started + earned.min(BODY_READ_TIMEOUT)
}

/// Reads a request body whole, bounded by `limit` bytes and by the minimum rate.
async fn read_body(mut body: Incoming, limit: usize) -> Result<Bytes, BodyError> {
    let started = Instant::now();
    let mut bytes = BytesMut::new();
    loop {
        let deadline = tokio::time::Instant::from_std(body_deadline(started, bytes.len()));
        let frame = match tokio::time::timeout_at(deadline, body.frame()).await {
            Err(_) => return Err(BodyError::TooSlow),
            Ok(None) => return Ok(bytes.freeze()),
            Ok(Some(Err(_))) => return Err(BodyError::Broken),
            Ok(Some(Ok(frame))) => frame,
        };
        if let Ok(data) = frame.into_data() {
            if bytes.len() + data.len() > limit {
                return Err(BodyError::TooLarge);
            }
            bytes.extend_from_slice(&data);
        }
    }
}

async fn route(
    app: Arc<App>,
    permits: Arc<Semaphore>,
    req: hyper::Request<Incoming>,
    client: SocketAddr,
    scheme: Scheme,
    request_id: RequestId,
) -> (http::Response<HyperOutgoingBody>, Option<String>) {
    if req.uri().path() == "/healthz" {
        if !matches!(*req.method(), http::Method::GET | http::Method::HEAD) {
            return (problem::method_not_allowed("GET, HEAD"), None);
        }
        return (health(&app).await, None);
    }
    let limits = app.limits();
    let limit = limits.max_body_bytes;
    if let Some(len) = req
        .headers()
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        && len > limit as u64
    {
        return (problem::too_large(limit), None);
    }
    let (parts, body) = req.into_parts();
    // The body first, holding no slot: a slow sender keeps only its own connection.
    let body = match read_body(body, limit).await {
        Ok(b) => b,
        Err(BodyError::TooLarge) => return (problem::too_large(limit), None),
        Err(BodyError::TooSlow) => return (problem::request_timeout(), None),
        Err(BodyError::Broken) => {
            return (
                problem::bad_request("the request body could not be read"),
                None,
            );
        }
    };
    let _permit = match tokio::time::timeout(limits.queue_timeout, permits.acquire()).await {
        Ok(Ok(permit)) => permit,
        Ok(Err(_)) => return (problem::unavailable("the server is shutting down"), None),
        Err(_) => return (problem::overloaded(RETRY_AFTER_SECS), None),
    };
    app.handle(parts, body, client, scheme, request_id).await
}

async fn health(app: &App) -> http::Response<HyperOutgoingBody> {
    match app.health().await {
        Ok(()) => {
            let mut r = http::Response::new(
                Full::new(Bytes::from_static(b"{\"status\":\"ok\"}"))
                    .map_err(|never| match never {})
                    .boxed_unsync(),
            );
            r.headers_mut().insert(
                http::header::CONTENT_TYPE,
                http::HeaderValue::from_static("application/json"),
            );
            r
        }
        Err(e) => {
            tracing::warn!("health check failed: {e}");
            problem::unavailable("PostgreSQL is not answering")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_body_earns_time_by_arriving() {
        let t0 = Instant::now();
        assert_eq!(body_deadline(t0, 0), t0 + BODY_GRACE);
        // 10 KiB earn 10 s more at 1 KiB/s.
        assert_eq!(
            body_deadline(t0, 10 * 1024),
            t0 + BODY_GRACE + Duration::from_secs(10)
        );
        // Never past the total timeout, however fast.
        assert_eq!(body_deadline(t0, 1 << 30), t0 + BODY_READ_TIMEOUT);
    }

    #[test]
    fn connections_are_capped_in_all_and_per_address() {
        let c = Arc::new(Connections {
            cap: 3,
            per_client: 2,
            open: Mutex::new((0, HashMap::new())),
        });
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let a1 = c.admit(a).unwrap();
        let _a2 = c.admit(a).unwrap();
        assert!(c.admit(a).is_err(), "a third from one address");
        let _b1 = c.admit(b).unwrap();
        assert!(c.admit(b).is_err(), "a fourth in all");
        drop(a1);
        let _b2 = c.admit(b).expect("a closed connection frees its place");
        assert!(c.admit(a).is_err());
    }

    #[test]
    fn the_connection_cap_leaves_files_for_the_rest() {
        let files = raise_open_file_limit();
        let cap = connection_cap(&Limits::default());
        assert!(
            cap + FD_RESERVE <= files.max(16 + FD_RESERVE),
            "{cap} of {files}"
        );
        let asked = Limits {
            max_connections: 20,
            ..Limits::default()
        };
        assert_eq!(connection_cap(&asked), 20);
    }
}
