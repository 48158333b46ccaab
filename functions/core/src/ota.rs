//! OTA decisions: firmware versions and the ranges that select devices by theirs,
//! cohorts, stages, the transitions of a device through a rollout, the halt rule, and
//! signed update manifests.
//!
//! Everything here is a pure function over values; the `ota` component stores and
//! serves them. The choices (and why) are in `docs/ota.md`.
//!
//! - **Versions** are SemVer 2.0.0 ([`FirmwareVersion`]). Build metadata is carried
//!   but never makes a difference: `1.2.0+b1` and `1.2.0+b2` are the same release (so
//!   both cannot be uploaded for one model, and neither is an upgrade of the other).
//!   Pre-releases sort before their release (`1.2.0-rc.1 < 1.2.0`).
//! - **Ranges** ([`VersionRange`]) are Cargo-style requirements (`>=1.2.0, <1.4.0`,
//!   `^1.3`, `*`). As in Cargo and npm, a pre-release version matches only a range
//!   that names a pre-release of the same `major.minor.patch`, so a device running a
//!   beta is never swept into a rollout aimed at release builds by accident.
//! - **Cohorts**: a device's bucket is a function of (rollout id, device id) alone
//!   ([`cohort_bucket`], 0..10 000); a stage of `p` percent takes buckets below
//!   `100 p`. A device's answer is therefore stable, and a later stage keeps every
//!   device of the earlier ones.
//! - **Halt rule** ([`HaltRule`]): among devices with an outcome (installed, failed,
//!   timed out), once at least `min_reports` exist, a failure share at or above the
//!   threshold halts the rollout. Computed in integers (parts per million), so "exactly
//!   the threshold" means exactly.
//! - **Firmware destinations** ([`check_destination`]): every device of a rollout
//!   fetches the URL inside its own network, so by default it must lead to the public
//!   internet: no loopback, private, link-local or other special-purpose address (in
//!   any spelling), no `localhost`, `.local`, `.internal` or single-label name. An
//!   operator allows private destinations for on-premises setups
//!   ([`PrivateDestinations`], the `firmware_allowed_private` variable).
//! - **Manifests** ([`Manifest`]) are signed with Ed25519 over their canonical bytes:
//!   the JSON object with its six members in lexicographic order and no whitespace
//!   (RFC 8785 JCS for this shape).

use std::cmp::Ordering;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::de::{self, Deserialize, Deserializer};
use serde::ser::{Serialize, Serializer};
use sha2::{Digest, Sha256};
use thiserror::Error;

use crate::ids::{DeviceId, Model};
use crate::net::{IpRange, Special, special_use};

/// Why a field of a firmware or rollout is not acceptable. Never repeats the input.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum OtaError {
    #[error(
        "must be a semantic version such as 1.4.2 or 2.0.0-rc.1 (semver.org), at most {max} characters"
    )]
    Version { max: usize },
    #[error(
        "must be a version requirement such as \">=1.2.0, <1.4.0\", \"^1.3\" or \"*\", at most {max} characters"
    )]
    Range { max: usize },
    #[error(
        "must be an absolute https:// URL with a host and no user name or password, written in URI characters (RFC 3986: percent-encode anything else), at most {max} characters"
    )]
    Url { max: usize },
    #[error("must be 64 lowercase hexadecimal digits (SHA-256)")]
    Sha256,
    #[error(
        "must be from 1 to {max} entries, each a whole percentage from 1 to 100, strictly increasing"
    )]
    Stages { max: usize },
    #[error("must be a fraction greater than 0 and at most 1")]
    Threshold,
}

// ---------------------------------------------------------------------------------
// Versions and ranges

/// A firmware version: SemVer 2.0.0, no leading `v`, no surrounding space.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct FirmwareVersion(semver::Version);

impl FirmwareVersion {
    pub const MAX_LEN: usize = 128;

    pub fn parse(input: &str) -> Result<Self, OtaError> {
        let error = OtaError::Version { max: Self::MAX_LEN };
        if input.len() > Self::MAX_LEN {
            return Err(error);
        }
        semver::Version::parse(input).map(Self).map_err(|_| error)
    }

    /// The version without build metadata: what identifies a release. Firmware is
    /// unique per (tenant, model, release).
    pub fn release(&self) -> String {
        let mut release = self.0.clone();
        release.build = semver::BuildMetadata::EMPTY;
        release.to_string()
    }

    /// SemVer precedence: build metadata ignored, pre-releases before their release.
    pub fn precedence(&self, other: &FirmwareVersion) -> Ordering {
        self.0.cmp_precedence(&other.0)
    }

