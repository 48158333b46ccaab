//! Commands an operator sends to a device, and their lifecycle:
//!
//! ```text
//! queued ──fetch──▶ delivered ──result──▶ succeeded | failed | rejected
//!   │                  │
//!   ├──cancel──▶ canceled
//!   └──ttl──▶ expired ◀──ttl──┘
//! ```
//!
//! A device may post its result while the command is `queued` too (it fetched it, and
//! the answer to its fetch was lost). A result is final: the same result again is a
//! safe resend, a different one a conflict. Transitions are a pure function
//! ([`transition`]); the component applies them in SQL guarded by the state they
//! start from, so two racing writers cannot both win.

use std::fmt;

use serde::{Deserialize, Serialize};
use thiserror::Error;

/// The longest command name (`^[a-z][a-z0-9_.-]{0,63}$`).
pub const MAX_NAME_LEN: usize = 64;

/// A command's time to live when the send names none: an hour.
pub const DEFAULT_TTL_SECS: u32 = 3_600;

/// The longest time to live a send may ask for: 30 days.
pub const MAX_TTL_SECS: u32 = 30 * 86_400;

/// The time to live a send asked for (`None`: the default), or why it is refused.
pub fn ttl_secs(asked: Option<u64>) -> Result<u32, String> {
    match asked {
        None => Ok(DEFAULT_TTL_SECS),
        Some(secs) if (1..=u64::from(MAX_TTL_SECS)).contains(&secs) => Ok(secs as u32),
        Some(_) => Err(format!(
            "must be from 1 to {MAX_TTL_SECS} seconds (30 days)"
        )),
    }
}

/// A command's name, such as `reboot` or `light.set`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct CommandName(String);

impl CommandName {
    pub fn parse(name: &str) -> Result<Self, NameError> {
        let mut chars = name.chars();
        let first_ok = chars.next().is_some_and(|c| c.is_ascii_lowercase());
        let rest_ok = chars
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '_' | '.' | '-'));
        if first_ok && rest_ok && name.len() <= MAX_NAME_LEN {
            Ok(Self(name.to_owned()))
        } else {
            Err(NameError)
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for CommandName {
    type Error = NameError;
    fn try_from(value: String) -> Result<Self, NameError> {
        Self::parse(&value)
    }
}

impl From<CommandName> for String {
    fn from(name: CommandName) -> Self {
        name.0
    }
}

impl fmt::Display for CommandName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A name that does not match `^[a-z][a-z0-9_.-]{0,63}$`. It does not echo the input.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error(
    "a command name is 1 to 64 characters: a lowercase letter, then lowercase letters, digits, '_', '.' or '-'"
)]
pub struct NameError;

/// Where a command is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Queued,
    Delivered,
    Succeeded,
    Failed,
    Rejected,
    Expired,
    Canceled,
}

impl Status {
    pub const ALL: [Status; 7] = [
        Status::Queued,
        Status::Delivered,
        Status::Succeeded,
        Status::Failed,
        Status::Rejected,
        Status::Expired,
        Status::Canceled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Status::Queued => "queued",
            Status::Delivered => "delivered",
            Status::Succeeded => "succeeded",
            Status::Failed => "failed",
            Status::Rejected => "rejected",
            Status::Expired => "expired",
            Status::Canceled => "canceled",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == text)
    }

    /// Whether the command still waits for its device (it counts against the queue cap
    /// and its TTL runs).
    pub fn is_pending(self) -> bool {
        matches!(self, Status::Queued | Status::Delivered)
    }

    /// Whether the device answered (`succeeded`, `failed` or `rejected`).
    pub fn is_result(self) -> bool {
        matches!(self, Status::Succeeded | Status::Failed | Status::Rejected)
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What happens to a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// The device fetched it.
    Fetch,
    /// The device posted its result (`succeeded`, `failed` or `rejected`).
    Result(Status),
    /// The operator canceled it.
    Cancel,
    /// Its TTL passed.
    Expire,
}

/// What a transition does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The command moves to this status (write it, with its timestamp).
    Moves(Status),
    /// Nothing to write: the event was already applied (a resent result, a second
    /// fetch, a second cancel). The answer is the command as it is.
    Unchanged,
}

/// Why an event cannot apply to a command in its status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum Refusal {
    #[error("the command already has a different result ({0})")]
    DifferentResult(Status),
    #[error("the command is {0} and takes no result")]
    Finished(Status),
    #[error("the command was delivered to the device and can no longer be canceled")]
    AlreadyDelivered,
    #[error("the command is {0} and can no longer be canceled")]
    NotCancelable(Status),
    #[error("{0} is not a result: a result is succeeded, failed or rejected")]
    NotAResult(Status),
}

