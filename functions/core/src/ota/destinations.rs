//! Where firmware may be downloaded from: the checks of a firmware URL's host.

use super::*;

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
