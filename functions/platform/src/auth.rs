//! Who is calling: the one access-token check every component runs.
//!
//! ```ignore
//! let caller = auth::authenticate(&req, &[Role::Device])?;
//! let tenant = caller.tenant()?;          // from the verified token, never the request
//! let device = caller.device();           // Some(..) for device tokens
//! ```
//!
//! [`authenticate`] does, in order:
//!
//! 1. `Authorization: Bearer <token>`: missing or malformed → 401 (with
//!    `WWW-Authenticate`, added by [`crate::respond::problem`]);
//! 2. HS256 verification with the `token_signing_key` variable
//!    ([`toaster_core::token::TokenSigner`]): signature, `iss`/`aud`, expiry → 401;
//! 3. operator and admin tokens only: revocation by id, before the role (a revoked
//!    token is 401 wherever it is sent). The token's `jti`
//!    ([`toaster_core::token::TokenId`]) must not be among its scope's revoked ids:
//!    one list per tenant for admin tokens and one for operator tokens
//!    (`revoked:tenant:{tenant}`, `revoked:operator`, see [`crate::kv`]), read from the
//!    key-value store, from PostgreSQL (`access_tokens`) on a miss or when the entry is
//!    older than [`REVOKED_CACHE_MAX_AGE_MS`] (then cached). A revoked token → 401.
//!    The `auth` component rewrites the list after every revocation commits, so a
//!    revoked token is refused on its next call; the age bound caps the damage of a
//!    lost write. One read of one small key per request: the list holds only revoked
//!    tokens that have not expired, and a tenant's lists are its own;
//! 4. role: not among those allowed → 403;
//! 5. device tokens only: revocation. The device's status and key generation are read
//!    from the key-value store (`device:{tenant}:{device}`, see [`crate::kv`]), from
//!    PostgreSQL on a miss or when the entry is older than
//!    [`DEVICE_CACHE_MAX_AGE_MS`] (then cached). A device that is not active, is
//!    unknown, or whose generation differs from the token's → 401. The `auth`
//!    component rewrites the entry on every change, so a disabled device's tokens are
//!    refused on their next call; the age bound caps the damage of a lost write.
//! 6. device tokens only: the per-device rate limit ([`RateLimit`], variable
//!    `device_rate_limit`, e.g. `600/60s`), counted under `rate:{tenant}:{device}`;
//!    over budget → 429 with `Retry-After` = seconds to the end of the window. The
//!    count is a read-modify-write, not atomic: under heavy concurrency of one device
//!    it may let a few more requests through than the budget. It never blocks
//!    another device. If the store fails, requests are let through (logged).
//!
//! A component that authenticates tokens needs `db_url`, `token_signing_key` and
//! `device_rate_limit` in its `[component.X.variables]` and the `default` key-value
//! store.

use std::rc::Rc;

use spin_sdk::http::Request;
use toaster_core::ids::{DeviceId, TenantId};
use toaster_core::problem::Problem;
use toaster_core::token::{Role, TokenError, TokenId, TokenSigner, VerifiedToken, require_role};

use crate::db::{self, Db};
use crate::kv::{self, DeviceState, DeviceStatus, RateWindow, RevokedTokens, TokenScope};
use crate::respond;
use crate::time;

/// The variable holding the HS256 secret.
pub const TOKEN_SIGNING_KEY_VARIABLE: &str = "token_signing_key";
/// The variable holding the per-device rate limit, `<requests>/<seconds>s`.
pub const RATE_LIMIT_VARIABLE: &str = "device_rate_limit";
/// A cached device state older than this is re-read from PostgreSQL.
pub const DEVICE_CACHE_MAX_AGE_MS: i64 = 30_000;
/// A cached revocation list older than this is re-read from PostgreSQL.
pub const REVOKED_CACHE_MAX_AGE_MS: i64 = 30_000;
/// Revoked tokens stay listed this long past their expiry: verification accepts a
/// token up to `LEEWAY_SECS` late, and the database's clock may lag a replica's.
const REVOKED_KEPT_PAST_EXPIRY_SECS: i64 = 60;

