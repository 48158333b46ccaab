//! What can go wrong, typed: a caller can tell "resend later" from "this will never
//! be accepted" without reading messages.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::key::KeyError;
use crate::ota::OtaError;
use crate::telemetry::{FlushReport, Reading, ReadingError};

/// An RFC 9457 problem details body, as Toaster sends with every error.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Problem {
    #[serde(rename = "type", default)]
    pub type_: String,
    #[serde(default)]
    pub title: String,
    #[serde(default)]
    pub status: u16,
    #[serde(default)]
    pub detail: Option<String>,
    /// For 422: each bad field, by JSON pointer.
    #[serde(default)]
    pub errors: Vec<FieldError>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FieldError {
    pub pointer: String,
    pub detail: String,
}

/// Why the last attempt of a call that ran out of attempts failed.
#[derive(Debug, Error)]
pub enum Transient {
    /// 408, 429, 500, 502, 503 or 504.
    #[error("{status}{}", retry_after.map(|d| format!(" (Retry-After: {} s)", d.as_secs())).unwrap_or_default())]
    Status {
        status: u16,
        retry_after: Option<Duration>,
        problem: Option<Box<Problem>>,
    },
    /// No answer: refused connection, timeout, connection lost before the answer.
    #[error("no answer: {0}")]
    Transport(#[source] reqwest::Error),
}

impl Transient {
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Transient::Status { retry_after, .. } => *retry_after,
            Transient::Transport(_) => None,
        }
    }

    pub fn status(&self) -> Option<u16> {
        match self {
            Transient::Status { status, .. } => Some(*status),
            Transient::Transport(_) => None,
        }
    }
}

/// A download that does not match its manifest (`m.verify_image(&image)?`).
impl From<toaster_core::ota::ImageMismatch> for Error {
    fn from(error: toaster_core::ota::ImageMismatch) -> Self {
        Error::Ota(error.into())
    }
}

#[derive(Debug, Error)]
pub enum Error {
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error(transparent)]
    Key(#[from] KeyError),
    #[error(transparent)]
    Reading(#[from] ReadingError),
    #[error(transparent)]
    Ota(#[from] OtaError),
    /// The server refused the request, and would refuse it again unchanged: a 4xx
    /// other than 408 and 429 (a 401 only after a fresh login was refused too).
    #[error("{what}: refused with {status}{}", problem_text(problem))]
    Refused {
        what: &'static str,
        status: u16,
        problem: Option<Box<Problem>>,
    },
    /// Every attempt failed for a reason that might pass (overload, outage, lost
    /// answer), or the server asked to wait longer than the policy allows. Safe to
    /// call again later.
    #[error("{what}: gave up after {attempts} attempt(s): {last}")]
    GaveUp {
        what: &'static str,
        attempts: u32,
        #[source]
        last: Transient,
    },
    /// The request could not be made at all (such as an invalid URL).
    #[error("{what}: {source}")]
    Request {
        what: &'static str,
        #[source]
        source: reqwest::Error,
    },
    /// A 2xx whose body is not what the API documents.
    #[error("{what}: unexpected answer: {detail}")]
    Protocol { what: &'static str, detail: String },
}

fn problem_text(problem: &Option<Box<Problem>>) -> String {
    match problem {
        Some(p) => match &p.detail {
            Some(detail) => format!(" ({}: {detail})", p.title),
            None => format!(" ({})", p.title),
        },
        None => String::new(),
    }
}

impl Error {
    /// The HTTP status of the refusal or of the last failed attempt.
    pub fn status(&self) -> Option<u16> {
        match self {
            Error::Refused { status, .. } => Some(*status),
            Error::GaveUp { last, .. } => last.status(),
            _ => None,
        }
    }

    /// The server's problem details, when it sent some.
    pub fn problem(&self) -> Option<&Problem> {
        match self {
            Error::Refused { problem, .. } => problem.as_deref(),
            Error::GaveUp {
                last: Transient::Status { problem, .. },
                ..
            } => problem.as_deref(),
            _ => None,
        }
    }

    /// Whether the same call may succeed later (overload, outage, lost answer).
    pub fn is_transient(&self) -> bool {
        matches!(self, Error::GaveUp { .. })
    }

    /// Whether a refused telemetry batch is itself the problem (malformed, too
    /// large, wrong media type, invalid readings), so resending it is pointless.
    pub fn is_batch_fault(&self) -> bool {
        matches!(
            self,
            Error::Refused {
                status: 400 | 413 | 415 | 422,
                ..
            }
        )
    }
}

/// A flush stopped: what it sent before, why it stopped, and the readings it dropped
/// (a batch the server refused for good, see [`Error::is_batch_fault`]). Readings
/// not dropped stay in the buffer for the next flush.
#[derive(Debug, Error)]
#[error("flush stopped after {} batch(es): {error}", flushed.batches)]
pub struct FlushError {
    pub flushed: FlushReport,
    #[source]
    pub error: Error,
    pub dropped: Vec<Reading>,
}