    /// Whether installing `self` on a device running `current` moves it forward.
    /// The same release (whatever its build metadata) is not an upgrade.
    pub fn is_upgrade_from(&self, current: &FirmwareVersion) -> bool {
        self.precedence(current) == Ordering::Greater
    }
}

impl fmt::Display for FirmwareVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl Serialize for FirmwareVersion {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for FirmwareVersion {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(deserializer)?;
        Self::parse(&raw).map_err(de::Error::custom)
    }
}

/// Which current versions a rollout applies to: a Cargo-style version requirement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionRange(semver::VersionReq);

impl VersionRange {
    pub const MAX_LEN: usize = 256;

    pub fn parse(input: &str) -> Result<Self, OtaError> {
        let error = OtaError::Range { max: Self::MAX_LEN };
        if input.len() > Self::MAX_LEN || input.trim().is_empty() {
            return Err(error);
        }
        semver::VersionReq::parse(input)
            .map(Self)
            .map_err(|_| error)
    }

    /// See the module documentation for pre-releases; build metadata is ignored.
    pub fn matches(&self, version: &FirmwareVersion) -> bool {
        self.0.matches(&version.0)
    }
}

impl fmt::Display for VersionRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl Serialize for VersionRange {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for VersionRange {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(deserializer)?;
        Self::parse(&raw).map_err(de::Error::custom)
    }
}

/// Whether a device running `current` may be offered `target` by a rollout whose
/// selector range is `range`: the range holds `current`, and `target` is newer.
pub fn is_offerable(
    range: &VersionRange,
    current: &FirmwareVersion,
    target: &FirmwareVersion,
) -> bool {
    range.matches(current) && target.is_upgrade_from(current)
}

// ---------------------------------------------------------------------------------
// Firmware fields

/// Where a device downloads firmware: an absolute `https` URL (RFC 3986) with a host,
/// in URI characters only (anything else percent-encoded), without a user name or
/// password. Every device of a rollout fetches it as given, so a URL a device's HTTP
/// client could not parse is refused here, not found out by a fleet whose every
/// download fails; and credentials in it would go to every device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FirmwareUrl(String);

impl FirmwareUrl {
    pub const MAX_LEN: usize = 2048;

    pub fn parse(input: &str) -> Result<Self, OtaError> {
        if input.len() <= Self::MAX_LEN && is_https_url(input) {
            Ok(Self(input.to_owned()))
        } else {
            Err(OtaError::Url { max: Self::MAX_LEN })
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The host as written: a name, an IPv4 address, or an IPv6 address in brackets.
    pub fn host(&self) -> &str {
        let rest = self.0.strip_prefix("https://").unwrap_or(&self.0);
        let authority = &rest[..rest.find(['/', '?', '#']).unwrap_or(rest.len())];
        if authority.starts_with('[') {
            authority
                .find(']')
                .map_or(authority, |end| &authority[..=end])
        } else {
            authority.split(':').next().unwrap_or(authority)
        }
    }
}

/// `https://` authority [path] [`?` query] [`#` fragment], as RFC 3986 writes them.
fn is_https_url(input: &str) -> bool {
    let Some(rest) = input.strip_prefix("https://") else {
        return false;
    };
    let (authority, tail) = rest.split_at(rest.find(['/', '?', '#']).unwrap_or(rest.len()));
    let (path_and_query, fragment) = match tail.split_once('#') {
        Some((before, fragment)) => (before, Some(fragment)),
        None => (tail, None),
    };
    // pchar, `/` and `?`: what a path, a query and a fragment are made of.
    let tail_char = |b: u8| is_unreserved(b) || is_sub_delim(b) || b":@/?".contains(&b);
    is_authority(authority)
        && is_escaped(path_and_query, tail_char)
        && fragment.is_none_or(|f| is_escaped(f, tail_char))
}

/// A host (a name, or an IPv6 address in brackets) and an optional port; no user info.
fn is_authority(authority: &str) -> bool {
    let (host_ok, after_host) = match authority.strip_prefix('[') {
        Some(literal) => match literal.split_once(']') {
            Some((address, after)) => (address.parse::<std::net::Ipv6Addr>().is_ok(), after),
            None => return false,
        },
        None => {
            let (name, after) = authority.split_at(authority.find(':').unwrap_or(authority.len()));
            (
                !name.is_empty() && is_escaped(name, |b| is_unreserved(b) || is_sub_delim(b)),
                after,
            )
        }
    };
    let port_ok = match after_host.strip_prefix(':') {
        None => after_host.is_empty(),
        Some(port) => {
            port.len() <= 5
                && port.bytes().all(|b| b.is_ascii_digit())
                && port.parse::<u32>().is_ok_and(|p| (1..=65_535).contains(&p))
        }
    };
    host_ok && port_ok
}

/// Whether `text` is `allowed` characters and well-formed `%XX` escapes only.
fn is_escaped(text: &str, allowed: impl Fn(u8) -> bool) -> bool {
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = |at: usize| bytes.get(at).is_some_and(u8::is_ascii_hexdigit);
            if !(hex(i + 1) && hex(i + 2)) {
                return false;
            }
            i += 3;
        } else if allowed(bytes[i]) {
            i += 1;
        } else {
            return false;
        }
    }
    true
}

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

