//! Reading the deployment's variables, parsed by `toaster_core::config`.
//!
//! ```ignore
//! let limit = config::get("device_rate_limit", toaster_core::config::rate_limit)?;
//! ```
//!
//! [`get`] reads the variable and parses it:
//!
//! - a value that parses is returned;
//! - a variable the component was not granted (not in its `[component.X.variables]`)
//!   takes spin.toml's default for it (`toaster_core::config::VARIABLES`); one without
//!   a default (`db_url`, the keys) is a deployment error: 500;
//! - **a bad value is never replaced by a default**: the request is answered 500
//!   `internal` whose detail names the variable and what it accepts (never its value),
//!   and one line is logged with the value (unless it is secret).
//!
//! `toaster up` refuses to start with a bad value, so on our host a component only
//! meets one when it is served by the library directly (as the tests do). On Spin,
//! which has no start hook, the first request that needs the variable is where a bad
//! value is found; every request runs in a fresh instance (on Spin and on our host),
//! so "once per instance" is once per request that reads it: a log line per failing
//! request, not one per use, and never one for a request that succeeds.

use std::cell::RefCell;
use std::collections::BTreeSet;

use spin_sdk::variables::{self, Error};
use toaster_core::config as spec;
use toaster_core::problem::Problem;

use crate::respond;

thread_local! {
    /// The variables this instance has already logged a complaint about.
    static REPORTED: RefCell<BTreeSet<String>> = const { RefCell::new(BTreeSet::new()) };
}

/// The variable `name`, parsed by `parse`. See the module documentation.
pub fn get<T>(name: &str, parse: impl Fn(&str) -> Result<T, String>) -> Result<T, Problem> {
    let secret = spec::variable(name).is_some_and(|v| v.secret);
    match variables::get(name) {
        Ok(text) => parse(&text).map_err(|reason| {
            let shown = (!secret).then_some(text.as_str());
            report(name, &spec::invalid(name, shown, &reason));
            misconfigured(name, &reason)
        }),
        Err(Error::Undefined(_)) => match spec::variable(name).and_then(|v| v.default) {
            Some(default) => parse(default).map_err(|reason| {
                report(name, &format!("the default of {name} is invalid: {reason}"));
                respond::internal()
            }),
            None => {
                report(
                    name,
                    &format!(
                        "variable {name} is not granted to this component: add it to its \
                         [component.NAME.variables] in spin.toml"
                    ),
                );
                Err(respond::internal()
                    .with_detail(format!("the server is misconfigured: it has no {name}")))
            }
        },
        Err(e) => {
            report(
                name,
                &format!("cannot read variable {name}: {}", describe(&e)),
            );
            Err(respond::internal())
        }
    }
}

/// The 500 for a bad value: it names the variable and what it accepts, not the value.
pub fn misconfigured(name: &str, reason: &str) -> Problem {
    respond::internal().with_detail(format!(
        "the server is misconfigured: its variable {name} is invalid ({reason}); an operator \
         must correct it"
    ))
}

/// Logs `message` about `name`, the first time only in this instance.
fn report(name: &str, message: &str) {
    let first = REPORTED.with(|r| r.borrow_mut().insert(name.to_owned()));
    if first {
        eprintln!("{message}");
    }
}

/// The variables interface's error, for a log line.
pub fn describe(error: &Error) -> String {
    match error {
        Error::InvalidName(m) => format!("invalid name: {m}"),
        Error::Undefined(m) => format!("undefined: {m}"),
        Error::Provider(m) => format!("provider failed: {m}"),
        Error::Other(m) => m.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bad_value_is_a_500_naming_the_variable_not_its_value() {
        let problem = misconfigured("device_rate_limit", "it takes <requests>/<seconds>s");
        assert_eq!(problem.status, 500);
        let detail = problem.detail.unwrap();
        assert!(detail.contains("device_rate_limit"), "{detail}");
        assert!(detail.contains("<requests>/<seconds>s"), "{detail}");
    }

    #[test]
    fn the_device_rate_limit_default_is_spin_tomls() {
        let text = spec::variable(crate::auth::RATE_LIMIT_VARIABLE)
            .and_then(|v| v.default)
            .unwrap();
        assert_eq!(
            crate::auth::RateLimit::parse(text),
            Some(crate::auth::RateLimit::DEFAULT)
        );
    }

    #[test]
    fn each_variable_is_reported_once_per_instance() {
        assert!(REPORTED.with(|r| r.borrow().is_empty()));
        report("max_query_buckets", "first");
        report("max_query_buckets", "second");
        report("device_rate_limit", "other");
        REPORTED.with(|r| assert_eq!(r.borrow().len(), 2));
    }
}
