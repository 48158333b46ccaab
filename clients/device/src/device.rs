//! A provisioned device talking to Toaster: its access token, and every call with
//! the retry rules of [`RetryPolicy`].
//!
//! Rules, in one place:
//! - 2xx: done.
//! - 401 on a call with an access token: the token is dropped, the device logs in
//!   again (a new assertion) and resends once; a second 401 is final.
//! - 408, 429, 500, 502, 503, 504, and no answer at all (refused connection,
//!   timeout, connection lost before the answer): wait (`Retry-After` when given,
//!   else exponential backoff with full jitter) and resend, up to
//!   `max_attempts`. Every call the library makes may be resent: telemetry and OTA
//!   reports are idempotent on the server, a check is a read, and each login signs a
//!   new assertion.
//! - Any other 4xx: final, with the server's problem details ([`Error::Refused`]).

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use reqwest::header::CONTENT_TYPE;
use reqwest::{Method, RequestBuilder};
use serde::{Deserialize, Serialize};
use tracing::debug;

use crate::error::{Error, FlushError};
use crate::key::{AssertionClaims, DeviceKey};
use crate::ota::{OtaError, ReportAck, ReportStatus, SignedManifest, SigningKey, Update};
use crate::retry::RetryPolicy;
use crate::telemetry::{FlushReport, Reading, Receipt, TelemetryBuffer};
use crate::transport::{Answer, Http, Step, bump, refused};

const JWT_BEARER: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";

/// When to replace an access token that still works: when less than
/// `max(min_remaining, fraction × lifetime)` of it is left, but never earlier than
/// half-way through its life (so a short-lived token does not mean a login per call).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RefreshPolicy {
    pub min_remaining: Duration,
    pub fraction: f64,
}

impl Default for RefreshPolicy {
    fn default() -> Self {
        RefreshPolicy {
            min_remaining: Duration::from_secs(60),
            fraction: 0.2,
        }
    }
}

impl RefreshPolicy {
    /// Whether a token of `lifetime`, obtained `age` ago, should be replaced now.
    pub fn is_due(&self, lifetime: Duration, age: Duration) -> bool {
        let by_fraction = lifetime.mul_f64(self.fraction.clamp(0.0, 1.0));
        let margin = self.min_remaining.max(by_fraction).min(lifetime / 2);
        lifetime.saturating_sub(age) <= margin
    }
}

/// How a device talks to the server.
#[derive(Debug, Clone)]
pub struct Config {
    base_url: String,
    /// One attempt's limit, answer included.
    pub request_timeout: Duration,
    pub connect_timeout: Duration,
    pub retry: RetryPolicy,
    /// Readings per request when flushing a [`TelemetryBuffer`] (the server takes up
    /// to 5,000 by default).
    pub batch_size: usize,
    /// `exp - iat` of login assertions; at most an hour.
    pub assertion_lifetime: Duration,
    pub refresh: RefreshPolicy,
    /// The manifest signing key to trust. Pin it in production: without it the key
    /// is fetched from the same server that sends the manifests (see
    /// [`Device::check_update`]).
    pub signing_key: Option<SigningKey>,
    /// An HTTP client to share (many simulated devices in one process); its own
    /// timeouts are replaced per request by `request_timeout`.
    pub http: Option<reqwest::Client>,
}

impl Config {
    /// Defaults for a server at `base_url` (`https://toaster.example.com`, or
    /// `http://127.0.0.1:3000` for a local one).
    pub fn new(base_url: &str) -> Result<Config, Error> {
        let parsed = url::Url::parse(base_url)
            .map_err(|e| Error::Config(format!("base URL {base_url:?}: {e}")))?;
        if !matches!(parsed.scheme(), "http" | "https") || parsed.host().is_none() {
            return Err(Error::Config(format!(
                "base URL {base_url:?}: use http:// or https:// and a host"
            )));
        }
        if parsed.query().is_some() || parsed.fragment().is_some() {
            return Err(Error::Config(format!(
                "base URL {base_url:?}: no query or fragment"
            )));
        }
        Ok(Config {
            base_url: parsed.as_str().trim_end_matches('/').to_owned(),
            request_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(10),
            retry: RetryPolicy::default(),
            batch_size: 500,
            assertion_lifetime: Duration::from_secs(300),
            refresh: RefreshPolicy::default(),
            signing_key: None,
            http: None,
        })
    }

    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base_url)
    }

    pub(crate) fn client(&self) -> Result<reqwest::Client, Error> {
        if let Some(http) = &self.http {
            return Ok(http.clone());
        }
        reqwest::Client::builder()
            .connect_timeout(self.connect_timeout)
            .user_agent(concat!("toaster-device/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|source| Error::Request {
                what: "HTTP client",
                source,
            })
    }
}

