//! The key-value store: every key Toaster writes, named in this one place.
//!
//! All components use the store labelled [`STORE`] (`key_value_stores = ["default"]`
//! in spin.toml). It holds only what can be rebuilt from PostgreSQL or may be lost, so
//! a wiped store costs latency, never correctness. Values are JSON. (The `jti`s of
//! exchanged login assertions are not here but in PostgreSQL, `used_assertions`: replay
//! protection needs an atomic check-and-record, which this store cannot give.)
//!
//! | key | value | written by | read by |
//! |-----|-------|------------|---------|
//! | `device:{tenant}:{device}` | [`DeviceState`]: `{"status": "active", "gen": 3, "checked_ms": i64}` | `auth` on every status or key change; [`crate::auth`] on a miss | [`crate::auth::authenticate`] |
//! | `last:{tenant}:{device}` | [`LastKnown`]: `{"last_seen_ms": i64, "metrics": {name: {"ts_ms": i64, "value": number\|bool}}}` | `ingest` | `auth` (`GET /v1/devices/{id}`) |
//! | `rate:{tenant}:{device}` | [`RateWindow`]: `{"window": u64, "count": u32}` | [`crate::auth`] | [`crate::auth`] |
//! | `revoked:tenant:{tenant}`, `revoked:operator` | [`RevokedTokens`]: `{"ids": ["tok_…"], "checked_ms": i64}`, the revoked, unexpired admin tokens of a tenant (operator tokens) | `auth` after every revocation; [`crate::auth`] on a miss or an entry older than 30 s | [`crate::auth::authenticate`] (operator and admin tokens) |
//! | `ota:{tenant}` | the tenant's active rollouts: `{"built_ms": i64, "rollouts": [{"id", "model", "channel", "versions", "percent": u8, "version"}]}` | `ota` (its check, on a miss or an entry older than 10 s; deleted after every committed rollout change) | `ota` (`GET /v1/ota/check`) |
//! | `control:{tenant}:{device}` | [`ControlMarker`]: `{"state": {"desired": i64, "reported": i64, "checked_ms": i64}, "commands": {"seq": i64, "pending": bool, "checked_ms": i64}}`, what PostgreSQL last said about the device's state versions and whether it has pending commands | `control` after every committed write to the device's state or commands, and after a device's read that went to PostgreSQL (merged, never moved back: [`ControlMarker::merge`]) | `control` (a device's poll: 304 or an empty page without PostgreSQL) |
//! | `fail:addr:{bucket}` | [`RateWindow`]: refused attempts at `POST /v1/provision` and `POST /v1/auth/token` from client addresses in one of 1,048,576 buckets (5 hex digits of SHA-256 of the address, or of an IPv6 client's `/64`: [`toaster_core::net::client_key`]) | [`crate::throttle`] | [`crate::throttle`] |
//! | `fail:claim:{bucket}` | [`RateWindow`]: refused provisioning attempts with claim tokens in one of 65,536 buckets (4 hex digits of SHA-256 of the token) | [`crate::throttle`] | [`crate::throttle`] |
//! | `fail:device:{bucket}` | [`RateWindow`]: refused logins naming a (tenant, device) in one of 65,536 buckets | [`crate::throttle`] | [`crate::throttle`] |
//!
//! Identifiers are ASCII without `:` in tenants, so `{tenant}:` always ends at the
//! first colon. One key per device (not per window): Spin's key-value interface has no
//! expiry, so per-window keys would pile up forever; one key per device is bounded and
//! is what erasure deletes ([`device_keys`]).
//!
//! The `fail:` keys are bounded the same way: buckets of a hash, at most 1,048,576 for
//! client addresses and 65,536 each for claims and devices, not one key per address,
//! token or device named. The endpoints take addresses, tokens and device ids nobody
//! has checked yet: a key per name would let anyone grow the store without limit (an
//! IPv6 attacker has millions of `/64`s), and a key only for names that exist would let
//! a 429 tell which do. A bucket holds no address either, only a window number and a
//! count, so nothing identifying is kept although the keys are never deleted. Two
//! addresses share a bucket's budget with a chance of one in a million; to lock out a
//! given gateway, an attacker would need about a million addresses each refused 60
//! times. A wiped store only resets the counts.
//!
//! Read-modify-write is not atomic (the interface has no compare-and-swap): two
//! concurrent requests of the same device may both read the old value. So nothing
//! whose correctness depends on it belongs here. The rate limit is approximate under
//! heavy concurrency of one device (never another's problem), which it may be: it
//! protects capacity, not security.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
pub use spin_sdk::key_value::{Error as KvError, Store};

