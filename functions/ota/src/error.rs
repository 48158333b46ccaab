//! The `ota` component's own refusals, and the one place they become problems. The
//! platform's (authentication, bodies, storage) arrive as problems already.

use toaster_core::ota::{ActionRefused, TransitionRefused};
use toaster_core::problem::{FieldError, Problem};

/// What the OTA endpoints refuse, beyond what the platform refuses for them.
#[derive(Debug, Clone, PartialEq)]
pub enum OtaError {
    /// 422: one field of the request body, by JSON pointer.
    Invalid {
        pointer: &'static str,
        detail: String,
    },
    /// 404: no such firmware or rollout in the caller's tenant.
    NotFound,
    /// 404: a report about a rollout this device was not offered.
    NotOffered,
    /// 403: the token names a tenant that no longer exists.
    NoTenant,
    /// 409: this model already has firmware with this version.
    VersionExists,
    /// 409: this model and channel already have a rollout that is not aborted.
    RolloutExists,
    /// 409: the action found the rollout past its failure threshold and halted it.
    HaltedNow,
    /// 409: the rollout's state does not allow the action.
    Action(ActionRefused),
    /// 409: a device's report goes backwards or past its end.
    Progress(TransitionRefused),
    /// 500: a stored column did not parse (logged; the client learns nothing).
    Corrupt(&'static str),
}

impl OtaError {
    /// [`OtaError::Invalid`].
    pub fn invalid(pointer: &'static str, detail: impl Into<String>) -> Self {
        OtaError::Invalid {
            pointer,
            detail: detail.into(),
        }
    }
}

impl From<OtaError> for Problem {
    fn from(error: OtaError) -> Self {
        match error {
            OtaError::Invalid { pointer, detail } => {
                Problem::unprocessable(vec![FieldError::new(pointer, detail)])
            }
            OtaError::NotFound => Problem::not_found(),
            OtaError::NotOffered => {
                Problem::not_found().with_detail("this device was not offered this rollout")
            }
            OtaError::NoTenant => {
                Problem::forbidden().with_detail("the token's tenant does not exist")
            }
            OtaError::VersionExists => Problem::conflict(
                "this model already has firmware with this version (build metadata does not make a new version)",
            ),
            OtaError::RolloutExists => Problem::conflict(
                "this model and channel already have a rollout that is not aborted; abort it first",
            ),
            OtaError::HaltedNow => {
                Problem::conflict("the rollout reached its failure threshold and has halted")
            }
            OtaError::Action(refused) => Problem::conflict(refused.to_string()),
            OtaError::Progress(refused) => Problem::conflict(refused.to_string()),
            OtaError::Corrupt(what) => {
                eprintln!("ota: unreadable rollout column: {what}");
                Problem::internal()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_refusal_has_its_status_and_says_why() {
        let cases = [
            (OtaError::invalid("/size", "too big"), 422),
            (OtaError::NotFound, 404),
            (OtaError::NotOffered, 404),
            (OtaError::NoTenant, 403),
            (OtaError::VersionExists, 409),
            (OtaError::RolloutExists, 409),
            (OtaError::HaltedNow, 409),
            (
                OtaError::Progress(TransitionRefused {
                    from: "installed",
                    to: "downloading",
                }),
                409,
            ),
            (OtaError::Corrupt("stages"), 500),
        ];
        for (error, status) in cases {
            let problem = Problem::from(error.clone());
            assert_eq!(problem.status, status, "{error:?}");
            // Every client-facing refusal explains itself; a 500 says nothing.
            assert_eq!(
                problem.detail.is_some(),
                !matches!(error, OtaError::NotFound | OtaError::Corrupt(_)),
                "{error:?}"
            );
        }
        let invalid = Problem::from(OtaError::invalid("/size", "too big"));
        assert_eq!(invalid.errors[0].pointer, "/size");
        assert_eq!(invalid.errors[0].detail, "too big");
        assert_eq!(
            Problem::from(OtaError::Progress(TransitionRefused {
                from: "installed",
                to: "downloading",
            }))
            .detail
            .as_deref(),
            Some("a device that is installed cannot report downloading")
        );
    }
}