/// The verified bearer of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub role: Role,
    /// The operator's or admin's name, or the device id.
    pub subject: String,
    tenant: Option<TenantId>,
    device: Option<DeviceId>,
    /// The token's `gen` (devices only).
    pub key_generation: Option<u64>,
    /// Unix seconds.
    pub expires_at: u64,
    /// The token's id: what a revocation names.
    pub token_id: TokenId,
}

impl Caller {
    fn from_token(token: VerifiedToken) -> Caller {
        let device = token.claims.device_id();
        Caller {
            role: token.claims.role,
            subject: token.claims.sub,
            tenant: token.claims.tenant,
            device,
            key_generation: token.claims.key_generation,
            expires_at: token.expires_at,
            token_id: token.token_id,
        }
    }

    /// The revocation list the caller's token is checked against; `None` for devices,
    /// whose tokens are revoked through their key generation.
    pub fn token_scope(&self) -> Option<TokenScope> {
        match (self.role, &self.tenant) {
            (Role::Operator, _) => Some(TokenScope::Operator),
            (Role::Admin, Some(tenant)) => Some(TokenScope::Tenant(tenant.clone())),
            _ => None,
        }
    }

    /// The caller's tenant: every query filters by it. Operators have none (403).
    pub fn tenant(&self) -> Result<&TenantId, Problem> {
        self.tenant
            .as_ref()
            .ok_or_else(|| Problem::forbidden().with_detail("this endpoint belongs to a tenant"))
    }

    /// The device a device token speaks for; `None` for operators and admins.
    pub fn device(&self) -> Option<&DeviceId> {
        self.device.as_ref()
    }
}

/// Verifies the request's bearer token, its role, and for devices revocation and the
/// rate limit. See the module documentation.
pub fn authenticate(req: &Request, allowed: &[Role]) -> Result<Caller, Problem> {
    let token = bearer(req)?;
    let verified = signer()?.verify(token).map_err(|e| match e {
        TokenError::Rejected(rejection) => {
            eprintln!("auth: access token refused: {rejection:?}");
            Problem::unauthorized().with_detail("invalid or expired access token")
        }
        other => {
            eprintln!("auth: cannot verify access tokens: {other}");
            respond::internal()
        }
    })?;
    let role = require_role(&verified, allowed);
    let caller = Caller::from_token(verified);
    // Before the role: a revoked token is 401 wherever it is sent, not 403 where its
    // role would not do.
    if let Some(scope) = caller.token_scope() {
        check_token_not_revoked(open_store().as_deref(), &scope, &caller.token_id)?;
    }
    role.map_err(|e| Problem::forbidden().with_detail(e.to_string()))?;
    if caller.role == Role::Device {
        let (Some(tenant), Some(device), Some(generation)) =
            (&caller.tenant, &caller.device, caller.key_generation)
        else {
            // TokenSigner::verify guarantees all three for device tokens.
            return Err(Problem::unauthorized());
        };
        // One store handle for both checks.
        let store = open_store();
        check_not_revoked(store.as_deref(), tenant, device, generation)?;
        count_rate(
            store.as_deref(),
            &RateLimit::from_variable()?,
            tenant,
            device,
            time::now_secs(),
        )?;
    }
    Ok(caller)
}

/// The token of an `Authorization: Bearer` header; 401 if missing or malformed.
pub fn bearer(req: &Request) -> Result<&str, Problem> {
    let header = req
        .header("authorization")
        .and_then(|v| v.as_str())
        .ok_or_else(|| Problem::unauthorized().with_detail("a bearer token is required"))?;
    parse_bearer(header).ok_or_else(|| {
        Problem::unauthorized().with_detail("the Authorization header must be `Bearer <token>`")
    })
}

fn parse_bearer(header: &str) -> Option<&str> {
    let (scheme, token) = header.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty() && !token.contains(' '))
        .then_some(token)
}

/// The deployment's token signer, from the `token_signing_key` variable. A missing or
/// short key is a deployment error: 500 naming it, logged ([`crate::config::get`]).
pub fn signer() -> Result<TokenSigner, Problem> {
    crate::config::get(
        TOKEN_SIGNING_KEY_VARIABLE,
        toaster_core::config::token_signing_key,
    )
}