/// Who the device is to the server: what provisioning answered (keep it beside the
/// key; [`Identity::save`]), or what an admin registered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    /// The `iss` of its assertions.
    pub tenant_id: String,
    /// The `sub` of its assertions.
    pub device_id: String,
    /// The `aud` of its assertions.
    #[serde(default = "default_audience")]
    pub audience: String,
    #[serde(default = "default_token_endpoint")]
    pub token_endpoint: String,
    /// Manifests for another model are refused when this is known.
    #[serde(default)]
    pub model: Option<String>,
    #[serde(default)]
    pub channel: Option<String>,
    #[serde(default)]
    pub tags: Vec<String>,
}

fn default_audience() -> String {
    "toaster".into()
}

fn default_token_endpoint() -> String {
    "/v1/auth/token".into()
}

impl Identity {
    /// A device an admin registered (`POST /v1/devices`).
    pub fn new(tenant_id: &str, device_id: &str) -> Identity {
        Identity {
            tenant_id: tenant_id.into(),
            device_id: device_id.into(),
            audience: default_audience(),
            token_endpoint: default_token_endpoint(),
            model: None,
            channel: None,
            tags: Vec::new(),
        }
    }

    /// Writes the identity as JSON (it holds no secret).
    pub fn save(&self, path: &Path) -> std::io::Result<()> {
        let json = serde_json::to_vec_pretty(self).map_err(std::io::Error::other)?;
        std::fs::write(path, json)
    }

    pub fn load(path: &Path) -> std::io::Result<Identity> {
        let bytes = std::fs::read(path)?;
        serde_json::from_slice(&bytes).map_err(std::io::Error::other)
    }
}

/// Counters since the device was made, for logs and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// HTTP requests sent (every attempt).
    pub requests: u64,
    /// Token exchanges that succeeded.
    pub logins: u64,
    /// 401s answered by logging in again.
    pub relogins: u64,
    /// Attempts after a failed one.
    pub retries: u64,
    /// 429 answers.
    pub rate_limited: u64,
    /// 503 answers.
    pub unavailable: u64,
    /// Attempts without an answer (timeout, connection refused or lost).
    pub no_answer: u64,
    /// Time spent waiting before retries.
    pub waited: Duration,
}

#[derive(Debug, Clone)]
struct AccessToken {
    value: String,
    obtained: Instant,
    lifetime: Duration,
}

impl AccessToken {
    fn remaining(&self) -> Duration {
        self.lifetime.saturating_sub(self.obtained.elapsed())
    }
}

#[derive(Deserialize)]
struct TokenAnswer {
    access_token: String,
    expires_in: u64,
}

#[derive(Deserialize)]
struct PublishedKey {
    public_key: String,
    key_id: String,
}

/// A provisioned device. Cheap to clone; clones share the token and counters, so
/// several tasks of one device log in once.
#[derive(Clone)]
pub struct Device {
    inner: Arc<Inner>,
}

struct Inner {
    http: Http,
    key: DeviceKey,
    identity: Identity,
    token: tokio::sync::Mutex<Option<AccessToken>>,
    manifest_key: tokio::sync::Mutex<Option<SigningKey>>,
}

impl std::fmt::Debug for Device {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Device")
            .field("identity", &self.inner.identity)
            .field("base_url", &self.inner.http.config.base_url)
            .finish_non_exhaustive()
    }
}