use spin_sdk::key_value::Error;
use toaster_core::ids::{DeviceId, TenantId};

/// The label of the store every component uses.
pub const STORE: &str = "default";

/// `device:{tenant}:{device}`: the cached [`DeviceState`].
pub fn device_key(tenant: &TenantId, device: &DeviceId) -> String {
    format!("device:{tenant}:{device}")
}

/// `last:{tenant}:{device}`: the device's [`LastKnown`] values.
pub fn last_key(tenant: &TenantId, device: &DeviceId) -> String {
    format!("last:{tenant}:{device}")
}

/// `rate:{tenant}:{device}`: the device's current [`RateWindow`].
pub fn rate_key(tenant: &TenantId, device: &DeviceId) -> String {
    format!("rate:{tenant}:{device}")
}

/// `control:{tenant}:{device}`: the device's [`ControlMarker`].
pub fn control_key(tenant: &TenantId, device: &DeviceId) -> String {
    format!("control:{tenant}:{device}")
}

/// Whose tokens a revocation list holds: one tenant's admin tokens, or the operators'.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenScope {
    Operator,
    Tenant(TenantId),
}

impl TokenScope {
    /// The tenant, or `None` for operators (`access_tokens.tenant_id`).
    pub fn tenant(&self) -> Option<&TenantId> {
        match self {
            TokenScope::Operator => None,
            TokenScope::Tenant(tenant) => Some(tenant),
        }
    }
}

/// `revoked:tenant:{tenant}` or `revoked:operator`: the scope's [`RevokedTokens`].
/// `tenant:` keeps a tenant named `operator` apart from the operators.
pub fn revoked_key(scope: &TokenScope) -> String {
    match scope {
        TokenScope::Operator => "revoked:operator".to_owned(),
        TokenScope::Tenant(tenant) => format!("revoked:tenant:{tenant}"),
    }
}

/// `fail:addr:{bucket}`: refused unauthenticated attempts of the client addresses in
/// `client`'s bucket (`client` as [`toaster_core::net::client_key`] writes it).
pub fn failed_address_key(client: &str) -> String {
    let digest = Sha256::digest(format!("addr\0{client}").as_bytes());
    // 20 bits: ADDRESS_BUCKETS.
    format!(
        "fail:addr:{:02x}{:02x}{:x}",
        digest[0],
        digest[1],
        digest[2] >> 4
    )
}

/// How many buckets the `fail:addr:` keys spread over.
pub const ADDRESS_BUCKETS: u32 = 1 << 20;

/// `fail:claim:{bucket}`: refused provisioning attempts with `token`'s bucket.
pub fn failed_claim_key(token: &str) -> String {
    format!("fail:claim:{}", bucket(&["claim", token]))
}

/// `fail:device:{bucket}`: refused logins naming the device's bucket. Not among
/// [`device_keys`]: the bucket is shared, and holds nothing of the device.
pub fn failed_device_key(tenant: &TenantId, device: &DeviceId) -> String {
    format!(
        "fail:device:{}",
        bucket(&["device", tenant.as_str(), device.as_str()])
    )
}

/// How many buckets the `fail:claim:` and `fail:device:` keys spread over.
pub const FAILURE_BUCKETS: u32 = 1 << 16;

/// The first two bytes of SHA-256 of `parts` joined by NUL, as 4 hex digits.
fn bucket(parts: &[&str]) -> String {
    let digest = Sha256::digest(parts.join("\0").as_bytes());
    format!("{:02x}{:02x}", digest[0], digest[1])
}

/// Every key that holds state of one device: what erasure deletes.
pub fn device_keys(tenant: &TenantId, device: &DeviceId) -> [String; 4] {
    [
        device_key(tenant, device),
        last_key(tenant, device),
        rate_key(tenant, device),
        control_key(tenant, device),
    ]
}

/// A device's lifecycle state as PostgreSQL holds it (`devices.status`); its
/// transitions are `toaster_core::device`.
pub use toaster_core::device::DeviceStatus;

/// What a device token is checked against: `device:{tenant}:{device}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceState {
    pub status: DeviceStatus,
    /// `devices.key_generation`; a token carrying another one is refused.
    #[serde(rename = "gen")]
    pub key_generation: u64,
    /// When this was read from PostgreSQL (Unix ms). Entries older than
    /// [`crate::auth::DEVICE_CACHE_MAX_AGE_MS`] are re-read, which bounds how long a
    /// lost cache update can keep a revoked token alive.
    pub checked_ms: i64,
}

