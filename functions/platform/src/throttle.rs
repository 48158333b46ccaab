//! Throttling the endpoints that take no token, `POST /v1/provision` and
//! `POST /v1/auth/token`: each attempt there costs a database lookup before anything
//! says whether the caller is anyone, and without a limit one client ran 300 of them
//! in under a second.
//!
//! What is counted is **refused** attempts: every answer from 400 to 499 but 429 (an
//! unknown, expired or used-up claim token, a refused assertion, a malformed body).
//! Successful attempts are not counted, so a fleet behind one gateway address may
//! provision and log in as many devices as fast as it likes; an attacker, who has no
//! valid credential, is refused every time and soon throttled. Two budgets, both in
//! the key-value store so that they hold across replicas ([`crate::kv`]):
//!
//! | variable | default | counted under | checked |
//! |----------|---------|---------------|---------|
//! | `unauthenticated_failure_rate_limit` | `60/60s` | the client address (`fail:addr:`; an IPv6 client's `/64`) | first, before the body is read |
//! | `credential_failure_rate_limit` | `120/60s` | the claim token's or the device's bucket (`fail:claim:`, `fail:device:`) | once the body names it |
//!
//! Both are checked before any database work; over either, the answer is 429 with
//! `Retry-After` = the seconds left in the window. The per-credential budget stops
//! many addresses (a botnet) from hammering one claim token or device; it is twice the
//! per-address one so that a single address can never lock a device or a claim out by
//! failing as it. The client address is the `spin-client-addr` header, which the host
//! (and Spin) set and clients cannot.
//!
//! Like the per-device rate limit, the counts are read-modify-writes, not atomic:
//! attempts running at the same moment may all read the same count, so a burst of
//! concurrent refusals can overshoot a budget by about the number in flight. If the
//! store fails, attempts pass (logged): this protects capacity, not secrets.

use std::rc::Rc;

use spin_sdk::http::Request;
use toaster_core::ids::{DeviceId, TenantId};
use toaster_core::net;
use toaster_core::problem::Problem;

use crate::auth::RateLimit;
use crate::kv::{self, RateWindow};
use crate::time;

/// The variable with the refused attempts allowed per client address.
pub const ADDRESS_LIMIT_VARIABLE: &str = "unauthenticated_failure_rate_limit";
/// The variable with the refused attempts allowed per claim token or device bucket.
pub const CREDENTIAL_LIMIT_VARIABLE: &str = "credential_failure_rate_limit";
/// The header the host and Spin put the client's `address:port` in.
pub const CLIENT_ADDR_HEADER: &str = "spin-client-addr";

/// spin.toml's default for [`ADDRESS_LIMIT_VARIABLE`] (`toaster_core::config`), used
/// when it is not granted; a bad value fails the request ([`crate::config::get`]).
pub const ADDRESS_DEFAULT: RateLimit = RateLimit {
    requests: 60,
    window_secs: 60,
};
/// spin.toml's default for [`CREDENTIAL_LIMIT_VARIABLE`], likewise.
pub const CREDENTIAL_DEFAULT: RateLimit = RateLimit {
    requests: 120,
    window_secs: 60,
};

// One address alone can never lock a claim or device out by failing as it.
const _: () = assert!(
    CREDENTIAL_DEFAULT.requests > ADDRESS_DEFAULT.requests
        && CREDENTIAL_DEFAULT.window_secs == ADDRESS_DEFAULT.window_secs
);

/// The credential an attempt names, counted in its bucket.
pub enum Credential<'a> {
    /// A claim token, as sent.
    Claim(&'a str),
    /// The tenant (`iss`) and device (`sub`) an assertion claims to be from.
    Device(&'a TenantId, &'a DeviceId),
}

/// One unauthenticated attempt's budgets. See the module documentation.
pub struct Throttle {
    store: Option<Rc<kv::Store>>,
    now_secs: u64,
    address_key: String,
    address_limit: RateLimit,
    /// The credential's bucket and its budget.
    credential: Option<(String, RateLimit)>,
}