fn check_token_not_revoked(
    store: Option<&kv::Store>,
    scope: &TokenScope,
    token_id: &TokenId,
) -> Result<(), Problem> {
    let revoked = revoked_tokens_in(store, scope)?;
    if revoked.ids.iter().any(|id| id == token_id.as_str()) {
        eprintln!("auth: revoked token {token_id} refused");
        return Err(Problem::unauthorized().with_detail("invalid or expired access token"));
    }
    Ok(())
}

/// The scope's revoked token ids: from the key-value store when fresh, else from
/// PostgreSQL (and then cached).
fn revoked_tokens_in(
    store: Option<&kv::Store>,
    scope: &TokenScope,
) -> Result<RevokedTokens, Problem> {
    let key = kv::revoked_key(scope);
    if let Some(store) = store {
        match kv::get_json::<RevokedTokens>(store, &key) {
            Ok(Some(revoked))
                if is_fresh_at(revoked.checked_ms, time::now_ms(), REVOKED_CACHE_MAX_AGE_MS) =>
            {
                return Ok(revoked);
            }
            Ok(_) => {}
            Err(e) => eprintln!("auth: cannot read {key}: {}", kv::describe(&e)),
        }
    }
    let revoked = load_revoked_tokens(&Db::open()?, scope)?;
    if let Some(store) = store
        && let Err(e) = kv::set_json(store, &key, &revoked)
    {
        eprintln!("auth: cannot cache {key}: {}", kv::describe(&e));
    }
    Ok(revoked)
}

/// Reads the scope's revoked tokens that have not expired from `access_tokens`
/// (stamped now).
pub fn load_revoked_tokens(db: &Db, scope: &TokenScope) -> Result<RevokedTokens, Problem> {
    // Two statements rather than `IS NOT DISTINCT FROM`, which no index serves.
    let kept = db::int8(REVOKED_KEPT_PAST_EXPIRY_SECS);
    let rows = match scope.tenant() {
        None => db.query(
            "SELECT token_id FROM access_tokens WHERE tenant_id IS NULL \
             AND revoked_at IS NOT NULL AND expires_at > now() - make_interval(secs => $1::int8) \
             ORDER BY token_id",
            &[kept],
        )?,
        Some(tenant) => db.query(
            "SELECT token_id FROM access_tokens WHERE tenant_id = $2 \
             AND revoked_at IS NOT NULL AND expires_at > now() - make_interval(secs => $1::int8) \
             ORDER BY token_id",
            &[kept, db::text(tenant.as_str())],
        )?,
    };
    let ids = rows
        .rows
        .iter()
        .map(|row| db::column::<String>(row, 0))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(RevokedTokens {
        ids,
        checked_ms: time::now_ms(),
    })
}

/// Rewrites the scope's cached revocation list from PostgreSQL after a revocation
/// committed, so the token is refused on its next call to any component. Best effort:
/// a failure is logged (and the stale entry removed if possible);
/// [`REVOKED_CACHE_MAX_AGE_MS`] bounds its effect.
pub fn cache_revoked_tokens(db: &Db, scope: &TokenScope) {
    let key = kv::revoked_key(scope);
    let store = match kv::open() {
        Ok(store) => store,
        Err(e) => {
            eprintln!("auth: cannot update {key}: {}", kv::describe(&e));
            return;
        }
    };
    let written = load_revoked_tokens(db, scope)
        .map_err(|p| format!("cannot read the revocations: {}", p.title))
        .and_then(|revoked| kv::set_json(&store, &key, &revoked).map_err(|e| kv::describe(&e)));
    if let Err(e) = written {
        eprintln!("auth: cannot update {key}: {e}");
        // A stale entry is worse than none: the next request reads PostgreSQL.
        let _ = store.delete(&key);
    }
}