/// What operator and admin tokens are checked against: the ids of a scope's revoked
/// tokens that have not expired yet (`access_tokens` in PostgreSQL is the truth).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RevokedTokens {
    pub ids: Vec<String>,
    /// When this was read from PostgreSQL (Unix ms). Entries older than
    /// [`crate::auth::REVOKED_CACHE_MAX_AGE_MS`] are re-read, which bounds how long a
    /// lost cache update can keep a revoked token alive.
    pub checked_ms: i64,
}

/// `last:{tenant}:{device}`, written by ingest after each accepted batch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct LastKnown {
    /// The newest reading's timestamp (Unix ms).
    pub last_seen_ms: i64,
    /// The newest reading of each metric.
    #[serde(default)]
    pub metrics: BTreeMap<String, LastReading>,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LastReading {
    pub ts_ms: i64,
    pub value: LastValue,
}

/// A reading's value as stored in [`LastKnown`]: a number or a boolean.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum LastValue {
    Bool(bool),
    Number(f64),
}

impl From<toaster_core::telemetry::Value> for LastValue {
    fn from(value: toaster_core::telemetry::Value) -> Self {
        match value {
            toaster_core::telemetry::Value::Number(n) => LastValue::Number(n),
            toaster_core::telemetry::Value::Bool(b) => LastValue::Bool(b),
        }
    }
}

/// `control:{tenant}:{device}`: what lets a device's poll be answered without
/// PostgreSQL. Each part is what a statement saw, and when; a part older than
/// [`CONTROL_MARK_MAX_AGE_MS`] is not trusted (the poll goes to PostgreSQL and
/// refreshes it).
///
/// The store has no compare-and-swap, so writers read, [`merge`](Self::merge) and
/// write: versions only grow, so a write that arrives late (a poll's read that
/// started before an operator's change) cannot move a part back. What remains is two
/// writes of one key interleaving between one's read and its write (microseconds);
/// the age limit bounds what that can cost (docs/control.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct ControlMarker {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<StateMark>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commands: Option<CommandsMark>,
}

/// The versions of a device's `desired` and `reported` documents.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateMark {
    pub desired: i64,
    pub reported: i64,
    /// When a statement saw them (Unix ms).
    pub checked_ms: i64,
}

/// Whether a device has commands to fetch, as of its newest command (`seq`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommandsMark {
    /// The largest `commands.seq` of the device (0 for none).
    pub seq: i64,
    pub pending: bool,
    /// When a statement saw it (Unix ms).
    pub checked_ms: i64,
}

/// A marker part older than this is not trusted.
pub const CONTROL_MARK_MAX_AGE_MS: i64 = 120_000;

impl ControlMarker {
    /// `self` with what `newer` knows: per part, the later state wins. State versions
    /// only grow, so each is the larger of the two. Commands: a larger `seq` is a
    /// newer command; at the same `seq` a command can only stop being pending (a
    /// result, a cancel, an expiry), never start again, so not pending wins.
    pub fn merge(self, newer: ControlMarker) -> ControlMarker {
        let state = match (self.state, newer.state) {
            (Some(a), Some(b)) => Some(StateMark {
                desired: a.desired.max(b.desired),
                reported: a.reported.max(b.reported),
                checked_ms: a.checked_ms.max(b.checked_ms),
            }),
            (a, b) => b.or(a),
        };
        let commands = match (self.commands, newer.commands) {
            (Some(a), Some(b)) => Some(match a.seq.cmp(&b.seq) {
                std::cmp::Ordering::Less => b,
                std::cmp::Ordering::Greater => a,
                std::cmp::Ordering::Equal => CommandsMark {
                    seq: a.seq,
                    pending: a.pending && b.pending,
                    checked_ms: a.checked_ms.max(b.checked_ms),
                },
            }),
            (a, b) => b.or(a),
        };
        ControlMarker { state, commands }
    }

    /// The state part, if it was seen less than [`CONTROL_MARK_MAX_AGE_MS`] before
    /// `now_ms`.
    pub fn fresh_state(&self, now_ms: i64) -> Option<StateMark> {
        self.state
            .filter(|s| now_ms.saturating_sub(s.checked_ms) < CONTROL_MARK_MAX_AGE_MS)
    }