impl Device {
    /// A device that is already registered (provisioned earlier, or by an admin).
    /// Nothing is sent until the first call.
    pub fn new(config: Config, key: DeviceKey, identity: Identity) -> Result<Device, Error> {
        Ok(Device {
            inner: Arc::new(Inner {
                http: Http::new(config)?,
                key,
                identity,
                token: tokio::sync::Mutex::new(None),
                manifest_key: tokio::sync::Mutex::new(None),
            }),
        })
    }

    /// Zero-touch provisioning (`POST /v1/provision`): registers `key`'s public half
    /// as device `device_id` with the claim token, and returns the device. Save
    /// [`Device::identity`] with the key: provisioning spends one unit of the claim.
    ///
    /// Resent after a lost answer like every call; if the lost attempt had in fact
    /// registered the device, the resend is refused with 409 (the id is taken) and
    /// the device, whose tenant the lost answer held, should log in with
    /// [`Device::new`] and the tenant it was told out of band.
    pub async fn provision(
        config: Config,
        key: DeviceKey,
        claim_token: &str,
        device_id: &str,
        tags: &[String],
    ) -> Result<Device, Error> {
        const WHAT: &str = "provision";
        let http = Http::new(config)?;
        let mut body = serde_json::json!({
            "claim_token": claim_token,
            "device_id": device_id,
            "public_key": key.public_key_pem()?,
        });
        if !tags.is_empty() {
            body["tags"] = serde_json::json!(tags);
        }
        let url = http.config.url("/v1/provision");
        let answer = http
            .call(WHAT, |client| Ok(client.post(&url).json(&body)))
            .await?;
        let identity: Identity = answer.json(WHAT)?;
        if identity.device_id != device_id {
            return Err(Error::Protocol {
                what: WHAT,
                detail: format!("registered {:?}, not {device_id:?}", identity.device_id),
            });
        }
        Ok(Device {
            inner: Arc::new(Inner {
                http,
                key,
                identity,
                token: tokio::sync::Mutex::new(None),
                manifest_key: tokio::sync::Mutex::new(None),
            }),
        })
    }

    pub fn identity(&self) -> &Identity {
        &self.inner.identity
    }

    pub fn key(&self) -> &DeviceKey {
        &self.inner.key
    }

    pub fn config(&self) -> &Config {
        &self.inner.http.config
    }

    pub fn stats(&self) -> Stats {
        let c = &self.inner.http.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        Stats {
            requests: get(&c.requests),
            logins: get(&c.logins),
            relogins: get(&c.relogins),
            retries: get(&c.retries),
            rate_limited: get(&c.rate_limited),
            unavailable: get(&c.unavailable),
            no_answer: get(&c.no_answer),
            waited: Duration::from_micros(get(&c.waited_micros)),
        }
    }

    /// Exchanges a fresh assertion for an access token (`POST /v1/auth/token`),
    /// whether or not the current one is still good.
    pub async fn login(&self) -> Result<(), Error> {
        let mut slot = self.inner.token.lock().await;
        *slot = Some(self.exchange().await?);
        Ok(())
    }

    /// A valid access token, logging in first when there is none or it is due for
    /// refresh ([`RefreshPolicy`]). Concurrent callers wait for one login.
    pub async fn access_token(&self) -> Result<String, Error> {
        let mut slot = self.inner.token.lock().await;
        let refresh = self.config().refresh;
        if let Some(token) = slot.as_ref()
            && !refresh.is_due(token.lifetime, token.obtained.elapsed())
        {
            return Ok(token.value.clone());
        }
        match self.exchange().await {
            Ok(token) => {
                let value = token.value.clone();
                *slot = Some(token);
                Ok(value)
            }
            // A refresh that fails while the old token still has a little life left
            // does not stop the device: the next call tries again.
            Err(e) if e.is_transient() => match slot.as_ref() {
                Some(old) if old.remaining() > Duration::from_secs(5) => {
                    debug!(error = %e, "token refresh failed; using the current token");
                    Ok(old.value.clone())
                }
                _ => Err(e),
            },
            Err(e) => Err(e),
        }
    }

