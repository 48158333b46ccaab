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

// ---------------------------------------------------------------------------------
// Where firmware may be downloaded from

/// Names that lead into the network of whoever resolves them, by their last labels:
/// such a URL would send every device of a rollout to something in its own network.
/// The first four are reserved for that by standards; the rest are names in wide
/// private use that ICANN has never delegated.
const LOCAL_NAMES: &[(&str, &str)] = &[
    (
        "localhost",
        "`localhost` or a name under it (loopback, RFC 6761)",
    ),
    (
        "local",
        "a `.local` name (multicast DNS on the local link, RFC 6762)",
    ),
    ("internal", "an `.internal` name (private use)"),
    ("home.arpa", "a `.home.arpa` name (home networks, RFC 8375)"),
    ("localdomain", "a `.localdomain` name (private use)"),
    ("lan", "a `.lan` name (private use)"),
    ("home", "a `.home` name (private use)"),
    ("corp", "a `.corp` name (private use)"),
    ("intranet", "an `.intranet` name (private use)"),
];

/// Why a firmware URL may not be handed to devices. Never repeats the input.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum DestinationError {
    #[error("must not point at {} ({}): devices would fetch it inside their own network", .0.what, .0.range)]
    Address(Special),
    #[error("must not name {0}: devices would resolve it inside their own network")]
    LocalName(&'static str),
    #[error(
        "must not name a single-label host: each device would complete it with its own network's search domain"
    )]
    SingleLabel,
    #[error(
        "must write an IPv4 address as four decimal numbers without leading zeros (a.b.c.d): clients read other spellings (2130706433, 0x7f000001, 0177.0.0.1, 127.1) as different addresses"
    )]
    IpSpelling,
    #[error(
        "must name its host in dot-separated labels of letters, digits, hyphens and underscores (clients read percent-encoded and other hosts differently)"
    )]
    HostName,
}

impl DestinationError {
    /// Whether `firmware_allowed_private` can allow it. Spellings cannot: what they
    /// point at depends on the client.
    pub fn is_allowable(&self) -> bool {
        matches!(
            self,
            DestinationError::Address(_)
                | DestinationError::LocalName(_)
                | DestinationError::SingleLabel
        )
    }
}

/// Where a firmware URL leads, as far as its spelling tells.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Destination {
    Ip(IpAddr),
    /// Lowercase, without a trailing dot.
    Name(String),
}

impl Destination {
    fn of(url: &FirmwareUrl) -> Result<Destination, DestinationError> {
        let host = url.host();
        if let Some(literal) = host.strip_prefix('[') {
            let literal = literal.strip_suffix(']').unwrap_or(literal);
            return literal
                .parse::<Ipv6Addr>()
                .map(|ip| Destination::Ip(IpAddr::V6(ip)))
                .map_err(|_| DestinationError::HostName);
        }
        let name = host_name(host).ok_or(DestinationError::HostName)?;
        if !ends_in_number(&name) {
            return Ok(Destination::Name(name));
        }
        // A URL parser reads a host ending in a number as an IPv4 address, in one of
        // many spellings (WHATWG: decimal, octal, hex, 1 to 4 parts); only the usual
        // one means the same address to every client.
        host.parse::<Ipv4Addr>()
            .map(|ip| Destination::Ip(IpAddr::V4(ip)))
            .map_err(|_| DestinationError::IpSpelling)
    }
}

/// `host` lowercased, without one trailing dot, if it is dot-separated labels of
/// 1 to 63 letters, digits, `-` and `_`, at most 253 bytes in all.
fn host_name(host: &str) -> Option<String> {
    let name = host.strip_suffix('.').unwrap_or(host).to_ascii_lowercase();
    let label_ok = |label: &str| {
        (1..=63).contains(&label.len())
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    (name.len() <= 253 && name.split('.').all(label_ok)).then_some(name)
}

/// Whether the last label is a number to a URL parser: decimal digits, or `0x` and
/// hex digits.
fn ends_in_number(name: &str) -> bool {
    let last = name.rsplit('.').next().unwrap_or(name);
    match last.strip_prefix("0x") {
        Some(hex) => hex.bytes().all(|b| b.is_ascii_hexdigit()),
        None => !last.is_empty() && last.bytes().all(|b| b.is_ascii_digit()),
    }
}

fn local_name(name: &str) -> Option<&'static str> {
    LOCAL_NAMES.iter().find_map(|&(suffix, what)| {
        let under = name
            .strip_suffix(suffix)
            .is_some_and(|rest| rest.is_empty() || rest.ends_with('.'));
        under.then_some(what)
    })
}

/// The destinations beyond the public internet that firmware URLs may point at: the
/// `firmware_allowed_private` variable of the `ota` component, entries separated by
/// commas:
///
/// - a CIDR range or one address (`10.0.0.0/8`, `192.168.1.7`, `fd00::/8`);
/// - a host name (`fw-cache`, `fw.plant.example`), allowed exactly;
/// - a name suffix (`.plant.internal`), allowing every name under it.
///
/// Empty (the default) allows none. An entry may allow anything, loopback included:
/// listing it is the operator's decision.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PrivateDestinations {
    ranges: Vec<IpRange>,
    names: Vec<String>,
    suffixes: Vec<String>,
}

/// Why `firmware_allowed_private` does not parse: which entry (from 1), and why.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("entry {index} {reason}")]
pub struct DestinationsError {
    pub index: usize,
    pub reason: String,
}