fn is_sub_delim(b: u8) -> bool {
    matches!(
        b,
        b'!' | b'$' | b'&' | b'\'' | b'(' | b')' | b'*' | b'+' | b',' | b';' | b'='
    )
}

/// A SHA-256 digest as 64 lowercase hex digits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sha256Hex(String);

impl Sha256Hex {
    pub fn parse(input: &str) -> Result<Self, OtaError> {
        if input.len() == 64
            && input
                .bytes()
                .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        {
            Ok(Self(input.to_owned()))
        } else {
            Err(OtaError::Sha256)
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

macro_rules! string_serde {
    ($name:ident) => {
        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(&self.0)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let raw = String::deserialize(deserializer)?;
                Self::parse(&raw).map_err(de::Error::custom)
            }
        }
    };
}
string_serde!(FirmwareUrl);
string_serde!(Sha256Hex);

mod destinations;
pub use destinations::*;

// ---------------------------------------------------------------------------------
// Cohorts and stages

/// Buckets per rollout: a stage's percentage `p` takes buckets `0 .. 100 p`.
pub const BUCKETS: u32 = 10_000;

/// The device's bucket in the rollout, in `0..BUCKETS`: the first eight bytes of
/// SHA-256(`"toaster-ota-cohort\0" rollout "\0" device`) as a big-endian integer,
/// modulo [`BUCKETS`] (the bias of 2^64 mod 10 000 is below 10^-15).
pub fn cohort_bucket(rollout_id: &str, device: &DeviceId) -> u32 {
    let mut hash = Sha256::new();
    hash.update(b"toaster-ota-cohort\0");
    hash.update(rollout_id.as_bytes());
    hash.update(b"\0");
    hash.update(device.as_str().as_bytes());
    let digest = hash.finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    (u64::from_be_bytes(first) % u64::from(BUCKETS)) as u32
}

/// Whether the device is among the first `percent` percent of the rollout's devices.
pub fn in_cohort(rollout_id: &str, device: &DeviceId, percent: u8) -> bool {
    cohort_bucket(rollout_id, device) < u32::from(percent.min(100)) * (BUCKETS / 100)
}

/// A rollout's stages: 1 to [`Stages::MAX`] whole percentages in `1..=100`, strictly
/// increasing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stages(Vec<u8>);

impl Stages {
    pub const MAX: usize = 20;

    pub fn new(percentages: &[u32]) -> Result<Self, OtaError> {
        let error = OtaError::Stages { max: Self::MAX };
        if percentages.is_empty() || percentages.len() > Self::MAX {
            return Err(error);
        }
        let mut stages = Vec::with_capacity(percentages.len());
        for &p in percentages {
            let p = u8::try_from(p).map_err(|_| error.clone())?;
            if !(1..=100).contains(&p) || stages.last().is_some_and(|&last| last >= p) {
                return Err(error);
            }
            stages.push(p);
        }
        Ok(Self(stages))
    }

    pub fn as_slice(&self) -> &[u8] {
        &self.0
    }

    /// The percentage of stage `index` (clamped to the last stage).
    pub fn percent(&self, index: usize) -> u8 {
        let last = self.0.len() - 1;
        self.0[index.min(last)]
    }

    pub fn is_last(&self, index: usize) -> bool {
        index + 1 >= self.0.len()
    }
}

impl<'de> Deserialize<'de> for Stages {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = Vec::<u32>::deserialize(deserializer)?;
        Self::new(&raw).map_err(de::Error::custom)
    }
}

impl Serialize for Stages {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(serializer)
    }
}

// ---------------------------------------------------------------------------------
// Rollout lifecycle

/// A rollout's state. `active`, `paused` and `halted` hold the (tenant, model,
/// channel) slot; `aborted` is terminal and frees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RolloutState {
    /// Offers the firmware to the devices of the current stage.
    Active,
    /// Offers nothing; an admin may resume it.
    Paused,
    /// Stopped by the halt rule; offers nothing; may only be aborted.
    Halted,
    /// Stopped by an admin for good.
    Aborted,
}