    async fn exchange(&self) -> Result<AccessToken, Error> {
        const WHAT: &str = "login";
        let identity = &self.inner.identity;
        let config = self.config();
        let endpoint = if identity.token_endpoint.starts_with('/') {
            config.url(&identity.token_endpoint)
        } else {
            identity.token_endpoint.clone()
        };
        let obtained = Instant::now();
        let answer = self
            .inner
            .http
            .call(WHAT, |client| {
                // A new assertion every attempt: the server refuses a jti it has seen,
                // and a lost answer may mean the last one was spent.
                let assertion = self.inner.key.sign_assertion(&AssertionClaims {
                    tenant: &identity.tenant_id,
                    device: &identity.device_id,
                    audience: &identity.audience,
                    lifetime: config.assertion_lifetime,
                })?;
                let form = url::form_urlencoded::Serializer::new(String::new())
                    .append_pair("grant_type", JWT_BEARER)
                    .append_pair("assertion", &assertion)
                    .finish();
                Ok(client
                    .post(&endpoint)
                    .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
                    .body(form))
            })
            .await?;
        let token: TokenAnswer = answer.json(WHAT)?;
        bump(&self.inner.http.counters.logins);
        Ok(AccessToken {
            value: token.access_token,
            obtained,
            lifetime: Duration::from_secs(token.expires_in),
        })
    }

    /// Forgets `used` if it is still the current token (another task may have
    /// replaced it already).
    async fn forget_token(&self, used: &str) {
        let mut slot = self.inner.token.lock().await;
        if slot.as_ref().is_some_and(|t| t.value == used) {
            *slot = None;
        }
    }

    /// A call with the device's access token, resent as the rules say.
    pub(crate) async fn call(
        &self,
        what: &'static str,
        build: impl Fn(&reqwest::Client) -> RequestBuilder,
    ) -> Result<Answer, Error> {
        let http = &self.inner.http;
        let mut failures = 0;
        let mut logged_in_again = false;
        loop {
            let token = self.access_token().await?;
            match http.attempt(build(&http.client).bearer_auth(&token)).await {
                Step::Done(answer) => return Ok(answer),
                Step::Unauthorized(_) if !logged_in_again => {
                    // Revoked (disabled then enabled, key rotated) or expired early:
                    // one fresh login, then the same request again.
                    debug!(what, "401: logging in again");
                    logged_in_again = true;
                    bump(&http.counters.relogins);
                    self.forget_token(&token).await;
                }
                Step::Unauthorized(answer) | Step::Refused(answer) => {
                    return Err(refused(what, answer));
                }
                Step::Broken(source) => return Err(Error::Request { what, source }),
                Step::Retry(last) => {
                    failures += 1;
                    http.wait_before_retry(what, failures, last).await?;
                }
            }
        }
    }

    /// Sends one batch (`POST /v1/telemetry`), resending it after a lost answer or
    /// an overload until the server confirms it. Safe: the server stores each
    /// (metric, ts) once, and the receipt says how many readings this request stored
    /// and how many were already there (`duplicates`, from an attempt whose answer
    /// was lost).
    pub async fn post_telemetry(&self, readings: &[Reading]) -> Result<Receipt, Error> {
        const WHAT: &str = "post telemetry";
        if readings.is_empty() {
            return Ok(Receipt::default());
        }
        let body =
            serde_json::to_vec(&serde_json::json!({ "readings": readings })).map_err(|e| {
                Error::Protocol {
                    what: WHAT,
                    detail: e.to_string(),
                }
            })?;
        let url = self.config().url("/v1/telemetry");
        let sends = AtomicU32::new(0);
        let answer = self
            .call(WHAT, |client| {
                sends.fetch_add(1, Ordering::Relaxed);
                client
                    .post(&url)
                    .header(CONTENT_TYPE, "application/json")
                    .body(body.clone())
            })
            .await?;
        let mut receipt: Receipt = answer.json(WHAT)?;
        if receipt.received != readings.len() as u64 {
            return Err(Error::Protocol {
                what: WHAT,
                detail: format!(
                    "the server received {} readings of {}",
                    receipt.received,
                    readings.len()
                ),
            });
        }
        receipt.attempts = sends.load(Ordering::Relaxed);
        Ok(receipt)
    }