impl PrivateDestinations {
    /// Nothing beyond the public internet.
    pub const NONE: PrivateDestinations = PrivateDestinations {
        ranges: Vec::new(),
        names: Vec::new(),
        suffixes: Vec::new(),
    };

    /// The variable's text; empty entries (`a,,b`, a trailing comma) are skipped.
    /// Any bad entry makes the whole value invalid, so that a typo never allows
    /// something else than was meant.
    pub fn parse(text: &str) -> Result<PrivateDestinations, DestinationsError> {
        let mut allowed = PrivateDestinations::NONE;
        let entries = text.split(',').map(str::trim).filter(|e| !e.is_empty());
        for (i, entry) in entries.enumerate() {
            let bad = |reason: String| DestinationsError {
                index: i + 1,
                reason,
            };
            if let Some(suffix) = entry.strip_prefix('.') {
                let suffix = host_name(suffix)
                    .filter(|s| !s.ends_with('.') && !suffix.ends_with('.'))
                    .ok_or_else(|| bad("is not a name suffix such as .plant.internal".into()))?;
                allowed.suffixes.push(suffix);
            } else if entry.contains([':', '/'])
                || host_name(entry).is_none_or(|name| ends_in_number(&name))
            {
                let range = IpRange::parse(entry).map_err(|e| bad(e.to_string()))?;
                allowed.ranges.push(range);
            } else {
                allowed.names.extend(host_name(entry));
            }
        }
        Ok(allowed)
    }

    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty() && self.names.is_empty() && self.suffixes.is_empty()
    }

    fn allows_ip(&self, ip: IpAddr) -> bool {
        self.ranges.iter().any(|range| range.contains(ip))
    }

    fn allows_name(&self, name: &str) -> bool {
        self.names.iter().any(|allowed| allowed == name)
            || self.suffixes.iter().any(|suffix| {
                name.strip_suffix(suffix.as_str())
                    .is_some_and(|rest| rest.ends_with('.'))
            })
    }
}

/// Whether devices may be sent to `url` for firmware: a public destination, or one
/// `allowed` lists. Judged by the URL's spelling alone (the component cannot resolve
/// names, and a device would resolve them in its own network anyway): an IP address
/// in a special-purpose range ([`crate::net::special_use`]), a name under
/// [`LOCAL_NAMES`] or a single-label name is refused unless allowed; an IPv4 address
/// in another spelling than `a.b.c.d`, or a host with characters a name has not, is
/// refused always.
pub fn check_destination(
    url: &FirmwareUrl,
    allowed: &PrivateDestinations,
) -> Result<(), DestinationError> {
    match Destination::of(url)? {
        Destination::Ip(ip) => match special_use(ip) {
            Some(special) if !allowed.allows_ip(ip) => Err(DestinationError::Address(special)),
            _ => Ok(()),
        },
        Destination::Name(name) => {
            if allowed.allows_name(&name) {
                return Ok(());
            }
            if let Some(what) = local_name(&name) {
                return Err(DestinationError::LocalName(what));
            }
            if !name.contains('.') {
                return Err(DestinationError::SingleLabel);
            }
            Ok(())
        }
    }
}

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

// ---------------------------------------------------------------------------------
// Manifests

/// What a device is told to install. Signed as [`Manifest::canonical_bytes`].
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    // Declared in lexicographic order: serde writes fields in declaration order, and
    // the canonical form sorts them.
    pub model: Model,
    pub rollout_id: String,
    pub sha256: String,
    pub size: u64,
    pub url: String,
    pub version: String,
}

impl Manifest {
    /// The signed bytes: the manifest as a JSON object, members sorted by name
    /// (`model`, `rollout_id`, `sha256`, `size`, `url`, `version`), no whitespace,
    /// strings escaped as RFC 8785 does, `size` as a plain integer. UTF-8.
    pub fn canonical_bytes(&self) -> Vec<u8> {
        // A struct of strings and an integer always serialises.
        serde_json::to_vec(self).unwrap_or_default()
    }
}

/// A manifest signing key could not be used.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ManifestKeyError {
    #[error("the manifest signing key must be an Ed25519 private key in PKCS#8 PEM")]
    PrivateKey,
    #[error("the manifest public key must be an Ed25519 public key in SPKI PEM")]
    PublicKey,
}

/// Signs manifests with the deployment's Ed25519 key (`manifest_signing_key`).
///
/// Signing runs inside the `ota` component, for each offer, in a fresh instance; so it
/// uses ed25519-dalek, whose 32-bit backend is fast in wasm32 (ed25519-compact, which
/// verifies, multiplies 64-bit limbs into 128-bit products that wasm32 emulates with
/// a function call each: a signature cost about ten times more).
pub struct ManifestSigner {
    key: ed25519_dalek::SigningKey,
}

impl fmt::Debug for ManifestSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ManifestSigner")
            .field("key_id", &self.key_id())
            .finish()
    }
}

/// The DER of an Ed25519 PKCS#8 (v1) private key up to its 32-byte seed (RFC 8410).
const PKCS8_ED25519_PREFIX: [u8; 16] = [
    0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
];
/// The DER of an Ed25519 SPKI public key up to its 32 bytes (RFC 8410).
const SPKI_ED25519_PREFIX: [u8; 12] = [
    0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
];

