//! IP addresses as policy sees them: the special-purpose ranges (loopback, private,
//! link-local, ...) that a URL handed to devices must not point at by default, ranges
//! an operator writes as CIDR, and the key under which a client's address is counted.
//!
//! The special-purpose ranges are IANA's IPv4 and IPv6 Special-Purpose Address
//! Registries (RFC 6890 and its updates), less the ones that are globally reachable.
//! An IPv6 address that carries an IPv4 address a client could end up reaching
//! (IPv4-mapped `::ffff:a.b.c.d`, IPv4-compatible `::a.b.c.d`, NAT64 `64:ff9b::a.b.c.d`,
//! 6to4 `2002:aabb:ccdd::`) is judged by that IPv4 address ([`embedded_v4`]), so
//! `[::ffff:127.0.0.1]` is loopback like `127.0.0.1`.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use thiserror::Error;

/// A special-purpose range an address falls in: what it is, and the range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Special {
    /// "a loopback address", "a private address", ...
    pub what: &'static str,
    /// The range as CIDR, such as `127.0.0.0/8`.
    pub range: &'static str,
}

const fn v4(a: u8, b: u8, c: u8, d: u8) -> u32 {
    u32::from_be_bytes([a, b, c, d])
}

/// (network, prefix length, what, the range written out), most specific first where
/// ranges nest.
const V4_SPECIAL: &[(u32, u8, &str, &str)] = &[
    (
        v4(0, 0, 0, 0),
        8,
        "the \"this network\" block, which reaches the device itself",
        "0.0.0.0/8",
    ),
    (v4(10, 0, 0, 0), 8, "a private address", "10.0.0.0/8"),
    (
        v4(100, 64, 0, 0),
        10,
        "a carrier-grade NAT (shared) address",
        "100.64.0.0/10",
    ),
    (v4(127, 0, 0, 0), 8, "a loopback address", "127.0.0.0/8"),
    (
        v4(169, 254, 0, 0),
        16,
        "a link-local address (cloud metadata services live there)",
        "169.254.0.0/16",
    ),
    (v4(172, 16, 0, 0), 12, "a private address", "172.16.0.0/12"),
    (
        v4(192, 0, 0, 0),
        24,
        "an IETF protocol assignment",
        "192.0.0.0/24",
    ),
    (
        v4(192, 0, 2, 0),
        24,
        "a documentation address",
        "192.0.2.0/24",
    ),
    (
        v4(192, 88, 99, 0),
        24,
        "a 6to4 relay address",
        "192.88.99.0/24",
    ),
    (
        v4(192, 168, 0, 0),
        16,
        "a private address",
        "192.168.0.0/16",
    ),
    (
        v4(198, 18, 0, 0),
        15,
        "a benchmarking address",
        "198.18.0.0/15",
    ),
    (
        v4(198, 51, 100, 0),
        24,
        "a documentation address",
        "198.51.100.0/24",
    ),
    (
        v4(203, 0, 113, 0),
        24,
        "a documentation address",
        "203.0.113.0/24",
    ),
    (v4(224, 0, 0, 0), 4, "a multicast address", "224.0.0.0/4"),
    (
        v4(240, 0, 0, 0),
        4,
        "a reserved or broadcast address",
        "240.0.0.0/4",
    ),
];

const fn v6(segments: [u16; 8]) -> u128 {
    let mut value = 0u128;
    let mut i = 0;
    while i < 8 {
        value = (value << 16) | segments[i] as u128;
        i += 1;
    }
    value
}