fn check_not_revoked(
    store: Option<&kv::Store>,
    tenant: &TenantId,
    device: &DeviceId,
    generation: u64,
) -> Result<(), Problem> {
    match device_state_in(store, tenant, device)? {
        Some(state)
            if state.status == DeviceStatus::Active && state.key_generation == generation =>
        {
            Ok(())
        }
        state => {
            let why = match state {
                None => "no such device".to_owned(),
                Some(s) if s.status != DeviceStatus::Active => {
                    format!("the device is {}", s.status.as_str())
                }
                Some(s) => format!(
                    "the token is for key generation {generation}, the device is at {}",
                    s.key_generation
                ),
            };
            eprintln!("auth: device token refused for {tenant}/{device}: {why}");
            Err(Problem::unauthorized().with_detail("invalid or expired access token"))
        }
    }
}

/// The device's status and key generation: from the key-value store when fresh, else
/// from PostgreSQL (and then cached). `None`: no such device.
pub fn device_state(tenant: &TenantId, device: &DeviceId) -> Result<Option<DeviceState>, Problem> {
    device_state_in(open_store().as_deref(), tenant, device)
}

/// The store, or `None` (logged) when it cannot be opened: the checks then fall back
/// to PostgreSQL, or let the request through uncounted.
fn open_store() -> Option<Rc<kv::Store>> {
    kv::open()
        .inspect_err(|e| eprintln!("auth: key-value store unavailable: {}", kv::describe(e)))
        .ok()
}

fn device_state_in(
    store: Option<&kv::Store>,
    tenant: &TenantId,
    device: &DeviceId,
) -> Result<Option<DeviceState>, Problem> {
    let now = time::now_ms();
    let key = kv::device_key(tenant, device);
    if let Some(store) = store {
        match kv::get_json::<DeviceState>(store, &key) {
            Ok(Some(state)) if is_fresh(&state, now) => return Ok(Some(state)),
            Ok(_) => {}
            Err(e) => eprintln!("auth: cannot read {key}: {}", kv::describe(&e)),
        }
    }
    let db = Db::open()?;
    let state = load_device_state(&db, tenant, device)?;
    if let (Some(store), Some(state)) = (store, &state)
        && let Err(e) = kv::set_json(store, &key, state)
    {
        eprintln!("auth: cannot cache {key}: {}", kv::describe(&e));
    }
    Ok(state)
}

fn is_fresh(state: &DeviceState, now_ms: i64) -> bool {
    is_fresh_at(state.checked_ms, now_ms, DEVICE_CACHE_MAX_AGE_MS)
}

/// Whether an entry read from PostgreSQL at `checked_ms` may still be trusted at
/// `now_ms`. One from the future (a replica's clock ahead) is not.
fn is_fresh_at(checked_ms: i64, now_ms: i64, max_age_ms: i64) -> bool {
    (0..=max_age_ms).contains(&(now_ms - checked_ms))
}

/// Reads `devices.status` and `devices.key_generation` (stamped now).
pub fn load_device_state(
    db: &Db,
    tenant: &TenantId,
    device: &DeviceId,
) -> Result<Option<DeviceState>, Problem> {
    let rows = db.query(
        "SELECT status, key_generation FROM devices WHERE tenant_id = $1 AND device_id = $2",
        &[db::text(tenant.as_str()), db::text(device.as_str())],
    )?;
    let Some(row) = rows.rows.first() else {
        return Ok(None);
    };
    let status: String = db::column(row, 0)?;
    let generation: i64 = db::column(row, 1)?;
    let status = DeviceStatus::parse(&status).ok_or_else(|| {
        eprintln!("auth: unknown device status in the database");
        respond::internal()
    })?;
    Ok(Some(DeviceState {
        status,
        key_generation: u64::try_from(generation).unwrap_or(0),
        checked_ms: time::now_ms(),
    }))
}

/// Writes the device's state to the cache after a change committed in PostgreSQL, so
/// its outstanding tokens are judged by the new state on their next call. Best effort:
/// a failure is logged, and [`DEVICE_CACHE_MAX_AGE_MS`] bounds its effect.
pub fn cache_device_state(tenant: &TenantId, device: &DeviceId, state: &DeviceState) {
    let key = kv::device_key(tenant, device);
    let result = kv::open().and_then(|store| {
        kv::set_json(&store, &key, state).inspect_err(|_| {
            // A stale entry is worse than none: try to remove it.
            let _ = store.delete(&key);
        })
    });
    if let Err(e) = result {
        eprintln!("auth: cannot update {key}: {}", kv::describe(&e));
    }
}