impl ManifestSigner {
    /// A `-----BEGIN PRIVATE KEY-----` block (PKCS#8, RFC 8410), as
    /// `openssl genpkey -algorithm ed25519` writes.
    pub fn from_pem(pem: &str) -> Result<Self, ManifestKeyError> {
        let body = pem
            .trim()
            .strip_prefix("-----BEGIN PRIVATE KEY-----")
            .and_then(|rest| rest.strip_suffix("-----END PRIVATE KEY-----"))
            .ok_or(ManifestKeyError::PrivateKey)?;
        let body: String = body.chars().filter(|c| !c.is_ascii_whitespace()).collect();
        let mut der = STANDARD
            .decode(body)
            .map_err(|_| ManifestKeyError::PrivateKey)?;
        let seed = der
            .strip_prefix(&PKCS8_ED25519_PREFIX[..])
            .and_then(|seed| <[u8; 32]>::try_from(seed).ok());
        // Best effort: the decoded key does not linger in this buffer.
        der.fill(0);
        let mut seed = seed.ok_or(ManifestKeyError::PrivateKey)?;
        let key = ed25519_dalek::SigningKey::from_bytes(&seed);
        seed.fill(0);
        Ok(Self { key })
    }

    /// The signature of the manifest's canonical bytes, standard base64 (with padding).
    pub fn sign(&self, manifest: &Manifest) -> String {
        self.sign_bytes(&manifest.canonical_bytes())
    }

    pub fn sign_bytes(&self, bytes: &[u8]) -> String {
        use ed25519_dalek::Signer;
        STANDARD.encode(self.key.sign(bytes).to_bytes())
    }

    /// The public key as an SPKI PEM (`-----BEGIN PUBLIC KEY-----`).
    pub fn public_key_pem(&self) -> String {
        let encoded = STANDARD.encode(self.public_key_der());
        format!("-----BEGIN PUBLIC KEY-----\n{encoded}\n-----END PUBLIC KEY-----\n")
    }

    /// Lowercase hex SHA-256 of the public key's SPKI DER.
    pub fn key_id(&self) -> String {
        hex_digest(&self.public_key_der())
    }

    fn public_key_der(&self) -> Vec<u8> {
        [
            &SPKI_ED25519_PREFIX[..],
            self.key.verifying_key().as_bytes(),
        ]
        .concat()
    }
}

/// Checks manifest signatures, as a device does with the published key.
pub struct ManifestVerifier {
    public_key: ed25519_compact::PublicKey,
}

impl ManifestVerifier {
    pub fn from_pem(pem: &str) -> Result<Self, ManifestKeyError> {
        let public_key = ed25519_compact::PublicKey::from_pem(pem.trim())
            .map_err(|_| ManifestKeyError::PublicKey)?;
        Ok(Self { public_key })
    }

    /// Whether `signature` (standard base64) is the key's signature of `bytes`.
    pub fn verify(&self, bytes: &[u8], signature: &str) -> bool {
        let Ok(raw) = STANDARD.decode(signature) else {
            return false;
        };
        let Ok(signature) = ed25519_compact::Signature::from_slice(&raw) else {
            return false;
        };
        self.public_key.verify(bytes, &signature).is_ok()
    }
}