impl RolloutState {
    pub fn as_str(self) -> &'static str {
        match self {
            RolloutState::Active => "active",
            RolloutState::Paused => "paused",
            RolloutState::Halted => "halted",
            RolloutState::Aborted => "aborted",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "active" => Some(RolloutState::Active),
            "paused" => Some(RolloutState::Paused),
            "halted" => Some(RolloutState::Halted),
            "aborted" => Some(RolloutState::Aborted),
            _ => None,
        }
    }
}

/// What an admin asks of a rollout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RolloutAction {
    Advance,
    Pause,
    Resume,
    Abort,
}

impl RolloutAction {
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "advance" => Some(RolloutAction::Advance),
            "pause" => Some(RolloutAction::Pause),
            "resume" => Some(RolloutAction::Resume),
            "abort" => Some(RolloutAction::Abort),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            RolloutAction::Advance => "advance",
            RolloutAction::Pause => "pause",
            RolloutAction::Resume => "resume",
            RolloutAction::Abort => "abort",
        }
    }
}

/// Why an action does not apply to the rollout as it is (409).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ActionRefused {
    #[error("the rollout is {0}; only an active rollout can be {1}")]
    NotActive(&'static str, &'static str),
    #[error("the rollout is {0}; only a paused rollout can be resumed")]
    NotPaused(&'static str),
    #[error("the rollout is already aborted")]
    AlreadyAborted,
    #[error("the rollout is at its last stage")]
    LastStage,
    #[error("the current stage is not healthy: {0}")]
    Unhealthy(String),
}

/// The rollout after an action: its new state and stage index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RolloutPosition {
    pub state: RolloutState,
    pub stage: usize,
}

/// Applies `action` to a rollout at `position` whose current stage has `tally`.
/// Advancing needs an active rollout, a next stage, and a healthy current stage
/// ([`HaltRule::stage_health`]).
pub fn apply_action(
    action: RolloutAction,
    position: RolloutPosition,
    stages: &Stages,
    rule: &HaltRule,
    tally: &Tally,
) -> Result<RolloutPosition, ActionRefused> {
    use RolloutState::*;
    let state = position.state;
    match action {
        RolloutAction::Pause => match state {
            Active => Ok(RolloutPosition {
                state: Paused,
                ..position
            }),
            other => Err(ActionRefused::NotActive(other.as_str(), "paused")),
        },
        RolloutAction::Resume => match state {
            Paused => Ok(RolloutPosition {
                state: Active,
                ..position
            }),
            other => Err(ActionRefused::NotPaused(other.as_str())),
        },
        RolloutAction::Abort => match state {
            Aborted => Err(ActionRefused::AlreadyAborted),
            _ => Ok(RolloutPosition {
                state: Aborted,
                ..position
            }),
        },
        RolloutAction::Advance => {
            if state != Active {
                return Err(ActionRefused::NotActive(state.as_str(), "advanced"));
            }
            if stages.is_last(position.stage) {
                return Err(ActionRefused::LastStage);
            }
            rule.stage_health(tally).map_err(ActionRefused::Unhealthy)?;
            Ok(RolloutPosition {
                state,
                stage: position.stage + 1,
            })
        }
    }
}

// ---------------------------------------------------------------------------------
// Devices in a rollout

/// Where a device is in a rollout, as stored. A device whose report deadline passed
/// while `Offered`, `Downloading` or `Installing` is *timed out*: counted as failed,
/// derived at read time rather than stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DeviceProgress {
    Offered,
    Downloading,
    Installing,
    Installed,
    Failed,
}

impl DeviceProgress {
    pub fn as_str(self) -> &'static str {
        match self {
            DeviceProgress::Offered => "offered",
            DeviceProgress::Downloading => "downloading",
            DeviceProgress::Installing => "installing",
            DeviceProgress::Installed => "installed",
            DeviceProgress::Failed => "failed",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "offered" => Some(DeviceProgress::Offered),
            "downloading" => Some(DeviceProgress::Downloading),
            "installing" => Some(DeviceProgress::Installing),
            "installed" => Some(DeviceProgress::Installed),
            "failed" => Some(DeviceProgress::Failed),
            _ => None,
        }
    }

    pub fn is_final(self) -> bool {
        matches!(self, DeviceProgress::Installed | DeviceProgress::Failed)
    }
}

/// What a device reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ReportStatus {
    Downloading,
    Installing,
    Installed,
    Failed,
}

impl ReportStatus {
    pub fn progress(self) -> DeviceProgress {
        match self {
            ReportStatus::Downloading => DeviceProgress::Downloading,
            ReportStatus::Installing => DeviceProgress::Installing,
            ReportStatus::Installed => DeviceProgress::Installed,
            ReportStatus::Failed => DeviceProgress::Failed,
        }
    }
}

