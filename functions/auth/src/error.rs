//! The `auth` component's own refusals, and the one place they become problems. The
//! platform's (authentication, bodies, throttling, storage) arrive as problems already.

use toaster_core::problem::{FieldError, Problem};

/// What the identity endpoints refuse, beyond what the platform refuses for them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthError {
    /// 403: the token names a tenant that no longer exists.
    NoTenant,
    /// 404: no such tenant.
    NoSuchTenant,
    /// 409: a tenant with this id exists.
    TenantExists,
    /// 409: a device with this id exists.
    DeviceExists,
    /// 409: the rotation's new key is already the device's current one.
    AlreadyCurrentKey,
    /// 409: no key rotation is in progress.
    NoRotation,
    /// 401: a device login with an assertion that does not hold (which check failed is
    /// logged, never said).
    LoginRefused,
    /// 401: a claim token that does not provision (which check failed is not said).
    ClaimRefused,
    /// 403: an admin revoking another tenant's token.
    ForeignToken,
    /// 404: a token id the API never minted.
    NotRecorded,
    /// 422 at `/token`: a presented token that cannot be revoked, and why.
    InvalidToken(&'static str),
}

impl From<AuthError> for Problem {
    fn from(error: AuthError) -> Self {
        match error {
            AuthError::NoTenant => {
                Problem::forbidden().with_detail("the token's tenant does not exist")
            }
            AuthError::NoSuchTenant => Problem::not_found().with_detail("no such tenant"),
            AuthError::TenantExists => Problem::conflict("a tenant with this id exists"),
            AuthError::DeviceExists => Problem::conflict("a device with this id exists"),
            AuthError::AlreadyCurrentKey => {
                Problem::conflict("this is already the device's current key")
            }
            AuthError::NoRotation => Problem::conflict("no key rotation is in progress"),
            AuthError::LoginRefused => {
                Problem::unauthorized().with_detail("invalid client assertion")
            }
            AuthError::ClaimRefused => Problem::unauthorized()
                .with_detail("the claim token is invalid, expired, revoked or used up"),
            AuthError::ForeignToken => {
                Problem::forbidden().with_detail("an admin may revoke only its own tenant's tokens")
            }
            AuthError::NotRecorded => Problem::not_found().with_detail(
                "no such token among those the API minted; revoke a token minted elsewhere \
                 (toaster token) by presenting it: POST /v1/auth/revoke",
            ),
            AuthError::InvalidToken(detail) => {
                Problem::unprocessable(vec![FieldError::new("/token", detail)])
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_refusal_has_its_status_and_says_why() {
        for (error, status) in [
            (AuthError::NoTenant, 403),
            (AuthError::NoSuchTenant, 404),
            (AuthError::TenantExists, 409),
            (AuthError::DeviceExists, 409),
            (AuthError::AlreadyCurrentKey, 409),
            (AuthError::NoRotation, 409),
            (AuthError::LoginRefused, 401),
            (AuthError::ClaimRefused, 401),
            (AuthError::ForeignToken, 403),
            (AuthError::NotRecorded, 404),
            (AuthError::InvalidToken("expired"), 422),
        ] {
            let problem = Problem::from(error.clone());
            assert_eq!(problem.status, status, "{error:?}");
            assert!(problem.detail.is_some(), "{error:?}");
        }
        let invalid = Problem::from(AuthError::InvalidToken("expired"));
        assert_eq!(invalid.errors[0].pointer, "/token");
        assert_eq!(invalid.errors[0].detail, "expired");
    }
}