impl Throttle {
    /// Starts an attempt from `req`'s client: 429 if the address has spent its budget
    /// of refusals. Call first, before any database work.
    pub fn start(req: &Request) -> Result<Throttle, Problem> {
        let client = req
            .header(CLIENT_ADDR_HEADER)
            .and_then(|v| v.as_str())
            .and_then(net::client_key)
            .unwrap_or_else(|| {
                // Only a host that does not set the header gets here: all such
                // clients then share one budget.
                eprintln!("throttle: no usable {CLIENT_ADDR_HEADER} header");
                "unknown".to_owned()
            });
        let throttle = Throttle {
            store: kv::open()
                .inspect_err(|e| {
                    eprintln!(
                        "throttle: key-value store unavailable, not counted: {}",
                        kv::describe(e)
                    )
                })
                .ok(),
            now_secs: time::now_secs(),
            address_key: kv::failed_address_key(&client),
            address_limit: RateLimit::from_named(ADDRESS_LIMIT_VARIABLE)?,
            credential: None,
        };
        throttle.check(
            &throttle.address_key,
            &throttle.address_limit,
            "from this address",
        )?;
        Ok(throttle)
    }

    /// 429 if the credential's bucket has spent its budget of refusals; otherwise the
    /// attempt's refusal, if it is one, will count against it too. Call before any
    /// database work.
    pub fn credential(&mut self, credential: Credential<'_>) -> Result<(), Problem> {
        let (key, what) = match credential {
            Credential::Claim(token) => (kv::failed_claim_key(token), "with this claim token"),
            Credential::Device(tenant, device) => {
                (kv::failed_device_key(tenant, device), "for this device")
            }
        };
        let limit = RateLimit::from_named(CREDENTIAL_LIMIT_VARIABLE)?;
        self.check(&key, &limit, what)?;
        self.credential = Some((key, limit));
        Ok(())
    }

    /// Passes the attempt's `outcome` on, after counting it if it is a refusal.
    pub fn finish<T>(&self, outcome: Result<T, Problem>) -> Result<T, Problem> {
        if let Err(problem) = &outcome
            && is_refusal(problem.status)
        {
            self.count(&self.address_key, &self.address_limit);
            if let Some((key, limit)) = &self.credential {
                self.count(key, limit);
            }
        }
        outcome
    }

    fn check(&self, key: &str, limit: &RateLimit, what: &str) -> Result<(), Problem> {
        let current = self.read(key);
        match limit.retry_after(current, self.now_secs) {
            None => Ok(()),
            Some(retry_after) => {
                eprintln!("throttle: {key} has spent its budget; refused for {retry_after} s");
                Err(Problem::too_many_requests(retry_after).with_detail(format!(
                    "too many refused attempts {what}: at most {} per {} s",
                    limit.requests, limit.window_secs
                )))
            }
        }
    }

    fn count(&self, key: &str, limit: &RateLimit) {
        let Some(store) = &self.store else {
            return;
        };
        let next = limit.counted(self.read(key), self.now_secs);
        if let Err(e) = kv::set_json(store, key, &next) {
            eprintln!("throttle: cannot count in {key}: {}", kv::describe(&e));
        }
    }

    fn read(&self, key: &str) -> Option<RateWindow> {
        let store = self.store.as_ref()?;
        kv::get_json::<RateWindow>(store, key).unwrap_or_else(|e| {
            eprintln!("throttle: cannot read {key}: {}", kv::describe(&e));
            None
        })
    }
}

/// Whether an answer with `status` is a refused attempt: a 4xx other than 429 (a
/// throttled attempt is not counted again, or a client could never get out).
pub fn is_refusal(status: u16) -> bool {
    (400..500).contains(&status) && status != 429
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_defaults_are_spin_tomls() {
        for (name, default) in [
            (ADDRESS_LIMIT_VARIABLE, ADDRESS_DEFAULT),
            (CREDENTIAL_LIMIT_VARIABLE, CREDENTIAL_DEFAULT),
        ] {
            let text = toaster_core::config::variable(name)
                .unwrap()
                .default
                .unwrap();
            assert_eq!(RateLimit::parse(text), Some(default), "{name}");
        }
    }

    #[test]
    fn refusals_are_the_4xx_but_429() {
        for status in [400, 401, 404, 409, 413, 415, 422] {
            assert!(is_refusal(status), "{status}");
        }
        for status in [200, 201, 204, 429, 500, 503] {
            assert!(!is_refusal(status), "{status}");
        }
    }
}