/// A budget of `requests` per window of `window_secs` seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    pub requests: u32,
    pub window_secs: u32,
}

impl RateLimit {
    /// spin.toml's default for `device_rate_limit`.
    pub const DEFAULT: RateLimit = RateLimit {
        requests: 600,
        window_secs: 60,
    };

    /// `600/60s` (or `600/60`): 600 requests per 60 seconds. Both numbers at least 1;
    /// the window at most a day ([`toaster_core::config::rate_limit`]).
    pub fn parse(text: &str) -> Option<RateLimit> {
        toaster_core::config::rate_limit(text)
            .ok()
            .map(RateLimit::from)
    }

    /// From the `device_rate_limit` variable ([`RateLimit::from_named`]).
    pub fn from_variable() -> Result<RateLimit, Problem> {
        RateLimit::from_named(RATE_LIMIT_VARIABLE)
    }

    /// From the variable `name`: spin.toml's default if it is not granted; a bad value
    /// is never replaced by a default but fails the request, 500 naming the variable
    /// ([`crate::config::get`]).
    pub fn from_named(name: &str) -> Result<RateLimit, Problem> {
        crate::config::get(name, |text| {
            toaster_core::config::rate_limit(text).map(RateLimit::from)
        })
    }

    /// Counts one request at `now_secs` against `current`: the window to store, or
    /// the seconds until the client may retry.
    pub fn decide(&self, current: Option<RateWindow>, now_secs: u64) -> Result<RateWindow, u32> {
        match self.retry_after(current, now_secs) {
            Some(retry_after) => Err(retry_after),
            None => Ok(self.counted(current, now_secs)),
        }
    }

    /// The seconds until the end of the window if `current` has spent the budget at
    /// `now_secs`; `None` while there is budget left. Counts nothing: for limits that
    /// count only some outcomes ([`crate::throttle`]).
    pub fn retry_after(&self, current: Option<RateWindow>, now_secs: u64) -> Option<u32> {
        let window = now_secs / u64::from(self.window_secs);
        if Self::count_in(current, window) < self.requests {
            return None;
        }
        let window_end = (window + 1) * u64::from(self.window_secs);
        let retry_after = window_end.saturating_sub(now_secs).max(1);
        Some(u32::try_from(retry_after).unwrap_or(u32::MAX))
    }

    /// `current` with one more request counted at `now_secs`: a new window once the
    /// stored one has ended.
    pub fn counted(&self, current: Option<RateWindow>, now_secs: u64) -> RateWindow {
        let window = now_secs / u64::from(self.window_secs);
        RateWindow {
            window,
            count: Self::count_in(current, window).saturating_add(1),
        }
    }

    fn count_in(current: Option<RateWindow>, window: u64) -> u32 {
        match current {
            Some(current) if current.window == window => current.count,
            _ => 0,
        }
    }
}

impl From<toaster_core::config::Rate> for RateLimit {
    fn from(rate: toaster_core::config::Rate) -> RateLimit {
        RateLimit {
            requests: rate.requests,
            window_secs: rate.window_secs,
        }
    }
}

/// Counts one request of `device` against `limit`; 429 with `Retry-After` when over.
pub fn check_rate(
    limit: &RateLimit,
    tenant: &TenantId,
    device: &DeviceId,
    now_secs: u64,
) -> Result<(), Problem> {
    count_rate(open_store().as_deref(), limit, tenant, device, now_secs)
}