fn hex_digest(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(text: &str) -> FirmwareVersion {
        FirmwareVersion::parse(text).unwrap()
    }

    fn range(text: &str) -> VersionRange {
        VersionRange::parse(text).unwrap()
    }

    fn device(n: usize) -> DeviceId {
        DeviceId::parse(&format!("sn-{n:05}")).unwrap()
    }

    #[test]
    fn versions_are_strict_semver() {
        for good in [
            "0.0.0",
            "1.2.3",
            "1.2.3-rc.1",
            "1.2.3+build.7",
            "1.2.3-alpha.1+sha.5114f85",
        ] {
            assert_eq!(v(good).to_string(), good);
        }
        for bad in [
            "",
            "1",
            "1.2",
            "v1.2.3",
            " 1.2.3",
            "1.2.3 ",
            "01.2.3",
            "1.2.3-",
            "1.2.3+",
            "1.2.3-rc..1",
            "a.b.c",
        ] {
            assert!(FirmwareVersion::parse(bad).is_err(), "{bad:?}");
        }
        let long = format!("1.2.3-{}", "a".repeat(200));
        assert!(FirmwareVersion::parse(&long).is_err());
    }

    #[test]
    fn pre_releases_sort_before_their_release() {
        assert!(v("1.2.0").is_upgrade_from(&v("1.2.0-rc.1")));
        assert!(v("1.2.0-rc.2").is_upgrade_from(&v("1.2.0-rc.1")));
        assert!(v("1.2.0-rc.10").is_upgrade_from(&v("1.2.0-rc.9")));
        assert!(v("1.2.0-beta").is_upgrade_from(&v("1.2.0-alpha.9")));
        assert!(!v("1.2.0-rc.1").is_upgrade_from(&v("1.2.0")));
        assert!(v("1.2.0-rc.1").is_upgrade_from(&v("1.1.9")));
    }

    #[test]
    fn build_metadata_never_makes_an_upgrade_or_a_new_release() {
        assert!(!v("1.2.0+b2").is_upgrade_from(&v("1.2.0+b1")));
        assert!(!v("1.2.0+b1").is_upgrade_from(&v("1.2.0+b2")));
        assert!(!v("1.2.0").is_upgrade_from(&v("1.2.0+b1")));
        assert_eq!(v("1.2.0+b1").release(), v("1.2.0+b2").release());
        assert_eq!(v("1.2.0-rc.1+b1").release(), "1.2.0-rc.1");
        assert_ne!(v("1.2.0-rc.1").release(), v("1.2.0").release());
        assert!(range("=1.2.0").matches(&v("1.2.0+anything")));
    }

    #[test]
    fn never_a_downgrade_nor_the_same_release() {
        assert!(!v("1.3.1").is_upgrade_from(&v("1.3.2")));
        assert!(!v("1.3.2").is_upgrade_from(&v("1.3.2")));
        assert!(v("1.3.10").is_upgrade_from(&v("1.3.9")));
        assert!(v("2.0.0").is_upgrade_from(&v("1.99.99")));
        let any = range("*");
        assert!(!is_offerable(&any, &v("1.4.0"), &v("1.3.0")));
        assert!(is_offerable(&any, &v("1.2.0"), &v("1.3.0")));
    }

    #[test]
    fn ranges_select_current_versions() {
        let r = range(">=1.2.0, <1.4.0");
        assert!(r.matches(&v("1.2.0")));
        assert!(r.matches(&v("1.3.9")));
        assert!(!r.matches(&v("1.4.0")));
        assert!(!r.matches(&v("1.1.9")));
        assert!(range("^1.3").matches(&v("1.9.0")));
        assert!(!range("^1.3").matches(&v("2.0.0")));
        assert!(range("~1.3").matches(&v("1.3.7")));
        assert!(!range("~1.3").matches(&v("1.4.0")));
        for bad in ["", "  ", ">>1", "1.2.3.4", "banana", ">=1.2.0 <1.4.0 ||"] {
            assert!(VersionRange::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn pre_releases_match_only_ranges_that_name_one() {
        // A device on a beta is not swept into a release rollout...
        assert!(!range(">=1.2.0, <1.4.0").matches(&v("1.3.0-beta.2")));
        assert!(!range("*").matches(&v("1.3.0-beta.2")));
        // ...unless the range asks for pre-releases of that version.
        assert!(range(">=1.3.0-beta.1, <1.4.0").matches(&v("1.3.0-beta.2")));
        assert!(!range(">=1.3.0-beta.1, <1.4.0").matches(&v("1.3.1-beta.1")));
        assert!(range(">=1.3.0-beta.1, <1.4.0").matches(&v("1.3.1")));
    }

    fn url(text: &str) -> FirmwareUrl {
        FirmwareUrl::parse(text).unwrap()
    }

    fn destination(text: &str, allowed: &PrivateDestinations) -> Result<(), DestinationError> {
        check_destination(&url(text), allowed)
    }

    #[test]
    fn the_host_of_a_url() {
        assert_eq!(url("https://cdn.example.com/a").host(), "cdn.example.com");
        assert_eq!(
            url("https://cdn.example.com:8443?x#y").host(),
            "cdn.example.com"
        );
        assert_eq!(url("https://[::1]:443/a").host(), "[::1]");
        assert_eq!(url("https://10.0.0.1").host(), "10.0.0.1");
    }

    #[test]
    fn public_destinations_are_fine() {
        let none = PrivateDestinations::NONE;
        for good in [
            "https://cdn.example.com/fw.bin",
            "https://CDN.Example.COM./fw.bin",
            "https://bucket.s3.amazonaws.com/k?X-Amz-Signature=ab",
            "https://x.example/a.bin",
            "https://my_bucket.example.com/a",
            "https://1e100.net/a",
            "https://8.8.8.8/fw.bin",
            "https://[2606:4700::1111]:8443/fw.bin",
            "https://[::ffff:8.8.8.8]/fw.bin",
            "https://notlocalhost.example/a",
            "https://local.example/a",
            "https://internal.example.com/a",
        ] {
            assert_eq!(destination(good, &none), Ok(()), "{good}");
        }
    }

    #[test]
    fn loopback_private_and_link_local_destinations_are_refused() {
        let none = PrivateDestinations::NONE;
        for (bad, range) in [
            ("https://127.0.0.1/fw.bin", "127.0.0.0/8"),
            ("https://127.0.0.1:8443/fw.bin", "127.0.0.0/8"),
            ("https://[::1]/fw.bin", "::1/128"),
            ("https://[::]/fw.bin", "::/128"),
            (
                "https://169.254.169.254/latest/meta-data/",
                "169.254.0.0/16",
            ),
            ("https://10.0.0.1/fw.bin", "10.0.0.0/8"),
            ("https://172.20.1.1/fw.bin", "172.16.0.0/12"),
            ("https://192.168.1.1/fw.bin", "192.168.0.0/16"),
            ("https://100.100.100.200/fw.bin", "100.64.0.0/10"),
            ("https://0.0.0.0/fw.bin", "0.0.0.0/8"),
            ("https://[::ffff:127.0.0.1]/fw.bin", "127.0.0.0/8"),
            ("https://[::ffff:7f00:1]/fw.bin", "127.0.0.0/8"),
            ("https://[::ffff:a9fe:a9fe]/fw.bin", "169.254.0.0/16"),
            ("https://[fe80::1]/fw.bin", "fe80::/10"),
            ("https://[fd00:ec2::254]/fw.bin", "fc00::/7"),
            ("https://[64:ff9b::a00:1]/fw.bin", "10.0.0.0/8"),
            ("https://224.0.0.1/fw.bin", "224.0.0.0/4"),
            ("https://255.255.255.255/fw.bin", "240.0.0.0/4"),
        ] {
            match destination(bad, &none) {
                Err(DestinationError::Address(special)) => {
                    assert_eq!(special.range, range, "{bad}")
                }
                other => panic!("{bad}: {other:?}"),
            }
        }
        let error = destination("https://127.0.0.1/", &none).unwrap_err();
        assert_eq!(
            error.to_string(),
            "must not point at a loopback address (127.0.0.0/8): devices would fetch it inside their own network"
        );
        assert!(error.is_allowable());
    }

    #[test]
    fn other_spellings_of_ipv4_addresses_are_refused_always() {
        let everything = PrivateDestinations::parse("0.0.0.0/0,::/0").unwrap();
        for bad in [
            "https://2130706433/fw.bin",
            "https://0x7f000001/fw.bin",
            "https://0X7F000001/fw.bin",
            "https://0177.0.0.1/fw.bin",
            "https://127.1/fw.bin",
            "https://127.0.1/fw.bin",
            "https://0x7f.0.0.1/fw.bin",
            "https://127.0.0.01/fw.bin",
            "https://127.0.0.1./fw.bin",
            "https://1.2.3.4.5/fw.bin",
            "https://example.0x1/fw.bin",
            "https://example.123/fw.bin",
            "https://0x/fw.bin",
        ] {
            for allowed in [&PrivateDestinations::NONE, &everything] {
                let error = destination(bad, allowed).unwrap_err();
                assert_eq!(error, DestinationError::IpSpelling, "{bad}");
                assert!(!error.is_allowable());
            }
        }
        for bad in [
            "https://%31%32%37.0.0.1/fw.bin",
            "https://localhost%2e/fw.bin",
            "https://exa!mple.com/fw.bin",
            "https://a..b/fw.bin",
            "https://.example.com/fw.bin",
            "https://example.com../fw.bin",
        ] {
            let error = destination(bad, &everything).unwrap_err();
            assert_eq!(error, DestinationError::HostName, "{bad}");
        }
    }

    #[test]
    fn local_names_are_refused() {
        let none = PrivateDestinations::NONE;
        for bad in [
            "https://localhost/fw.bin",
            "https://LOCALHOST:8443/fw.bin",
            "https://localhost./fw.bin",
            "https://fw.localhost/fw.bin",
            "https://printer.local/fw.bin",
            "https://metadata.google.internal/computeMetadata/v1/",
            "https://nas.home.arpa/fw.bin",
            "https://localhost.localdomain/fw.bin",
            "https://fw.lan/fw.bin",
            "https://fw.corp/fw.bin",
        ] {
            assert!(
                matches!(destination(bad, &none), Err(DestinationError::LocalName(_))),
                "{bad}"
            );
        }
        assert_eq!(
            destination("https://fileserver/fw.bin", &none),
            Err(DestinationError::SingleLabel)
        );
        let error = destination("https://fw.local/", &none).unwrap_err();
        assert!(error.to_string().contains("`.local`"), "{error}");
    }

    #[test]
    fn an_operator_allows_private_destinations() {
        let allowed = PrivateDestinations::parse(
            " 10.0.0.0/8, 192.168.1.7 ,fd00::/8,fw-cache, fw.plant.example,.plant.internal,",
        )
        .unwrap();
        for good in [
            "https://10.1.2.3/fw.bin",
            "https://[::ffff:10.1.2.3]/fw.bin",
            "https://192.168.1.7/fw.bin",
            "https://[fd12::1]/fw.bin",
            "https://fw-cache/fw.bin",
            "https://FW-CACHE./fw.bin",
            "https://fw.plant.example/fw.bin",
            "https://a.b.plant.internal/fw.bin",
        ] {
            assert_eq!(destination(good, &allowed), Ok(()), "{good}");
        }
        for bad in [
            "https://192.168.1.8/fw.bin",
            "https://127.0.0.1/fw.bin",
            "https://[fe80::1]/fw.bin",
            "https://other-cache/fw.bin",
            "https://plant.internal/fw.bin",
            "https://x.other.internal/fw.bin",
            "https://localhost/fw.bin",
        ] {
            assert!(destination(bad, &allowed).is_err(), "{bad}");
        }
        assert!(PrivateDestinations::parse("").unwrap().is_empty());
        assert!(PrivateDestinations::parse(" , ").unwrap().is_empty());
        for (bad, index) in [
            ("10.0.0.0/33", 1),
            ("10.0.0.0/8,10.0.0.1/8", 2),
            ("10.0.0.0/8;192.168.0.0/16", 1),
            ("0x7f000001", 1),
            ("127.1", 1),
            ("a,b c", 2),
            (".", 1),
            (".x..y", 1),
            ("fw/cache", 1),
        ] {
            let error = PrivateDestinations::parse(bad).unwrap_err();
            assert_eq!(error.index, index, "{bad}: {error}");
            assert!(
                error.to_string().starts_with(&format!("entry {index} ")),
                "{error}"
            );
        }
    }

    #[test]
    fn firmware_fields_are_checked() {
        for good in [
            "https://cdn.example.com/fw/t1000-1.4.0.bin",
            "https://cdn.example.com",
            "https://cdn.example.com:8443/fw/a%20b.bin?sig=abc%2F&expires=1#part",
            "https://[2001:db8::1]/fw.bin",
            "https://[2001:db8::1]:443",
            "https://[::ffff:192.0.2.7]/fw.bin",
            "https://192.0.2.7/fw.bin",
            "https://bucket.s3.amazonaws.com/k?X-Amz-Signature=ab&X-Amz-Date=20261206T000000Z",
            "https://host/a:b@c/(x)!$&'*+,;=~",
        ] {
            assert!(FirmwareUrl::parse(good).is_ok(), "{good:?}");
        }
        let long = format!("https://x.example/{}", "a".repeat(FirmwareUrl::MAX_LEN));
        for bad in [
            "",
            "https://",
            "https:///fw.bin",
            "https://:443/fw.bin",
            "http://cdn.example.com/x",
            "HTTPS://cdn.example.com/x",
            "https://a b",
            "ftp://x",
            "https://é",
            "https://cdn.example.com/é.bin",
            // User info: credentials would go to every device.
            "https://user:secret@cdn.example.com/fw.bin",
            "https://user@cdn.example.com/fw.bin",
            // Not URI characters, or a broken escape.
            "https://cdn.example.com/a\"b",
            "https://cdn.example.com/a\\b",
            "https://cdn.example.com/a|b",
            "https://cdn.example.com/a^b",
            "https://cdn.example.com/a<b>",
            "https://cdn.example.com/a{b}",
            "https://cdn.example.com/a`b",
            "https://cdn.example.com/a[0]",
            "https://cdn.example.com/a%2",
            "https://cdn.example.com/a%zz",
            "https://cdn.example.com/a#b#c",
            // Hosts and ports.
            "https://[2001:db8::1/fw.bin",
            "https://[]/fw.bin",
            "https://[2001:db8::1]x/fw.bin",
            "https://[fe80::1%25eth0]/fw.bin",
            "https://[E10F3F:7E91CD3b:]/fw.bin",
            "https://[192.0.2.7]/fw.bin",
            "https://[v1.fe80::1]/fw.bin",
            "https://cdn.example.com:/fw.bin",
            "https://cdn.example.com:0/fw.bin",
            "https://cdn.example.com:65536/fw.bin",
            "https://cdn.example.com:44a/fw.bin",
            "https://cdn.example.com:443:443/fw.bin",
            "https://e@fG\"G0|kC@00\\NGIL(>\\[^5c0=g8%^kv",
            long.as_str(),
        ] {
            assert!(FirmwareUrl::parse(bad).is_err(), "{bad:?}");
        }
        assert!(Sha256Hex::parse(&"ab".repeat(32)).is_ok());
        for bad in [
            "".to_owned(),
            "AB".repeat(32),
            "ab".repeat(31),
            "zz".repeat(32),
            "ab".repeat(33),
        ] {
            assert!(Sha256Hex::parse(&bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn stages_are_increasing_percentages() {
        assert_eq!(
            Stages::new(&[1, 10, 50, 100]).unwrap().as_slice(),
            &[1, 10, 50, 100]
        );
        assert!(Stages::new(&[100]).is_ok());
        assert!(Stages::new(&[5, 20]).is_ok());
        let bad_plans: [&[u32]; 6] = [&[], &[0, 10], &[10, 10], &[50, 10], &[1, 101], &[300]];
        for bad in bad_plans {
            assert!(Stages::new(bad).is_err(), "{bad:?}");
        }
        assert!(Stages::new(&(1..=21).collect::<Vec<_>>()).is_err());
        let stages = Stages::new(&[1, 10, 100]).unwrap();
        assert_eq!(stages.percent(1), 10);
        assert_eq!(stages.percent(9), 100);
        assert!(!stages.is_last(1));
        assert!(stages.is_last(2));
    }

    #[test]
    fn cohorts_are_deterministic_and_stable() {
        let d = device(7);
        assert_eq!(cohort_bucket("ro_1", &d), cohort_bucket("ro_1", &d));
        assert!(cohort_bucket("ro_1", &d) < BUCKETS);
        // The rollout id reshuffles: not every rollout hits the same devices first.
        let same = (0..1000)
            .filter(|&n| cohort_bucket("ro_1", &device(n)) == cohort_bucket("ro_2", &device(n)))
            .count();
        assert!(same < 10, "{same}");
        assert!(in_cohort("ro_1", &d, 100));
    }

    #[test]
    fn a_later_stage_keeps_every_device_of_the_earlier_ones() {
        let stages = [1u8, 5, 10, 25, 50, 75, 100];
        for n in 0..5000 {
            let d = device(n);
            let mut was_in = false;
            for &p in &stages {
                let is_in = in_cohort("ro_abc", &d, p);
                assert!(!was_in || is_in, "device {n} left the cohort at {p}%");
                was_in = is_in;
            }
            assert!(was_in, "100% takes every device");
        }
    }

    #[test]
    fn one_percent_of_10000_devices_is_within_statistical_bounds() {
        // Binomial(10 000, 0.01): mean 100, standard deviation 9.95; four standard
        // deviations either side is [60, 140].
        for rollout in ["ro_0001", "ro_ffff", "ro_5f2c9a", "another-rollout"] {
            let count = (0..10_000)
                .filter(|&n| in_cohort(rollout, &device(n), 1))
                .count();
            assert!((60..=140).contains(&count), "{rollout}: {count}");
        }
        // And the other stages of the usual plan.
        for (p, lo, hi) in [(10u8, 880, 1120), (50, 4800, 5200)] {
            let count = (0..10_000)
                .filter(|&n| in_cohort("ro_0001", &device(n), p))
                .count();
            assert!((lo..=hi).contains(&count), "{p}%: {count}");
        }
    }

    fn tally(installed: u64, failed: u64, timed_out: u64) -> Tally {
        Tally {
            installed,
            failed,
            timed_out,
            ..Tally::default()
        }
    }

    #[test]
    fn halts_at_exactly_the_threshold_and_not_before_min_reports() {
        let rule = HaltRule::new(0.5, 4).unwrap();
        // Every report a failure, but fewer than min_reports: no halt yet.
        assert!(!rule.should_halt(&tally(0, 3, 0)));
        // 2 of 4: exactly 0.5.
        assert!(rule.should_halt(&tally(2, 2, 0)));
        // 1 of 4: under.
        assert!(!rule.should_halt(&tally(3, 1, 0)));
        // Fractions that are not exact in binary still compare exactly.
        let rule = HaltRule::new(0.3, 10).unwrap();
        assert!(rule.should_halt(&tally(7, 3, 0)));
        assert!(!rule.should_halt(&tally(8, 2, 0)));
        let rule = HaltRule::new(0.1, 10).unwrap();
        assert!(rule.should_halt(&tally(9, 1, 0)));
        assert!(!rule.should_halt(&tally(19, 1, 0)));
        assert!(rule.should_halt(&tally(18, 2, 0)));
    }

    #[test]
    fn a_timeout_counts_as_a_failure() {
        let rule = HaltRule::new(0.5, 2).unwrap();
        assert!(!rule.should_halt(&tally(1, 0, 0)));
        assert!(rule.should_halt(&tally(1, 0, 1)));
        assert_eq!(tally(1, 1, 2).failures(), 3);
        assert_eq!(tally(1, 1, 2).failure_rate(), 0.75);
        // Devices still in progress are not outcomes.
        let t = Tally {
            offered: 5,
            downloading: 3,
            installing: 2,
            ..tally(1, 0, 1)
        };
        assert_eq!(t.outcomes(), 2);
        assert_eq!(t.total(), 12);
    }

    #[test]
    fn thresholds_are_fractions() {
        assert_eq!(threshold_ppm(1.0), Ok(1_000_000));
        assert_eq!(threshold_ppm(0.05), Ok(50_000));
        for bad in [0.0, -0.1, 1.0001, f64::NAN, f64::INFINITY, 1e-9] {
            assert!(threshold_ppm(bad).is_err(), "{bad}");
        }
        assert_eq!(HaltRule::new(0.25, 0).unwrap().min_reports, 1);
    }

    #[test]
    fn transitions_go_forward_and_stop_after_installed() {
        use DeviceProgress as P;
        use ReportStatus as R;
        assert_eq!(
            transition(P::Offered, R::Downloading),
            Ok(Transition::Moved(P::Downloading))
        );
        assert_eq!(
            transition(P::Offered, R::Installed),
            Ok(Transition::Moved(P::Installed))
        );
        assert_eq!(
            transition(P::Downloading, R::Installing),
            Ok(Transition::Moved(P::Installing))
        );
        assert_eq!(
            transition(P::Installing, R::Failed),
            Ok(Transition::Moved(P::Failed))
        );
        assert_eq!(
            transition(P::Offered, R::Failed),
            Ok(Transition::Moved(P::Failed))
        );
        assert_eq!(
            transition(P::Installing, R::Installing),
            Ok(Transition::Repeated)
        );
        assert_eq!(
            transition(P::Installed, R::Installed),
            Ok(Transition::Repeated)
        );
        for (from, to) in [
            (P::Installed, R::Failed),
            (P::Installed, R::Downloading),
            (P::Failed, R::Installed),
            (P::Failed, R::Downloading),
            (P::Installing, R::Downloading),
        ] {
            assert!(transition(from, to).is_err(), "{from:?} -> {to:?}");
        }
    }

    fn position(state: RolloutState, stage: usize) -> RolloutPosition {
        RolloutPosition { state, stage }
    }

    #[test]
    fn actions_follow_the_lifecycle() {
        use RolloutAction as A;
        use RolloutState as S;
        let stages = Stages::new(&[1, 10, 100]).unwrap();
        let rule = HaltRule::new(0.2, 2).unwrap();
        let healthy = tally(5, 0, 0);
        let go = |action, state, stage, t: &Tally| {
            apply_action(action, position(state, stage), &stages, &rule, t)
        };
        assert_eq!(
            go(A::Advance, S::Active, 0, &healthy),
            Ok(position(S::Active, 1))
        );
        assert_eq!(
            go(A::Advance, S::Active, 2, &healthy),
            Err(ActionRefused::LastStage)
        );
        assert!(go(A::Advance, S::Paused, 0, &healthy).is_err());
        assert!(go(A::Advance, S::Halted, 0, &healthy).is_err());
        assert!(matches!(
            go(A::Advance, S::Active, 0, &tally(4, 1, 0)),
            Err(ActionRefused::Unhealthy(_))
        ));
        // One outcome of the two needed, with more devices still installing.
        let waiting = Tally {
            installing: 5,
            ..tally(1, 0, 0)
        };
        assert!(matches!(
            go(A::Advance, S::Active, 0, &waiting),
            Err(ActionRefused::Unhealthy(_))
        ));
        // Nobody offered yet: nothing to wait for.
        assert!(go(A::Advance, S::Active, 0, &Tally::default()).is_ok());
        // The only device offered is in: enough evidence when fewer than min_reports exist.
        assert!(go(A::Advance, S::Active, 0, &tally(1, 0, 0)).is_ok());
        assert_eq!(
            go(A::Pause, S::Active, 1, &healthy),
            Ok(position(S::Paused, 1))
        );
        assert!(go(A::Pause, S::Paused, 1, &healthy).is_err());
        assert_eq!(
            go(A::Resume, S::Paused, 1, &healthy),
            Ok(position(S::Active, 1))
        );
        assert!(go(A::Resume, S::Halted, 1, &healthy).is_err());
        assert!(go(A::Resume, S::Active, 1, &healthy).is_err());
        assert_eq!(
            go(A::Abort, S::Halted, 1, &healthy),
            Ok(position(S::Aborted, 1))
        );
        assert_eq!(
            go(A::Abort, S::Aborted, 1, &healthy),
            Err(ActionRefused::AlreadyAborted)
        );
    }

    fn manifest() -> Manifest {
        Manifest {
            model: Model::parse("t1000").unwrap(),
            rollout_id: "ro_0123456789abcdef".to_owned(),
            sha256: "ab".repeat(32),
            size: 1_048_576,
            url: "https://cdn.example.com/t1000/1.4.0.bin".to_owned(),
            version: "1.4.0".to_owned(),
        }
    }

    #[test]
    fn canonical_bytes_are_sorted_compact_json() {
        let expected = format!(
            r#"{{"model":"t1000","rollout_id":"ro_0123456789abcdef","sha256":"{}","size":1048576,"url":"https://cdn.example.com/t1000/1.4.0.bin","version":"1.4.0"}}"#,
            "ab".repeat(32)
        );
        assert_eq!(
            String::from_utf8(manifest().canonical_bytes()).unwrap(),
            expected
        );
        // Sorted members: what any JCS implementation would produce from the object.
        let value: serde_json::Value =
            serde_json::from_slice(&manifest().canonical_bytes()).unwrap();
        let keys: Vec<&String> = value.as_object().unwrap().keys().collect();
        let mut sorted = keys.clone();
        sorted.sort();
        assert_eq!(keys, sorted);
    }

    const TEST_KEY: &str = "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIJ+DYvh6SEqVTm50DFtMDoQikTmiCqirVv9mWG9qfSnF\n-----END PRIVATE KEY-----\n";

    #[test]
    fn signatures_verify_with_the_published_key_and_fail_when_one_byte_changes() {
        let signer = ManifestSigner::from_pem(TEST_KEY).unwrap();
        let verifier = ManifestVerifier::from_pem(&signer.public_key_pem()).unwrap();
        let bytes = manifest().canonical_bytes();
        let signature = signer.sign(&manifest());
        assert!(verifier.verify(&bytes, &signature));
        for i in 0..bytes.len() {
            let mut changed = bytes.clone();
            changed[i] ^= 0x01;
            assert!(!verifier.verify(&changed, &signature), "byte {i}");
        }
        let mut raw = STANDARD.decode(&signature).unwrap();
        raw[0] ^= 0x80;
        assert!(!verifier.verify(&bytes, &STANDARD.encode(raw)));
        assert!(!verifier.verify(&bytes, "not base64!"));
        assert!(!verifier.verify(&bytes, ""));
        assert_eq!(signer.key_id().len(), 64);
        assert!(!format!("{signer:?}").contains("PRIVATE"));
    }

    #[test]
    fn the_signer_agrees_with_an_independent_implementation() {
        // ed25519-compact parses the same PEM on its own: the same public key, key id
        // and (Ed25519 being deterministic) the same signature bytes.
        let signer = ManifestSigner::from_pem(TEST_KEY).unwrap();
        let other = ed25519_compact::KeyPair::from_pem(TEST_KEY).unwrap();
        assert_eq!(signer.public_key_pem().trim(), other.pk.to_pem().trim());
        assert_eq!(signer.key_id(), hex_digest(&other.pk.to_der()));
        let bytes = manifest().canonical_bytes();
        assert_eq!(
            STANDARD.decode(signer.sign_bytes(&bytes)).unwrap(),
            other.sk.sign(&bytes, None).to_vec()
        );
        // The PEM as openssl writes it, with CRLF line ends, is the same key.
        let crlf = TEST_KEY.replace('\n', "\r\n");
        assert_eq!(
            ManifestSigner::from_pem(&crlf).unwrap().key_id(),
            signer.key_id()
        );
    }

    #[test]
    fn unusable_keys_are_refused() {
        assert!(ManifestSigner::from_pem("").is_err());
        assert!(
            ManifestSigner::from_pem(
                "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"
            )
            .is_err()
        );
        let signer = ManifestSigner::from_pem(TEST_KEY).unwrap();
        assert!(ManifestSigner::from_pem(&signer.public_key_pem()).is_err());
        // A well-formed PEM around something that is not an Ed25519 PKCS#8 key.
        let not_ed25519 = format!(
            "-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n",
            STANDARD.encode([0u8; 48])
        );
        assert!(ManifestSigner::from_pem(&not_ed25519).is_err());
        assert!(ManifestVerifier::from_pem(TEST_KEY).is_err());
    }
}