    /// Sends the buffer's readings in batches of `batch_size`, oldest first, until
    /// it is empty. A batch leaves the buffer only once the server confirmed it, or
    /// refused it for good (then the flush stops and hands the batch back in
    /// [`FlushError::dropped`]); on any other failure it stays for the next flush.
    pub async fn flush(&self, buffer: &TelemetryBuffer) -> Result<FlushReport, FlushError> {
        let _one_at_a_time = buffer.flushing.lock().await;
        let mut flushed = FlushReport::default();
        let size = self.config().batch_size.max(1);
        loop {
            let batch = buffer.front(size);
            if batch.is_empty() {
                return Ok(flushed);
            }
            match self.post_telemetry(&batch).await {
                Ok(receipt) => {
                    buffer.remove_front(batch.len());
                    flushed.add(&receipt);
                }
                Err(error) if error.is_batch_fault() => {
                    buffer.remove_front(batch.len());
                    return Err(FlushError {
                        flushed,
                        error,
                        dropped: batch,
                    });
                }
                Err(error) => {
                    return Err(FlushError {
                        flushed,
                        error,
                        dropped: Vec::new(),
                    });
                }
            }
        }
    }

    /// The published manifest signing key (`GET /v1/ota/signing-key`), its
    /// `key_id` checked against the key itself.
    pub async fn fetch_signing_key(&self) -> Result<SigningKey, Error> {
        const WHAT: &str = "fetch the signing key";
        let url = self.config().url("/v1/ota/signing-key");
        let answer = self
            .inner
            .http
            .call(WHAT, |client| Ok(client.get(&url)))
            .await?;
        let published: PublishedKey = answer.json(WHAT)?;
        let key = SigningKey::from_pem(&published.public_key)?;
        if !key.key_id().eq_ignore_ascii_case(&published.key_id) {
            return Err(Error::Protocol {
                what: WHAT,
                detail: format!(
                    "key_id {} does not match the key ({})",
                    published.key_id,
                    key.key_id()
                ),
            });
        }
        Ok(key)
    }

    /// The key to verify a manifest that names `key_id`: the pinned one if any; else
    /// the fetched one, fetched on first use and again when a manifest names another
    /// key (the server's key was rotated).
    async fn manifest_key(&self, key_id: &str) -> Result<SigningKey, Error> {
        if let Some(pinned) = &self.config().signing_key {
            return Ok(pinned.clone());
        }
        let mut cached = self.inner.manifest_key.lock().await;
        if let Some(key) = cached.as_ref()
            && key.key_id().eq_ignore_ascii_case(key_id)
        {
            return Ok(key.clone());
        }
        let key = self.fetch_signing_key().await?;
        *cached = Some(key.clone());
        Ok(key)
    }

    /// Asks whether an update is waiting for a device running `current_version`
    /// (`GET /v1/ota/check`). `Some` only with a manifest whose signature verified
    /// (against [`Config::signing_key`] if pinned, else the published key) and, when
    /// the device's model is known, for this model.
    pub async fn check_update(&self, current_version: &str) -> Result<Option<Update>, Error> {
        const WHAT: &str = "check for an update";
        let mut url = url::Url::parse(&self.config().url("/v1/ota/check"))
            .map_err(|e| Error::Config(format!("base URL: {e}")))?;
        url.query_pairs_mut()
            .append_pair("version", current_version);
        let answer = self
            .call(WHAT, |client| client.request(Method::GET, url.clone()))
            .await?;
        if answer.status == 204 {
            return Ok(None);
        }
        let signed: SignedManifest = answer.json(WHAT)?;
        let key = self.manifest_key(&signed.key_id).await?;
        let update = key.verify(&signed)?;
        if let Some(model) = &self.inner.identity.model
            && update.manifest.model.as_str() != model
        {
            return Err(OtaError::WrongModel {
                expected: model.clone(),
                got: update.manifest.model.to_string(),
            }
            .into());
        }
        Ok(Some(update))
    }