const V6_SPECIAL: &[(u128, u8, &str, &str)] = &[
    (v6([0; 8]), 128, "the unspecified address", "::/128"),
    (
        v6([0, 0, 0, 0, 0, 0, 0, 1]),
        128,
        "the loopback address",
        "::1/128",
    ),
    (
        v6([0x64, 0xff9b, 1, 0, 0, 0, 0, 0]),
        48,
        "a local-use NAT64 address",
        "64:ff9b:1::/48",
    ),
    (
        v6([0x100, 0, 0, 0, 0, 0, 0, 0]),
        64,
        "a discard-only address",
        "100::/64",
    ),
    (
        v6([0x2001, 0xdb8, 0, 0, 0, 0, 0, 0]),
        32,
        "a documentation address",
        "2001:db8::/32",
    ),
    (
        v6([0xfc00, 0, 0, 0, 0, 0, 0, 0]),
        7,
        "a unique local (private) address",
        "fc00::/7",
    ),
    (
        v6([0xfe80, 0, 0, 0, 0, 0, 0, 0]),
        10,
        "a link-local address",
        "fe80::/10",
    ),
    (
        v6([0xfec0, 0, 0, 0, 0, 0, 0, 0]),
        10,
        "a site-local (private) address",
        "fec0::/10",
    ),
    (
        v6([0xff00, 0, 0, 0, 0, 0, 0, 0]),
        8,
        "a multicast address",
        "ff00::/8",
    ),
];

fn in_v4(addr: u32, net: u32, prefix: u8) -> bool {
    let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
    addr & mask == net & mask
}

fn in_v6(addr: u128, net: u128, prefix: u8) -> bool {
    let mask = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
    addr & mask == net & mask
}

/// The special-purpose range `ip` falls in, or `None` for a globally reachable
/// address. IPv6 addresses carrying an IPv4 address are judged by it.
pub fn special_use(ip: IpAddr) -> Option<Special> {
    match embedded_v4(ip) {
        IpAddr::V4(v4) => {
            let addr = u32::from(v4);
            V4_SPECIAL
                .iter()
                .find(|(net, prefix, _, _)| in_v4(addr, *net, *prefix))
                .map(|&(_, _, what, range)| Special { what, range })
        }
        IpAddr::V6(v6) => {
            let addr = u128::from(v6);
            V6_SPECIAL
                .iter()
                .find(|(net, prefix, _, _)| in_v6(addr, *net, *prefix))
                .map(|&(_, _, what, range)| Special { what, range })
        }
    }
}

/// The IPv4 address an IPv6 address carries, for the forms a client may end up
/// delivering to it: IPv4-mapped (`::ffff:0:0/96`), IPv4-compatible (`::/96`, less
/// `::` and `::1`), NAT64 (`64:ff9b::/96`) and 6to4 (`2002::/16`, the 32 bits after
/// the prefix). Anything else is returned as it is.
pub fn embedded_v4(ip: IpAddr) -> IpAddr {
    let IpAddr::V6(v6) = ip else {
        return ip;
    };
    let s = v6.segments();
    let low = |hi: u16, lo: u16| IpAddr::V4(Ipv4Addr::from((u32::from(hi) << 16) | u32::from(lo)));
    match s {
        [0, 0, 0, 0, 0, 0xffff, hi, lo] => low(hi, lo),
        [0, 0, 0, 0, 0, 0, 0, 0 | 1] => ip,
        [0, 0, 0, 0, 0, 0, hi, lo] => low(hi, lo),
        [0x64, 0xff9b, 0, 0, 0, 0, hi, lo] => low(hi, lo),
        [0x2002, hi, lo, ..] => low(hi, lo),
        _ => ip,
    }
}

/// A range of addresses written as CIDR (`10.0.0.0/8`, `fd00::/8`), or one address
/// (`192.168.1.7`, a `/32`; `fd00::7`, a `/128`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpRange {
    base: IpAddr,
    prefix: u8,
}

/// Why a range does not parse. Never repeats the input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum RangeError {
    #[error("is not an IP address or a CIDR range (address/prefix length)")]
    Syntax,
    #[error("has a prefix length longer than the address")]
    Prefix,
    #[error("has bits set after the prefix (write the range's first address, such as 10.0.0.0/8)")]
    HostBits,
}

