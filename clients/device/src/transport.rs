//! The HTTP side every device call goes through: one attempt sorted by what to do
//! next ([`Step`]), the wait before a retry, the counters behind [`crate::Stats`], and
//! the resend loop of a call without an access token. The rules are in
//! [`crate::device`]'s documentation.

use std::sync::atomic::{AtomicU64, Ordering};

use reqwest::RequestBuilder;
use reqwest::header::{HeaderMap, RETRY_AFTER};
use serde::de::DeserializeOwned;
use tracing::debug;

use crate::device::Config;
use crate::error::{Error, Problem, Transient};
use crate::retry::parse_retry_after;

#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) requests: AtomicU64,
    pub(crate) logins: AtomicU64,
    pub(crate) relogins: AtomicU64,
    pub(crate) retries: AtomicU64,
    pub(crate) rate_limited: AtomicU64,
    pub(crate) unavailable: AtomicU64,
    pub(crate) no_answer: AtomicU64,
    pub(crate) waited_micros: AtomicU64,
}

pub(crate) fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// An answer with its body read.
#[derive(Debug)]
pub(crate) struct Answer {
    pub(crate) status: u16,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Vec<u8>,
}

impl Answer {
    pub(crate) fn json<T: DeserializeOwned>(&self, what: &'static str) -> Result<T, Error> {
        serde_json::from_slice(&self.body).map_err(|e| Error::Protocol {
            what,
            detail: format!("{} body: {e}", self.status),
        })
    }

    pub(crate) fn problem(&self) -> Option<Box<Problem>> {
        serde_json::from_slice(&self.body).ok().map(Box::new)
    }
}

/// One attempt's result, sorted by what to do next.
pub(crate) enum Step {
    Done(Answer),
    Unauthorized(Answer),
    Retry(Transient),
    Refused(Answer),
    Broken(reqwest::Error),
}

/// The HTTP side shared by provisioning and the device: one attempt, and the
/// waiting between attempts.
pub(crate) struct Http {
    pub(crate) client: reqwest::Client,
    pub(crate) config: Config,
    pub(crate) counters: Counters,
}

impl Http {
    pub(crate) fn new(config: Config) -> Result<Http, Error> {
        Ok(Http {
            client: config.client()?,
            config,
            counters: Counters::default(),
        })
    }

    pub(crate) async fn attempt(&self, request: RequestBuilder) -> Step {
        bump(&self.counters.requests);
        let sent = request.timeout(self.config.request_timeout).send().await;
        // The body is part of the answer: a connection lost while reading it is a
        // lost answer like any other.
        let answer = match sent {
            Ok(response) => {
                let status = response.status().as_u16();
                let headers = response.headers().clone();
                response.bytes().await.map(|body| Answer {
                    status,
                    headers,
                    body: body.to_vec(),
                })
            }
            Err(e) => Err(e),
        };
        match answer {
            Ok(answer) => match answer.status {
                // 304: a conditional read found nothing new (the state poll).
                200..=299 | 304 => Step::Done(answer),
                401 => Step::Unauthorized(answer),
                408 | 429 | 500 | 502 | 503 | 504 => {
                    match answer.status {
                        429 => bump(&self.counters.rate_limited),
                        503 => bump(&self.counters.unavailable),
                        _ => {}
                    }
                    Step::Retry(Transient::Status {
                        status: answer.status,
                        retry_after: answer
                            .headers
                            .get(RETRY_AFTER)
                            .and_then(|v| v.to_str().ok())
                            .and_then(parse_retry_after),
                        problem: answer.problem(),
                    })
                }
                _ => Step::Refused(answer),
            },
            Err(e) if e.is_builder() || e.is_redirect() => Step::Broken(e),
            Err(e) => {
                bump(&self.counters.no_answer);
                Step::Retry(Transient::Transport(e))
            }
        }
    }

    /// After failed attempt number `failures` (1-based): sleeps and returns `Ok`, or
    /// gives up.
    pub(crate) async fn wait_before_retry(
        &self,
        what: &'static str,
        failures: u32,
        last: Transient,
    ) -> Result<(), Error> {
        let policy = &self.config.retry;
        let delay = if failures >= policy.max_attempts {
            None
        } else {
            policy.delay(failures - 1, last.retry_after(), &mut rand::rng())
        };
        let Some(delay) = delay else {
            return Err(Error::GaveUp {
                what,
                attempts: failures,
                last,
            });
        };
        debug!(what, attempt = failures, ?delay, error = %last, "retrying");
        bump(&self.counters.retries);
        self.counters
            .waited_micros
            .fetch_add(delay.as_micros() as u64, Ordering::Relaxed);
        tokio::time::sleep(delay).await;
        Ok(())
    }

    /// A call without an access token, resent as the rules say.
    pub(crate) async fn call(
        &self,
        what: &'static str,
        build: impl Fn(&reqwest::Client) -> Result<RequestBuilder, Error>,
    ) -> Result<Answer, Error> {
        let mut failures = 0;
        loop {
            match self.attempt(build(&self.client)?).await {
                Step::Done(answer) => return Ok(answer),
                Step::Unauthorized(answer) | Step::Refused(answer) => {
                    return Err(refused(what, answer));
                }
                Step::Broken(source) => return Err(Error::Request { what, source }),
                Step::Retry(last) => {
                    failures += 1;
                    self.wait_before_retry(what, failures, last).await?;
                }
            }
        }
    }
}

pub(crate) fn refused(what: &'static str, answer: Answer) -> Error {
    Error::Refused {
        what,
        status: answer.status,
        problem: answer.problem(),
    }
}