/// The status an event moves a command in `from` to, or why it cannot.
pub fn transition(from: Status, event: Event) -> Result<Outcome, Refusal> {
    use Status::*;
    match (from, event) {
        (_, Event::Result(result)) if !result.is_result() => Err(Refusal::NotAResult(result)),
        (Queued, Event::Fetch) => Ok(Outcome::Moves(Delivered)),
        (_, Event::Fetch) => Ok(Outcome::Unchanged),
        (Queued | Delivered, Event::Result(result)) => Ok(Outcome::Moves(result)),
        (done, Event::Result(result)) if done == result => Ok(Outcome::Unchanged),
        (done, Event::Result(_)) if done.is_result() => Err(Refusal::DifferentResult(done)),
        (done, Event::Result(_)) => Err(Refusal::Finished(done)),
        (Queued, Event::Cancel) => Ok(Outcome::Moves(Canceled)),
        (Canceled, Event::Cancel) => Ok(Outcome::Unchanged),
        (Delivered, Event::Cancel) => Err(Refusal::AlreadyDelivered),
        (done, Event::Cancel) => Err(Refusal::NotCancelable(done)),
        (Queued | Delivered, Event::Expire) => Ok(Outcome::Moves(Expired)),
        (_, Event::Expire) => Ok(Outcome::Unchanged),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_pattern() {
        for good in ["reboot", "light.set", "a", "set_point-2", &"a".repeat(64)] {
            assert!(CommandName::parse(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "Reboot",
            "1reboot",
            "_x",
            "light set",
            "x/y",
            "é",
            "rm;drop table",
            &"a".repeat(65),
        ] {
            assert_eq!(CommandName::parse(bad), Err(NameError), "{bad}");
        }
        let name: CommandName = serde_json::from_str("\"light.set\"").unwrap();
        assert_eq!(name.as_str(), "light.set");
        assert!(serde_json::from_str::<CommandName>("\"<b>\"").is_err());
    }

    #[test]
    fn statuses_round_trip_through_text() {
        for status in Status::ALL {
            assert_eq!(Status::parse(status.as_str()), Some(status));
            let json = serde_json::to_string(&status).unwrap();
            assert_eq!(json, format!("\"{status}\""));
        }
        assert_eq!(Status::parse("done"), None);
    }

    /// Every status against every event: the whole table, written out.
    #[test]
    fn every_transition() {
        use Outcome::*;
        use Status::*;
        let table: [(Status, Event, Result<Outcome, Refusal>); 21] = [
            (Queued, Event::Fetch, Ok(Moves(Delivered))),
            (Delivered, Event::Fetch, Ok(Unchanged)),
            (Succeeded, Event::Fetch, Ok(Unchanged)),
            (Queued, Event::Result(Succeeded), Ok(Moves(Succeeded))),
            (Delivered, Event::Result(Failed), Ok(Moves(Failed))),
            (Delivered, Event::Result(Rejected), Ok(Moves(Rejected))),
            (Succeeded, Event::Result(Succeeded), Ok(Unchanged)),
            (
                Succeeded,
                Event::Result(Failed),
                Err(Refusal::DifferentResult(Succeeded)),
            ),
            (
                Rejected,
                Event::Result(Succeeded),
                Err(Refusal::DifferentResult(Rejected)),
            ),
            (
                Canceled,
                Event::Result(Succeeded),
                Err(Refusal::Finished(Canceled)),
            ),
            (
                Expired,
                Event::Result(Failed),
                Err(Refusal::Finished(Expired)),
            ),
            (
                Delivered,
                Event::Result(Queued),
                Err(Refusal::NotAResult(Queued)),
            ),
            (
                Delivered,
                Event::Result(Expired),
                Err(Refusal::NotAResult(Expired)),
            ),
            (Queued, Event::Cancel, Ok(Moves(Canceled))),
            (Canceled, Event::Cancel, Ok(Unchanged)),
            (Delivered, Event::Cancel, Err(Refusal::AlreadyDelivered)),
            (
                Succeeded,
                Event::Cancel,
                Err(Refusal::NotCancelable(Succeeded)),
            ),
            (Expired, Event::Cancel, Err(Refusal::NotCancelable(Expired))),
            (Queued, Event::Expire, Ok(Moves(Expired))),
            (Delivered, Event::Expire, Ok(Moves(Expired))),
            (Failed, Event::Expire, Ok(Unchanged)),
        ];
        for (from, event, want) in table {
            assert_eq!(transition(from, event), want, "{from} on {event:?}");
        }
    }

    #[test]
    fn pending_and_result_statuses() {
        let pending: Vec<Status> = Status::ALL.into_iter().filter(|s| s.is_pending()).collect();
        assert_eq!(pending, [Status::Queued, Status::Delivered]);
        let results: Vec<Status> = Status::ALL.into_iter().filter(|s| s.is_result()).collect();
        assert_eq!(
            results,
            [Status::Succeeded, Status::Failed, Status::Rejected]
        );
    }
}