impl IpRange {
    pub fn parse(text: &str) -> Result<IpRange, RangeError> {
        let (address, prefix) = match text.split_once('/') {
            Some((address, prefix)) => (address, Some(prefix)),
            None => (text, None),
        };
        let base: IpAddr = address.parse().map_err(|_| RangeError::Syntax)?;
        let bits = if base.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => bits,
            Some(p) if !p.is_empty() && p.len() <= 3 && p.bytes().all(|b| b.is_ascii_digit()) => {
                p.parse::<u8>().map_err(|_| RangeError::Prefix)?
            }
            Some(_) => return Err(RangeError::Syntax),
        };
        if prefix > bits {
            return Err(RangeError::Prefix);
        }
        let range = IpRange { base, prefix };
        if range.first() != base {
            return Err(RangeError::HostBits);
        }
        Ok(range)
    }

    /// The range's first address (the base with its host bits cleared).
    fn first(&self) -> IpAddr {
        match self.base {
            IpAddr::V4(a) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                IpAddr::V4(Ipv4Addr::from(u32::from(a) & mask))
            }
            IpAddr::V6(a) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                IpAddr::V6(Ipv6Addr::from(u128::from(a) & mask))
            }
        }
    }

    /// Whether `ip` is in the range. An IPv6 address carrying an IPv4 address is
    /// compared as that address ([`embedded_v4`]), as [`special_use`] judges it.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.base, embedded_v4(ip)) {
            (IpAddr::V4(net), IpAddr::V4(a)) => in_v4(u32::from(a), u32::from(net), self.prefix),
            (IpAddr::V6(net), IpAddr::V6(a)) => in_v6(u128::from(a), u128::from(net), self.prefix),
            _ => false,
        }
    }
}

impl fmt::Display for IpRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.base, self.prefix)
    }
}

