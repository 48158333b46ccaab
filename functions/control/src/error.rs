//! The `control` component's own refusals, and the one place they become problems.
//! The platform's (authentication, bodies, storage) arrive as problems already.

use toaster_core::control::command::Refusal;
use toaster_core::control::state::StateError;
use toaster_core::problem::{FieldError, Problem};

/// What the control endpoints refuse, beyond what the platform refuses for them.
#[derive(Debug, Clone, PartialEq)]
pub enum ControlError {
    /// 422: one field of the request, by JSON pointer (or a query parameter's name).
    Invalid {
        pointer: &'static str,
        detail: String,
    },
    /// 413 or 422: a state document or patch over a limit, or not an object.
    State(StateError),
    /// 413: command parameters or output over `command_max_bytes`.
    TooLarge { what: &'static str, max: usize },
    /// 404: no such device (or command, or batch) in the caller's tenant.
    NotFound,
    /// 409: the device is decommissioned: it can never read what is written.
    Decommissioned,
    /// 412: `If-Match` names another version than the current one.
    VersionMismatch { current: i64 },
    /// 429: the device already has `limit` pending commands.
    QueueFull { limit: u32 },
    /// 409: the command's lifecycle refuses the event.
    Lifecycle(Refusal),
    /// 409: a result for a command that already has this status with another output.
    OtherOutput,
    /// 422: an idempotency key reused with another command.
    KeyReused,
    /// 500: a stored column did not parse (logged; the client learns nothing).
    Corrupt(&'static str),
}

/// Seconds a client told the queue is full waits before trying again.
pub const QUEUE_FULL_RETRY_SECS: u32 = 10;

impl ControlError {
    /// [`ControlError::Invalid`].
    pub fn invalid(pointer: &'static str, detail: impl Into<String>) -> Self {
        ControlError::Invalid {
            pointer,
            detail: detail.into(),
        }
    }
}

impl From<ControlError> for Problem {
    fn from(error: ControlError) -> Self {
        match error {
            ControlError::Invalid { pointer, detail } => {
                Problem::unprocessable(vec![FieldError::new(pointer, detail)])
            }
            ControlError::State(e) if e.is_size() => {
                Problem::of(toaster_core::problem::ProblemType::PayloadTooLarge)
                    .with_detail(e.to_string())
            }
            ControlError::State(e) => {
                Problem::unprocessable(vec![FieldError::new("", e.to_string())])
            }
            ControlError::TooLarge { what, max } => Problem::of(
                toaster_core::problem::ProblemType::PayloadTooLarge,
            )
            .with_detail(format!(
                "{what} must be at most {max} bytes as compact JSON (command_max_bytes)"
            )),
            ControlError::NotFound => Problem::not_found(),
            ControlError::Decommissioned => {
                Problem::conflict("the device is decommissioned: nothing can be sent to it")
            }
            ControlError::VersionMismatch { current } => Problem::precondition_failed(format!(
                "If-Match names another version: the document is at version {current}; \
                 read it again and retry"
            )),
            ControlError::QueueFull { limit } => Problem::too_many_requests(QUEUE_FULL_RETRY_SECS)
                .with_detail(format!(
                    "the device already has {limit} pending commands (command_queue_limit); \
                     wait for results, or cancel some"
                )),
            ControlError::Lifecycle(refused) => Problem::conflict(refused.to_string()),
            ControlError::OtherOutput => Problem::conflict(
                "the command already has this result with another output; a result is posted once",
            ),
            ControlError::KeyReused => Problem::unprocessable(vec![FieldError::new(
                "",
                "this Idempotency-Key was used for another command to this device",
            )]),
            ControlError::Corrupt(what) => {
                eprintln!("control: unreadable stored column: {what}");
                Problem::internal()
            }
        }
    }
}
