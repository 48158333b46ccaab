//! The `aggregate` component's own refusals, and the one place they become problems.
//! The platform's (authentication, query strings, bodies, storage) arrive as problems
//! already.

use toaster_core::problem::{FieldError, Problem};

/// What the metrics endpoints refuse, beyond what the platform refuses for them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AggregateError {
    /// 404: no such device for this caller (another tenant's, or another device's).
    NoSuchDevice,
    /// 404: the `{metric}` path segment is not a metric name.
    NoSuchMetric,
    /// 400: a required query parameter is missing.
    Missing(&'static str),
    /// 400: a query parameter is not an instant.
    BadInstant { name: &'static str, detail: String },
    /// 400: `from` is not before `to`.
    EmptyRange,
    /// 422: these instants are outside the range a query may name.
    OutOfRange(Vec<&'static str>),
    /// 422: the range holds too many buckets; `detail` says what would fit.
    TooManyBuckets {
        count: u64,
        max: u64,
        detail: String,
    },
    /// 422: the retention policy breaks its rules, one entry per field.
    Policy(Vec<FieldError>),
    /// 403: the token names a tenant that no longer exists.
    NoTenant,
}

impl From<AggregateError> for Problem {
    fn from(error: AggregateError) -> Self {
        match error {
            AggregateError::NoSuchDevice => Problem::not_found(),
            AggregateError::NoSuchMetric => Problem::not_found().with_detail("no such metric name"),
            AggregateError::Missing(name) => {
                Problem::bad_request(format!("the query parameter {name} is required"))
            }
            AggregateError::BadInstant { name, detail } => {
                Problem::bad_request(format!("the query parameter {name} is invalid: {detail}"))
            }
            AggregateError::EmptyRange => Problem::bad_request("from must be before to"),
            AggregateError::OutOfRange(names) => {
                let detail = toaster_core::telemetry::query::InstantError::OutOfRange.to_string();
                let errors = names
                    .iter()
                    .map(|name| FieldError::new(*name, detail.clone()))
                    .collect();
                Problem::unprocessable(errors).with_detail(format!(
                    "the time range is invalid: {} outside 0000-01-01T00:00:00Z to 9999-12-31T00:00:00Z",
                    match names.as_slice() {
                        [one] => format!("{one} is"),
                        _ => format!("{} are", names.join(" and ")),
                    }
                ))
            }
            AggregateError::TooManyBuckets { count, max, detail } => {
                Problem::unprocessable(vec![FieldError::new("bucket", detail)])
                    .with_detail(format!("too many buckets: {count} > {max}"))
            }
            AggregateError::Policy(errors) => Problem::unprocessable(errors),
            AggregateError::NoTenant => {
                Problem::forbidden().with_detail("the token's tenant does not exist")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn out_of_range_names_every_parameter() {
        let one = Problem::from(AggregateError::OutOfRange(vec!["from"]));
        assert_eq!(one.status, 422);
        assert!(one.detail.as_deref().unwrap().contains(": from is outside"));
        let both = Problem::from(AggregateError::OutOfRange(vec!["from", "to"]));
        assert_eq!(both.errors.len(), 2);
        assert!(
            both.detail
                .as_deref()
                .unwrap()
                .contains("from and to are outside")
        );
    }

    #[test]
    fn each_refusal_has_its_status() {
        for (error, status) in [
            (AggregateError::NoSuchDevice, 404),
            (AggregateError::NoSuchMetric, 404),
            (AggregateError::Missing("from"), 400),
            (AggregateError::EmptyRange, 400),
            (AggregateError::Policy(vec![]), 422),
            (AggregateError::NoTenant, 403),
        ] {
            assert_eq!(Problem::from(error.clone()).status, status, "{error:?}");
        }
        let missing = Problem::from(AggregateError::Missing("bucket"));
        assert_eq!(
            missing.detail.as_deref(),
            Some("the query parameter bucket is required")
        );
    }
}