    /// The commands part, if it was seen less than [`CONTROL_MARK_MAX_AGE_MS`]
    /// before `now_ms`.
    pub fn fresh_commands(&self, now_ms: i64) -> Option<CommandsMark> {
        self.commands
            .filter(|c| now_ms.saturating_sub(c.checked_ms) < CONTROL_MARK_MAX_AGE_MS)
    }
}

/// `rate:{tenant}:{device}`: requests counted in the current window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RateWindow {
    /// `now_secs / window_secs`.
    pub window: u64,
    pub count: u32,
}

thread_local! {
    /// The handle [`open`] gave out first. A component instance serves one request,
    /// so this is one `open` per request however many parts of it use the store
    /// (a device request's token checks, then its handler): each open and drop is a
    /// call into the host.
    static OPENED: RefCell<Option<Rc<Store>>> = const { RefCell::new(None) };
}

/// Opens [`STORE`], once per instance: later calls share the first handle. A
/// failure is not remembered, so a later call tries again.
pub fn open() -> Result<Rc<Store>, Error> {
    OPENED.with(|opened| {
        if let Some(store) = opened.borrow().as_ref() {
            return Ok(store.clone());
        }
        let store = Rc::new(Store::open(STORE)?);
        *opened.borrow_mut() = Some(store.clone());
        Ok(store)
    })
}

/// Reads a JSON value. A value that does not parse (written by an older version, or
/// damaged) counts as missing: everything here can be rebuilt.
pub fn get_json<T: DeserializeOwned>(store: &Store, key: &str) -> Result<Option<T>, Error> {
    let Some(bytes) = store.get(key)? else {
        return Ok(None);
    };
    match serde_json::from_slice(&bytes) {
        Ok(value) => Ok(Some(value)),
        Err(e) => {
            eprintln!("kv: ignoring an unreadable value under {key}: {e}");
            Ok(None)
        }
    }
}

/// Writes a JSON value.
pub fn set_json<T: Serialize>(store: &Store, key: &str, value: &T) -> Result<(), Error> {
    let bytes = serde_json::to_vec(value).map_err(|e| Error::Other(e.to_string()))?;
    store.set(key, &bytes)
}

