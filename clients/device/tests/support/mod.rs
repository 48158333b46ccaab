//! What the device tests share: a tenant with a claim token on a real app, a
//! library configuration with short waits, and a small HTTP proxy that sits between
//! the library and the host to lose answers, delay them or answer 503 on cue, and
//! records every exchange with its timing.

#![allow(dead_code)]

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use toaster_device::{Config, Reading, RetryPolicy};
use toaster_tests::TestApp;

pub const MODEL: &str = "t1000";

/// Creates tenant `tenant` (operator API), and a claim token for 100 devices of
/// [`MODEL`]; returns (admin token, claim token).
pub async fn tenant_with_claim(app: &TestApp, tenant: &str) -> (String, String) {
    let http = app.http();
    let response = http
        .post(app.url("/v1/tenants"))
        .bearer_auth(app.operator_token())
        .json(&json!({"id": tenant, "name": tenant}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201, "{}", response.text().await.unwrap());
    let admin = app.admin_token(tenant);
    let response = http
        .post(app.url("/v1/claims"))
        .bearer_auth(&admin)
        .json(&json!({"model": MODEL, "quota": 100, "expires_in_secs": 3600}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let body: Value = response.json().await.unwrap();
    (admin, body["claim_token"].as_str().unwrap().to_owned())
}

/// The library's defaults, with waits short enough for tests.
pub fn config(base_url: &str) -> Config {
    let mut config = Config::new(base_url).unwrap();
    config.request_timeout = Duration::from_secs(10);
    config.retry = RetryPolicy {
        max_attempts: 6,
        base_delay: Duration::from_millis(50),
        max_delay: Duration::from_secs(2),
        max_retry_after: Duration::from_secs(10),
    };
    config
}

/// `n` readings of `metric`, one a second, ending a minute ago.
pub fn readings(metric: &str, n: usize) -> Vec<Reading> {
    let start = toaster_device::now_ms() - 60_000 - n as i64 * 1000;
    (0..n)
        .map(|i| Reading::new(metric, start + i as i64 * 1000, i as f64 * 0.5).unwrap())
        .collect()
}

/// Rows stored for `device`.
pub async fn stored(app: &TestApp, device: &str) -> i64 {
    app.db
        .client()
        .await
        .query_one(
            "SELECT count(*) FROM telemetry WHERE device_id = $1",
            &[&device],
        )
        .await
        .unwrap()
        .get(0)
}

/// What the proxy does with the next request to a path.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Action {
    /// Passes the request and the answer through.
    Forward,
    /// Passes the request on, waits for the server's whole answer (so the request
    /// was processed), then closes the client's connection without answering.
    DropAnswer,
    /// Passes the request on, then holds the answer back for this long and closes
    /// the connection: the client's timeout fires first.
    HoldAnswer(Duration),
    /// Answers 503 with `Retry-After` itself; nothing reaches the server.
    Unavailable { retry_after: u32 },
}

/// One request as the proxy saw it.
#[derive(Debug, Clone)]
pub struct Exchange {
    pub path: String,
    /// When the request arrived.
    pub at: Instant,
    /// When the answer was sent, dropped or made up.
    pub answered: Instant,
    pub status: u16,
    pub retry_after: Option<u64>,
    /// Whether the client got the answer.
    pub delivered: bool,
}

struct State {
    upstream: String,
    http: reqwest::Client,
    plan: Mutex<Vec<(String, Action)>>,
    log: Mutex<Vec<Exchange>>,
    token_lifetime: Mutex<Option<u64>>,
}

pub struct Proxy {
    pub url: String,
    state: Arc<State>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Proxy {
    pub async fn start(upstream: &str) -> Proxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let state = Arc::new(State {
            upstream: upstream.trim_end_matches('/').to_owned(),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .unwrap(),
            plan: Mutex::new(Vec::new()),
            log: Mutex::new(Vec::new()),
            token_lifetime: Mutex::new(None),
        });
        let shared = state.clone();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let state = shared.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |request| handle(state.clone(), request));
                    // An error here is the connection we closed on purpose.
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Proxy { url, state, task }
    }

    /// `action` for the next request whose path starts with `prefix` (plans are used
    /// in the order given, once each).
    pub fn plan(&self, prefix: &str, action: Action) {
        self.state
            .plan
            .lock()
            .unwrap()
            .push((prefix.to_owned(), action));
    }

    /// Makes every token answer say the token lives `secs` seconds.
    pub fn token_lifetime(&self, secs: u64) {
        *self.state.token_lifetime.lock().unwrap() = Some(secs);
    }

    /// Every exchange so far whose path starts with `prefix`, in arrival order.
    pub fn exchanges(&self, prefix: &str) -> Vec<Exchange> {
        let mut log: Vec<Exchange> = self
            .state
            .log
            .lock()
            .unwrap()
            .iter()
            .filter(|e| e.path.starts_with(prefix))
            .cloned()
            .collect();
        log.sort_by_key(|e| e.at);
        log
    }
}

type Answer = Response<Full<Bytes>>;

async fn handle(state: Arc<State>, request: Request<Incoming>) -> Result<Answer, std::io::Error> {
    let at = Instant::now();
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let target = request
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| path.clone());
    let headers = request.headers().clone();
    let body = request
        .into_body()
        .collect()
        .await
        .map_err(std::io::Error::other)?
        .to_bytes();
    let action = {
        let mut plan = state.plan.lock().unwrap();
        match plan.iter().position(|(prefix, _)| path.starts_with(prefix)) {
            Some(i) => plan.remove(i).1,
            None => Action::Forward,
        }
    };
    let record = |status: u16, retry_after: Option<u64>, delivered: bool| {
        state.log.lock().unwrap().push(Exchange {
            path: path.clone(),
            at,
            answered: Instant::now(),
            status,
            retry_after,
            delivered,
        });
    };

    if let Action::Unavailable { retry_after } = action {
        record(503, Some(u64::from(retry_after)), true);
        return Ok(Response::builder()
            .status(503)
            .header("content-type", "application/problem+json")
            .header("retry-after", retry_after.to_string())
            .body(Full::new(Bytes::from_static(
                br#"{"type":"https://toaster.dev/problems/unavailable","title":"Service unavailable","status":503}"#,
            )))
            .unwrap());
    }

    let mut upstream = state
        .http
        .request(method, format!("{}{target}", state.upstream))
        .body(body.to_vec());
    for (name, value) in &headers {
        if !matches!(name.as_str(), "host" | "content-length" | "connection") {
            upstream = upstream.header(name, value);
        }
    }
    let response = upstream.send().await.map_err(std::io::Error::other)?;
    let status = response.status().as_u16();
    let answer_headers = response.headers().clone();
    let mut answer_body = response
        .bytes()
        .await
        .map_err(std::io::Error::other)?
        .to_vec();
    let retry_after = answer_headers
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok());
    if path == "/v1/auth/token"
        && status == 200
        && let Some(secs) = *state.token_lifetime.lock().unwrap()
    {
        let mut token: Value = serde_json::from_slice(&answer_body).unwrap();
        token["expires_in"] = secs.into();
        answer_body = serde_json::to_vec(&token).unwrap();
    }

    match action {
        Action::DropAnswer => {
            record(status, retry_after, false);
            Err(std::io::Error::other("answer dropped on purpose"))
        }
        Action::HoldAnswer(hold) => {
            // Recorded first: the client may hang up, and this future be dropped,
            // before the hold is over.
            record(status, retry_after, false);
            tokio::time::sleep(hold).await;
            Err(std::io::Error::other("answer held back on purpose"))
        }
        _ => {
            record(status, retry_after, true);
            let mut builder = Response::builder().status(status);
            for (name, value) in &answer_headers {
                if !matches!(
                    name.as_str(),
                    "content-length" | "transfer-encoding" | "connection"
                ) {
                    builder = builder.header(name, value);
                }
            }
            Ok(builder.body(Full::new(Bytes::from(answer_body))).unwrap())
        }
    }
}