/// The outcome of a valid report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    /// The device moves to the new state.
    Moved(DeviceProgress),
    /// The same report again (a retry): nothing changes.
    Repeated,
}

/// A report that does not follow from the device's state (409).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("a device that is {from} cannot report {to}")]
pub struct TransitionRefused {
    pub from: &'static str,
    pub to: &'static str,
}

/// Checks a report against the device's state: forward only
/// (`offered → downloading → installing → installed`, `failed` from any unfinished
/// state), nothing after `installed` or `failed`, and the same status again is a
/// harmless retry.
pub fn transition(
    from: DeviceProgress,
    report: ReportStatus,
) -> Result<Transition, TransitionRefused> {
    let to = report.progress();
    if from == to {
        return Ok(Transition::Repeated);
    }
    if from.is_final() || to < from {
        return Err(TransitionRefused {
            from: from.as_str(),
            to: to.as_str(),
        });
    }
    Ok(Transition::Moved(to))
}

/// How many devices of a rollout are in each state. The states are disjoint:
/// a timed-out device is counted in `timed_out` only.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct Tally {
    pub offered: u64,
    pub downloading: u64,
    pub installing: u64,
    pub installed: u64,
    pub failed: u64,
    pub timed_out: u64,
}

impl Tally {
    /// Every device ever offered the rollout.
    pub fn total(&self) -> u64 {
        self.offered
            + self.downloading
            + self.installing
            + self.installed
            + self.failed
            + self.timed_out
    }

    /// Devices with an outcome: installed, failed or timed out.
    pub fn outcomes(&self) -> u64 {
        self.installed + self.failures()
    }

    /// Failed or timed out.
    pub fn failures(&self) -> u64 {
        self.failed + self.timed_out
    }

    /// Failures among outcomes; 0 without outcomes.
    pub fn failure_rate(&self) -> f64 {
        match self.outcomes() {
            0 => 0.0,
            n => self.failures() as f64 / n as f64,
        }
    }
}

/// When a rollout stops itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HaltRule {
    /// The failure threshold in parts per million.
    pub threshold_ppm: u32,
    /// Outcomes needed before the threshold applies; at least 1.
    pub min_reports: u32,
}

impl HaltRule {
    /// `threshold` is a fraction in `(0, 1]`, kept to six decimals.
    pub fn new(threshold: f64, min_reports: u32) -> Result<Self, OtaError> {
        Ok(Self {
            threshold_ppm: threshold_ppm(threshold)?,
            min_reports: min_reports.max(1),
        })
    }

    pub fn threshold(&self) -> f64 {
        f64::from(self.threshold_ppm) / 1e6
    }

    fn at_or_over_threshold(&self, tally: &Tally) -> bool {
        let failures = u128::from(tally.failures()) * 1_000_000;
        failures >= u128::from(self.threshold_ppm) * u128::from(tally.outcomes())
    }

    /// The rollout halts when at least `min_reports` devices have an outcome and the
    /// failures among them reach the threshold.
    pub fn should_halt(&self, tally: &Tally) -> bool {
        tally.outcomes() >= u64::from(self.min_reports) && self.at_or_over_threshold(tally)
    }

    /// Whether the rollout may advance: failures below the threshold, and enough
    /// evidence, i.e. `min_reports` outcomes, or an outcome for every device offered
    /// so far when fewer were offered. `Err` says what is missing.
    pub fn stage_health(&self, tally: &Tally) -> Result<(), String> {
        if tally.outcomes() > 0 && self.at_or_over_threshold(tally) {
            return Err(format!(
                "{} of {} devices failed or timed out, at or above the threshold",
                tally.failures(),
                tally.outcomes()
            ));
        }
        let needed = u64::from(self.min_reports).min(tally.total());
        if tally.outcomes() < needed {
            return Err(format!(
                "{} of the {} outcomes needed are in",
                tally.outcomes(),
                needed
            ));
        }
        Ok(())
    }
}

/// A fraction in `(0, 1]` as parts per million, rounded.
pub fn threshold_ppm(threshold: f64) -> Result<u32, OtaError> {
    if !threshold.is_finite() || threshold <= 0.0 || threshold > 1.0 {
        return Err(OtaError::Threshold);
    }
    let ppm = (threshold * 1e6).round() as u32;
    if ppm == 0 {
        return Err(OtaError::Threshold);
    }
    Ok(ppm)
}

mod manifest;
pub use manifest::*;

#[cfg(test)]
mod tests;