/// The error for a log line.
pub fn describe(error: &Error) -> String {
    match error {
        Error::StoreTableFull => "store table full".to_owned(),
        Error::NoSuchStore => "no such store".to_owned(),
        Error::AccessDenied => "access denied".to_owned(),
        Error::Other(m) => format!("other: {m}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn state(desired: i64, reported: i64, checked_ms: i64) -> ControlMarker {
        ControlMarker {
            state: Some(StateMark {
                desired,
                reported,
                checked_ms,
            }),
            commands: None,
        }
    }

    fn commands(seq: i64, pending: bool, checked_ms: i64) -> ControlMarker {
        ControlMarker {
            state: None,
            commands: Some(CommandsMark {
                seq,
                pending,
                checked_ms,
            }),
        }
    }

    #[test]
    fn a_late_write_never_moves_the_marker_back() {
        // An operator's change (desired 5) lands, then a poll's read that began
        // before it (desired 4) writes late: the marker keeps desired 5.
        let merged = state(5, 2, 100).merge(state(4, 2, 90));
        assert_eq!(merged.state.unwrap().desired, 5);
        // Each version only grows: the device's own report raises `reported`.
        let merged = state(5, 2, 100).merge(state(4, 3, 110));
        assert_eq!(
            merged.state,
            Some(StateMark {
                desired: 5,
                reported: 3,
                checked_ms: 110
            })
        );
        // A newer command makes the device pending whatever arrives later about an
        // older one; at the same newest command, "not pending" is the later news.
        let merged = commands(7, true, 100).merge(commands(6, false, 120));
        assert_eq!(
            merged.commands.unwrap(),
            CommandsMark {
                seq: 7,
                pending: true,
                checked_ms: 100
            }
        );
        let merged = commands(7, true, 100).merge(commands(7, false, 90));
        assert!(!merged.commands.unwrap().pending);
        let merged = commands(7, false, 100).merge(commands(7, true, 120));
        assert!(!merged.commands.unwrap().pending);
        // Parts are independent: a state write keeps what is known about commands.
        let merged = commands(7, false, 100).merge(state(1, 0, 100));
        assert!(merged.state.is_some() && merged.commands.is_some());
    }

    #[test]
    fn old_marks_are_not_trusted() {
        let marker = state(1, 1, 1_000).merge(commands(3, false, 1_000));
        assert!(
            marker
                .fresh_state(1_000 + CONTROL_MARK_MAX_AGE_MS - 1)
                .is_some()
        );
        assert!(
            marker
                .fresh_state(1_000 + CONTROL_MARK_MAX_AGE_MS)
                .is_none()
        );
        assert!(
            marker
                .fresh_commands(1_000 + CONTROL_MARK_MAX_AGE_MS)
                .is_none()
        );
        let json = serde_json::to_value(marker).unwrap();
        assert_eq!(json["commands"]["seq"], 3);
        assert_eq!(
            serde_json::from_value::<ControlMarker>(json).unwrap(),
            marker
        );
    }

    #[test]
    fn keys_follow_the_documented_names() {
        let t = TenantId::parse("acme").unwrap();
        let d = DeviceId::parse("aa:bb:cc").unwrap();
        assert_eq!(device_key(&t, &d), "device:acme:aa:bb:cc");
        assert_eq!(last_key(&t, &d), "last:acme:aa:bb:cc");
        assert_eq!(rate_key(&t, &d), "rate:acme:aa:bb:cc");
        assert_eq!(control_key(&t, &d), "control:acme:aa:bb:cc");
        assert!(device_keys(&t, &d).contains(&control_key(&t, &d)));
        assert_eq!(revoked_key(&TokenScope::Operator), "revoked:operator");
        let operator_tenant = TenantId::parse("operator").unwrap();
        assert_eq!(
            revoked_key(&TokenScope::Tenant(operator_tenant)),
            "revoked:tenant:operator"
        );
        let key = failed_address_key("203.0.113.7");
        let bucket = key.strip_prefix("fail:addr:").unwrap();
        assert_eq!(bucket.len(), 5, "20 bits");
        assert!(bucket.bytes().all(|b| b.is_ascii_hexdigit()));
        assert!(!key.contains("203.0.113.7"), "no address kept: {key}");
        assert_eq!(key, failed_address_key("203.0.113.7"));
        let buckets: std::collections::BTreeSet<String> = (0..2000)
            .map(|i| failed_address_key(&format!("198.51.{}.{}", i / 256, i % 256)))
            .collect();
        assert!(buckets.len() > 1990, "{}", buckets.len());
    }

    #[test]
    fn failure_buckets_are_bounded_and_stable() {
        let t = TenantId::parse("acme").unwrap();
        let key = failed_device_key(&t, &DeviceId::parse("d1").unwrap());
        let bucket = key.strip_prefix("fail:device:").unwrap();
        assert_eq!(bucket.len(), 4);
        assert!(bucket.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_eq!(key, failed_device_key(&t, &DeviceId::parse("d1").unwrap()));
        // "acme" + "d1" is not "acm" + "ed1".
        let other = TenantId::parse("acm").unwrap();
        assert_ne!(
            key,
            failed_device_key(&other, &DeviceId::parse("ed1").unwrap())
        );
        let claim = failed_claim_key("tclaim_abc");
        assert!(claim.starts_with("fail:claim:") && claim.len() == "fail:claim:".len() + 4);
        // Many names spread over the buckets rather than piling into a few.
        let buckets: std::collections::BTreeSet<String> = (0..2000)
            .map(|i| failed_claim_key(&format!("tclaim_{i}")))
            .collect();
        assert!(buckets.len() > 1900, "{}", buckets.len());
    }

    #[test]
    fn last_known_reads_what_ingest_writes() {
        let text = json!({
            "last_seen_ms": 1_795_255_200_123i64,
            "metrics": {
                "temp_c": {"ts_ms": 1_795_255_200_123i64, "value": 21.5},
                "door.open": {"ts_ms": 1_795_255_200_000i64, "value": true},
            }
        });
        let last: LastKnown = serde_json::from_value(text.clone()).unwrap();
        assert_eq!(last.metrics["temp_c"].value, LastValue::Number(21.5));
        assert_eq!(last.metrics["door.open"].value, LastValue::Bool(true));
        assert_eq!(serde_json::to_value(&last).unwrap(), text);
    }

    #[test]
    fn device_state_wire_shape() {
        let state = DeviceState {
            status: DeviceStatus::Disabled,
            key_generation: 4,
            checked_ms: 5,
        };
        assert_eq!(
            serde_json::to_value(state).unwrap(),
            json!({"status": "disabled", "gen": 4, "checked_ms": 5})
        );
    }
}