    /// Reports progress on an update (`POST /v1/ota/report`); `error` explains a
    /// failure. Resending the same status is harmless, so it is resent like
    /// telemetry.
    pub async fn report_update(
        &self,
        rollout_id: &str,
        status: ReportStatus,
        version: &str,
        error: Option<&str>,
    ) -> Result<ReportAck, Error> {
        const WHAT: &str = "report on an update";
        let mut body = serde_json::json!({
            "rollout_id": rollout_id,
            "status": status,
            "version": version,
        });
        if let Some(error) = error {
            body["error"] = error.into();
        }
        let url = self.config().url("/v1/ota/report");
        let answer = self
            .call(WHAT, |client| client.post(&url).json(&body))
            .await?;
        answer.json(WHAT)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: Duration = Duration::from_secs(60);

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn a_15_minute_token_is_refreshed_with_three_minutes_left() {
        let p = RefreshPolicy::default();
        // 20% of 900 s = 180 s > 60 s.
        assert!(!p.is_due(secs(900), secs(0)));
        assert!(!p.is_due(secs(900), secs(719)));
        assert!(p.is_due(secs(900), secs(720)));
        assert!(p.is_due(secs(900), secs(2000)));
    }

    #[test]
    fn a_short_token_is_refreshed_a_minute_before_but_not_before_half_time() {
        let p = RefreshPolicy::default();
        // 20% of 200 s = 40 s < 60 s: the minute wins.
        assert!(!p.is_due(secs(200), secs(139)));
        assert!(p.is_due(secs(200), secs(140)));
        // 60 s of a 90 s token would mean refreshing after 30 s: half-time instead.
        assert!(!p.is_due(secs(90), secs(44)));
        assert!(p.is_due(secs(90), secs(45)));
        // A 2 s token lives a second.
        assert!(!p.is_due(secs(2), Duration::from_millis(900)));
        assert!(p.is_due(secs(2), secs(1)));
        assert!(p.is_due(Duration::ZERO, Duration::ZERO));
    }

    #[test]
    fn the_margin_follows_the_policy() {
        let p = RefreshPolicy {
            min_remaining: MIN * 5,
            fraction: 0.0,
        };
        assert!(!p.is_due(secs(3600), secs(3299)));
        assert!(p.is_due(secs(3600), secs(3300)));
    }

    #[test]
    fn base_urls_are_checked_and_normalised() {
        let c = Config::new("http://127.0.0.1:3000/").unwrap();
        assert_eq!(c.url("/v1/telemetry"), "http://127.0.0.1:3000/v1/telemetry");
        let c = Config::new("https://iot.example.com/toaster").unwrap();
        assert_eq!(
            c.url("/v1/telemetry"),
            "https://iot.example.com/toaster/v1/telemetry"
        );
        for bad in [
            "",
            "127.0.0.1:3000",
            "ftp://x",
            "http://x/?a=1",
            "http://x/#f",
        ] {
            assert!(matches!(Config::new(bad), Err(Error::Config(_))), "{bad}");
        }
    }

    #[test]
    fn an_identity_reads_the_provisioning_answer() {
        let answer = serde_json::json!({"tenant_id":"acme","device_id":"toaster-0001","model":"t1000",
            "channel":"stable","tags":["site=berlin"],"status":"active","key_generation":1,
            "token_endpoint":"/v1/auth/token","audience":"toaster"});
        let identity: Identity = serde_json::from_value(answer).unwrap();
        assert_eq!(identity.tenant_id, "acme");
        assert_eq!(identity.model.as_deref(), Some("t1000"));
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("identity.json");
        identity.save(&path).unwrap();
        assert_eq!(Identity::load(&path).unwrap(), identity);
        assert_eq!(Identity::new("acme", "d1").audience, "toaster");
    }
}