fn count_rate(
    store: Option<&kv::Store>,
    limit: &RateLimit,
    tenant: &TenantId,
    device: &DeviceId,
    now_secs: u64,
) -> Result<(), Problem> {
    let key = kv::rate_key(tenant, device);
    let Some(store) = store else {
        eprintln!("auth: rate limit not counted, store unavailable");
        return Ok(());
    };
    let current = kv::get_json::<RateWindow>(store, &key).unwrap_or_else(|e| {
        eprintln!("auth: cannot read {key}: {}", kv::describe(&e));
        None
    });
    match limit.decide(current, now_secs) {
        Ok(next) => {
            if let Err(e) = kv::set_json(store, &key, &next) {
                eprintln!("auth: cannot count in {key}: {}", kv::describe(&e));
            }
            Ok(())
        }
        Err(retry_after) => Err(Problem::too_many_requests(retry_after).with_detail(format!(
            "this device may make {} requests per {} s",
            limit.requests, limit.window_secs
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_scheme_is_case_insensitive_and_strict() {
        assert_eq!(parse_bearer("Bearer abc.def.ghi"), Some("abc.def.ghi"));
        assert_eq!(parse_bearer("bearer  abc"), Some("abc"));
        assert_eq!(parse_bearer("Basic abc"), None);
        assert_eq!(parse_bearer("Bearer"), None);
        assert_eq!(parse_bearer("Bearer "), None);
        assert_eq!(parse_bearer("Bearer a b"), None);
        assert_eq!(parse_bearer("abc"), None);
    }

    #[test]
    fn rate_limit_parses_the_variable() {
        assert_eq!(
            RateLimit::parse("600/60s"),
            Some(RateLimit {
                requests: 600,
                window_secs: 60
            })
        );
        assert_eq!(
            RateLimit::parse(" 5 / 1 "),
            Some(RateLimit {
                requests: 5,
                window_secs: 1
            })
        );
        for bad in [
            "",
            "600",
            "0/60s",
            "600/0s",
            "600/60m",
            "-1/60s",
            "600/86401s",
        ] {
            assert_eq!(RateLimit::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn rate_limit_counts_within_a_window_and_resets_after() {
        let limit = RateLimit {
            requests: 2,
            window_secs: 60,
        };
        let first = limit.decide(None, 120).unwrap();
        assert_eq!(
            first,
            RateWindow {
                window: 2,
                count: 1
            }
        );
        let second = limit.decide(Some(first), 130).unwrap();
        assert_eq!(second.count, 2);
        assert_eq!(limit.decide(Some(second), 170), Err(10));
        assert_eq!(limit.decide(Some(second), 179), Err(1));
        assert_eq!(
            limit.decide(Some(second), 180),
            Ok(RateWindow {
                window: 3,
                count: 1
            })
        );
    }

    #[test]
    fn a_limit_can_be_checked_and_counted_apart() {
        let limit = RateLimit {
            requests: 2,
            window_secs: 60,
        };
        assert_eq!(limit.retry_after(None, 120), None);
        let one = limit.counted(None, 120);
        assert_eq!(
            one,
            RateWindow {
                window: 2,
                count: 1
            }
        );
        assert_eq!(
            limit.retry_after(Some(one), 121),
            None,
            "checking counts nothing"
        );
        let two = limit.counted(Some(one), 130);
        assert_eq!(two.count, 2);
        assert_eq!(limit.retry_after(Some(two), 170), Some(10));
        // Counting goes on past the budget (a refusal counted while over it).
        assert_eq!(limit.counted(Some(two), 171).count, 3);
        // A new window starts from zero.
        assert_eq!(limit.retry_after(Some(two), 180), None);
        assert_eq!(
            limit.counted(Some(two), 180),
            RateWindow {
                window: 3,
                count: 1
            }
        );
        let full = RateWindow {
            window: 3,
            count: u32::MAX,
        };
        assert_eq!(limit.counted(Some(full), 181).count, u32::MAX);
    }

    #[test]
    fn cache_entries_expire() {
        let state = DeviceState {
            status: DeviceStatus::Active,
            key_generation: 1,
            checked_ms: 1_000_000,
        };
        assert!(is_fresh(&state, 1_000_000));
        assert!(is_fresh(&state, 1_000_000 + DEVICE_CACHE_MAX_AGE_MS));
        assert!(!is_fresh(&state, 1_000_001 + DEVICE_CACHE_MAX_AGE_MS));
        // An entry from the future (a replica's clock ahead) is not trusted.
        assert!(!is_fresh(&state, 999_999));
    }
}
