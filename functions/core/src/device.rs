//! A device's lifecycle: its states and the transitions an admin can ask for, as a
//! pure function ([`transition`]), the way `ota` has the rollout transitions.
//!
//! ```text
//! active ⇄ disabled         (PATCH {"status"}; disabling bumps the key generation)
//! active, disabled → decommissioned   (DELETE; final: the keys are gone for good)
//! ```
//!
//! The key generation is what device tokens carry: bumping it invalidates every token
//! the device holds. Enabling does not bump it (the device's tokens stayed refused while
//! it was disabled and expire on their own).

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::problem::Problem;

/// A device's lifecycle state as PostgreSQL holds it (`devices.status`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeviceStatus {
    Active,
    Disabled,
    Decommissioned,
}

impl DeviceStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            DeviceStatus::Active => "active",
            DeviceStatus::Disabled => "disabled",
            DeviceStatus::Decommissioned => "decommissioned",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "active" => Some(DeviceStatus::Active),
            "disabled" => Some(DeviceStatus::Disabled),
            "decommissioned" => Some(DeviceStatus::Decommissioned),
            _ => None,
        }
    }
}

/// What an admin asks of a device's lifecycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceAction {
    /// `PATCH {"status": "active"}`.
    Enable,
    /// `PATCH {"status": "disabled"}`.
    Disable,
    /// `DELETE /v1/devices/{id}`.
    Decommission,
}

/// The outcome of an allowed action.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transition {
    /// The state afterwards.
    pub status: DeviceStatus,
    /// Whether the key generation goes up by one (every token of the device refused).
    pub bump_generation: bool,
    /// The audit action to record, `None` when nothing changed.
    pub audit: Option<&'static str>,
}

/// Why an action is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum LifecycleError {
    /// A decommissioned device cannot be changed (only decommissioned again).
    #[error("the device is decommissioned")]
    Decommissioned,
}

impl From<LifecycleError> for Problem {
    fn from(error: LifecycleError) -> Self {
        Problem::conflict(error.to_string())
    }
}

/// What `action` does to a device in state `from`.
///
/// Asking for the state the device is already in changes nothing and records nothing,
/// except decommissioning, which is recorded every time (it may erase data again).
pub fn transition(from: DeviceStatus, action: DeviceAction) -> Result<Transition, LifecycleError> {
    use DeviceAction::*;
    use DeviceStatus::*;
    let unchanged = Transition {
        status: from,
        bump_generation: false,
        audit: None,
    };
    match (from, action) {
        (Decommissioned, Decommission) => Ok(Transition {
            audit: Some("device.decommissioned"),
            ..unchanged
        }),
        (Decommissioned, Enable | Disable) => Err(LifecycleError::Decommissioned),
        (Active | Disabled, Decommission) => Ok(Transition {
            status: Decommissioned,
            bump_generation: true,
            audit: Some("device.decommissioned"),
        }),
        (Active, Disable) => Ok(Transition {
            status: Disabled,
            bump_generation: true,
            audit: Some("device.disabled"),
        }),
        (Disabled, Enable) => Ok(Transition {
            status: Active,
            bump_generation: false,
            audit: Some("device.enabled"),
        }),
        (Active, Enable) | (Disabled, Disable) => Ok(unchanged),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use DeviceAction::*;
    use DeviceStatus::*;

    #[test]
    fn disabling_an_active_device_refuses_its_tokens() {
        let t = transition(Active, Disable).unwrap();
        assert_eq!(t.status, Disabled);
        assert!(t.bump_generation);
        assert_eq!(t.audit, Some("device.disabled"));
    }

    #[test]
    fn enabling_keeps_the_generation() {
        let t = transition(Disabled, Enable).unwrap();
        assert_eq!(t.status, Active);
        assert!(!t.bump_generation);
        assert_eq!(t.audit, Some("device.enabled"));
    }

    #[test]
    fn asking_for_the_current_state_changes_nothing() {
        for (from, action) in [(Active, Enable), (Disabled, Disable)] {
            let t = transition(from, action).unwrap();
            assert_eq!(t.status, from);
            assert!(!t.bump_generation);
            assert_eq!(t.audit, None);
        }
    }

    #[test]
    fn decommissioning_is_final_and_bumps_once() {
        for from in [Active, Disabled] {
            let t = transition(from, Decommission).unwrap();
            assert_eq!(t.status, Decommissioned);
            assert!(t.bump_generation);
        }
        let again = transition(Decommissioned, Decommission).unwrap();
        assert_eq!(again.status, Decommissioned);
        assert!(!again.bump_generation);
        assert_eq!(again.audit, Some("device.decommissioned"));
        for action in [Enable, Disable] {
            assert_eq!(
                transition(Decommissioned, action),
                Err(LifecycleError::Decommissioned)
            );
        }
        let problem = Problem::from(LifecycleError::Decommissioned);
        assert_eq!(problem.status, 409);
        assert_eq!(
            problem.detail.as_deref(),
            Some("the device is decommissioned")
        );
    }

    #[test]
    fn no_action_leaves_a_device_active_with_its_old_tokens_after_disabling() {
        // Whatever the path from active to disabled and back, a device that was
        // disabled had its generation bumped on the way.
        let disabled = transition(Active, Disable).unwrap();
        let enabled = transition(disabled.status, Enable).unwrap();
        assert!(disabled.bump_generation || enabled.bump_generation);
    }

    #[test]
    fn status_names_round_trip() {
        for status in [Active, Disabled, Decommissioned] {
            assert_eq!(DeviceStatus::parse(status.as_str()), Some(status));
            let json = serde_json::to_string(&status).unwrap();
            assert_eq!(json, format!("\"{}\"", status.as_str()));
        }
        assert_eq!(DeviceStatus::parse("Active"), None);
    }
}
