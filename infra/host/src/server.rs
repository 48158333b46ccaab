//! The HTTP(S) listener: hyper on tokio, one task per connection, a semaphore
//! capping requests in flight, request bodies read (and bounded) before a component
//! runs, `/healthz` answered by the host itself, one access-log line per request,
//! and graceful shutdown.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use wasmtime_wasi_http::p2::bindings::http::types::Scheme;
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;

use crate::problem;
use crate::runtime::App;

/// How long a client has to send its request body.
const BODY_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// How long in-flight requests get to finish after a shutdown signal.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

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

/// Serves `app` on `listener` until `shutdown` turns true, then drains.
pub async fn serve(
    app: Arc<App>,
    listener: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    mut shutdown: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let permits = Arc::new(Semaphore::new(app.limits().max_concurrent_requests));
    let mut connections = tokio::task::JoinSet::new();
    loop {
        let (stream, client) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.changed() => break,
        };
        let _ = stream.set_nodelay(true);
        let app = app.clone();
        let permits = permits.clone();
        let tls = tls.clone();
        let mut stop = shutdown.clone();
        connections.spawn(async move {
            let scheme = if tls.is_some() {
                Scheme::Https
            } else {
                Scheme::Http
            };
            let service = hyper::service::service_fn(move |req| {
                let app = app.clone();
                let permits = permits.clone();
                let scheme = scheme.clone();
                async move {
                    Ok::<_, std::convert::Infallible>(
                        handle(app, permits, req, client, scheme).await,
                    )
                }
            });
            let builder = hyper::server::conn::http1::Builder::new();
            match tls {
                None => {
                    let conn = builder.serve_connection(TokioIo::new(stream), service);
                    tokio::pin!(conn);
                    tokio::select! {
                        r = conn.as_mut() => { let _ = r; }
                        _ = stop.changed() => {
                            conn.as_mut().graceful_shutdown();
                            let _ = conn.await;
                        }
                    }
                }
                Some(acceptor) => {
                    let stream = match tokio::time::timeout(
                        Duration::from_secs(10),
                        acceptor.accept(stream),
                    )
                    .await
                    {
                        Ok(Ok(s)) => s,
                        _ => return,
                    };
                    let conn = builder.serve_connection(TokioIo::new(stream), service);
                    tokio::pin!(conn);
                    tokio::select! {
                        r = conn.as_mut() => { let _ = r; }
                        _ = stop.changed() => {
                            conn.as_mut().graceful_shutdown();
                            let _ = conn.await;
                        }
                    }
                }
            }
        });
        while connections.try_join_next().is_some() {}
    }
    drop(listener);
    // In-flight connections were told to finish; wait for them, bounded.
    let _ = tokio::time::timeout(DRAIN_TIMEOUT, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    connections.abort_all();
    Ok(())
}

async fn handle(
    app: Arc<App>,
    permits: Arc<Semaphore>,
    req: hyper::Request<Incoming>,
    client: SocketAddr,
    scheme: Scheme,
) -> http::Response<HyperOutgoingBody> {
    let started = Instant::now();
    // What the access line needs, copied only when the line is written.
    let logged = tracing::enabled!(target: "toaster::access", tracing::Level::INFO)
        .then(|| (req.method().clone(), req.uri().path().to_string()));
    let (resp, component) = route(app, permits, req, client, scheme).await;
    if let Some((method, path)) = logged {
        tracing::info!(
            target: "toaster::access",
            %method,
            path = %path.chars().take(256).collect::<String>(),
            component = component.as_deref().unwrap_or("-"),
            status = resp.status().as_u16(),
            duration_us = started.elapsed().as_micros() as u64,
        );
    }
    resp
}

async fn route(
    app: Arc<App>,
    permits: Arc<Semaphore>,
    req: hyper::Request<Incoming>,
    client: SocketAddr,
    scheme: Scheme,
) -> (http::Response<HyperOutgoingBody>, Option<String>) {
    if req.uri().path() == "/healthz" {
        return (health(&app).await, None);
    }
    let limit = app.limits().max_body_bytes;
    if let Some(len) = req
        .headers()
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        && len > limit as u64
    {
        return (problem::too_large(limit), None);
    }
    let Ok(_permit) = permits.acquire().await else {
        return (problem::unavailable("the server is shutting down"), None);
    };
    let (parts, body) = req.into_parts();
    let body =
        match tokio::time::timeout(BODY_READ_TIMEOUT, Limited::new(body, limit).collect()).await {
            Ok(Ok(b)) => b.to_bytes(),
            Ok(Err(e))
                if e.downcast_ref::<http_body_util::LengthLimitError>()
                    .is_some() =>
            {
                return (problem::too_large(limit), None);
            }
            Ok(Err(_)) => {
                return (
                    problem::bad_request("the request body could not be read"),
                    None,
                );
            }
            Err(_) => return (problem::request_timeout(), None),
        };
    app.handle(parts, body, client, scheme).await
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