/// The key a client's address is counted under, from the `spin-client-addr` header
/// (`203.0.113.7:51234`, `[2001:db8::7]:51234`; a bare address is taken too): an
/// IPv4 address as it is, an IPv6 address as its `/64`, which is what one subscriber
/// or LAN is given, so one client cannot get a fresh budget from each of its 2^64
/// addresses. An IPv4-mapped IPv6 address is its IPv4 address. `None` if the header
/// is not an address.
pub fn client_key(header: &str) -> Option<String> {
    let header = header.trim();
    let ip = header
        .parse::<SocketAddr>()
        .map(|a| a.ip())
        .or_else(|_| header.parse::<IpAddr>())
        .ok()?;
    Some(match ip {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => v4.to_string(),
            None => {
                let network = u128::from(v6) & (u128::MAX << 64);
                format!("{}/64", Ipv6Addr::from(network))
            }
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn special_ranges_are_found_and_public_addresses_are_not() {
        for (address, range) in [
            ("0.0.0.0", "0.0.0.0/8"),
            ("10.0.0.1", "10.0.0.0/8"),
            ("100.64.1.1", "100.64.0.0/10"),
            ("127.0.0.1", "127.0.0.0/8"),
            ("127.255.255.254", "127.0.0.0/8"),
            ("169.254.169.254", "169.254.0.0/16"),
            ("172.16.0.1", "172.16.0.0/12"),
            ("172.31.255.255", "172.16.0.0/12"),
            ("192.0.0.8", "192.0.0.0/24"),
            ("192.0.2.7", "192.0.2.0/24"),
            ("192.168.1.1", "192.168.0.0/16"),
            ("198.19.0.1", "198.18.0.0/15"),
            ("224.0.0.251", "224.0.0.0/4"),
            ("255.255.255.255", "240.0.0.0/4"),
            ("::", "::/128"),
            ("::1", "::1/128"),
            ("fe80::1", "fe80::/10"),
            ("fd12:3456::1", "fc00::/7"),
            ("fec0::1", "fec0::/10"),
            ("ff02::1", "ff00::/8"),
            ("2001:db8::1", "2001:db8::/32"),
            ("64:ff9b:1::1", "64:ff9b:1::/48"),
            // IPv6 spellings of IPv4 addresses are judged as those addresses.
            ("::ffff:127.0.0.1", "127.0.0.0/8"),
            ("::ffff:169.254.169.254", "169.254.0.0/16"),
            ("::127.0.0.1", "127.0.0.0/8"),
            ("64:ff9b::10.0.0.1", "10.0.0.0/8"),
            ("2002:7f00:1::", "127.0.0.0/8"),
        ] {
            let special = special_use(ip(address));
            assert_eq!(special.map(|s| s.range), Some(range), "{address}");
        }
        for address in [
            "1.1.1.1",
            "8.8.8.8",
            "9.255.255.255",
            "11.0.0.0",
            "100.63.255.255",
            "100.128.0.0",
            "126.255.255.255",
            "128.0.0.0",
            "172.15.255.255",
            "172.32.0.0",
            "192.167.255.255",
            "192.169.0.0",
            "223.255.255.255",
            "2606:4700::1111",
            "2a00:1450:4001::200e",
            "::ffff:8.8.8.8",
            "64:ff9b::8.8.8.8",
        ] {
            assert_eq!(special_use(ip(address)), None, "{address}");
        }
        assert_eq!(
            special_use(ip("127.0.0.1")).unwrap().what,
            "a loopback address"
        );
    }

    #[test]
    fn ranges_parse_strictly_and_contain_what_they_say() {
        let private = IpRange::parse("10.0.0.0/8").unwrap();
        assert!(private.contains(ip("10.1.2.3")));
        assert!(
            private.contains(ip("::ffff:10.1.2.3")),
            "an IPv4-mapped address"
        );
        assert!(!private.contains(ip("11.0.0.0")));
        assert!(!private.contains(ip("fd00::1")));
        assert_eq!(private.to_string(), "10.0.0.0/8");
        let one = IpRange::parse("192.168.1.7").unwrap();
        assert_eq!(one.to_string(), "192.168.1.7/32");
        assert!(one.contains(ip("192.168.1.7")) && !one.contains(ip("192.168.1.8")));
        let ula = IpRange::parse("fd00::/8").unwrap();
        assert!(ula.contains(ip("fd12::1")) && !ula.contains(ip("fe80::1")));
        assert!(IpRange::parse("0.0.0.0/0").unwrap().contains(ip("8.8.8.8")));
        assert!(
            IpRange::parse("2002::/16").is_ok(),
            "a prefix that embeds IPv4"
        );
        for (bad, error) in [
            ("", RangeError::Syntax),
            ("10.0.0.0/", RangeError::Syntax),
            ("10.0.0.0/8/8", RangeError::Syntax),
            ("10.0.0.0/+8", RangeError::Syntax),
            ("10.0.0/8", RangeError::Syntax),
            ("010.0.0.0/8", RangeError::Syntax),
            ("localhost", RangeError::Syntax),
            ("10.0.0.0/33", RangeError::Prefix),
            ("fd00::/129", RangeError::Prefix),
            ("10.0.0.0/1000", RangeError::Syntax),
            ("10.0.0.0/256", RangeError::Prefix),
            ("10.0.0.1/8", RangeError::HostBits),
            ("fd00::1/8", RangeError::HostBits),
        ] {
            assert_eq!(IpRange::parse(bad), Err(error), "{bad:?}");
        }
    }

    #[test]
    fn client_keys_are_the_address_or_its_ipv6_64() {
        assert_eq!(
            client_key("203.0.113.7:51234").as_deref(),
            Some("203.0.113.7")
        );
        assert_eq!(client_key("203.0.113.7").as_deref(), Some("203.0.113.7"));
        assert_eq!(
            client_key("[2001:db8:1:2:3:4:5:6]:443").as_deref(),
            Some("2001:db8:1:2::/64")
        );
        assert_eq!(
            client_key("[2001:db8:1:2:ffff::1]:443"),
            client_key("[2001:db8:1:2::9]:1"),
            "one /64, one key"
        );
        assert_ne!(
            client_key("[2001:db8:1:2::1]:443"),
            client_key("[2001:db8:1:3::1]:443")
        );
        assert_eq!(
            client_key("[::ffff:192.0.2.1]:80").as_deref(),
            Some("192.0.2.1")
        );
        assert_eq!(client_key("[::1]:80").as_deref(), Some("::/64"));
        for bad in ["", "nope", "1.2.3.4:99999", "[::1", "1.2.3"] {
            assert_eq!(client_key(bad), None, "{bad:?}");
        }
    }
}
