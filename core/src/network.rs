//! Which addresses may be heard from: CIDR networks and the
//! `allowed_networks` filter built from them.

use core::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::fmt;
use std::str::FromStr;

use thiserror::Error;

/// A CIDR that cannot be a network. Discovery, admission and the
/// configuration check all parse `allowed_networks`, so the error is theirs
/// to share rather than discovery's.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[error("invalid CIDR {cidr:?}: {reason}")]
pub struct InvalidCidr {
    pub cidr: String,
    pub reason: String,
}

/// A network in CIDR notation (`10.1.0.0/16`, `fd00::/8`), IPv4 or IPv6.
///
/// Written by hand rather than pulled in as a dependency: it is a few lines, and
/// it is strict where a general-purpose parser might guess (host bits set after
/// the prefix are refused, since `10.1.2.3/16` is more likely a typo than intent).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// A network from its address and prefix length. IPv4-mapped IPv6 networks
    /// (`::ffff:10.0.0.0/104`) become the IPv4 network they denote, because
    /// addresses are compared in canonical form (see [`contains`](Self::contains)).
    pub fn new(addr: IpAddr, prefix: u8) -> Result<Self, InvalidCidr> {
        let err = |reason: String| InvalidCidr {
            cidr: format!("{addr}/{prefix}"),
            reason,
        };
        let max = max_prefix(addr);
        if prefix > max {
            return Err(err(format!("prefix /{prefix} is longer than {max} bits")));
        }
        let (addr, prefix) = match addr {
            IpAddr::V6(v6) if prefix >= 96 => match v6.to_ipv4_mapped() {
                Some(v4) => (IpAddr::V4(v4), prefix - 96),
                None => (addr, prefix),
            },
            _ => (addr, prefix),
        };
        let masked = mask(addr, prefix);
        if masked != addr {
            return Err(err(format!(
                "host bits are set after the prefix; did you mean {masked}/{prefix}?"
            )));
        }
        Ok(Cidr { addr, prefix })
    }

    /// The network address.
    pub fn addr(&self) -> IpAddr {
        self.addr
    }

    /// The prefix length in bits.
    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    /// Whether `ip` is in this network. IPv4-mapped IPv6 addresses (what a
    /// dual-stack socket reports for IPv4 senders) count as the IPv4 address they
    /// carry; an IPv4 network never contains a native IPv6 address or vice versa.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        ip.is_ipv4() == self.addr.is_ipv4() && mask(ip, self.prefix) == self.addr
    }
}

impl FromStr for Cidr {
    type Err = InvalidCidr;

    /// Parses `addr/prefix`, or a bare address as a single host (`/32`, `/128`).
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let err = |reason: &str| InvalidCidr {
            cidr: text.to_owned(),
            reason: reason.to_owned(),
        };
        let t = text.trim();
        let (addr_text, prefix_text) = match t.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (t, None),
        };
        let addr: IpAddr = if addr_text.contains(':') {
            Ipv6Addr::from_str(addr_text)
                .map(IpAddr::V6)
                .map_err(|_| err("not an IPv6 address before the '/'"))?
        } else {
            Ipv4Addr::from_str(addr_text)
                .map(IpAddr::V4)
                .map_err(|_| err("not an IPv4 address before the '/'"))?
        };
        let prefix = match prefix_text {
            None => max_prefix(addr),
            Some(p) => {
                if p.is_empty() || p.len() > 3 || !p.bytes().all(|c| c.is_ascii_digit()) {
                    return Err(err("the prefix length must be a decimal number"));
                }
                p.parse::<u8>()
                    .map_err(|_| err("the prefix length is out of range"))?
            }
        };
        Cidr::new(addr, prefix).map_err(|InvalidCidr { reason, .. }| InvalidCidr {
            cidr: text.to_owned(),
            reason,
        })
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

fn max_prefix(addr: IpAddr) -> u8 {
    if addr.is_ipv4() { 32 } else { 128 }
}

/// `addr` with every bit after the first `prefix` cleared.
pub(super) fn mask(addr: IpAddr, prefix: u8) -> IpAddr {
    match addr {
        IpAddr::V4(v4) => {
            let m = u32::MAX
                .checked_shl(32 - u32::from(prefix.min(32)))
                .unwrap_or(0);
            IpAddr::V4(Ipv4Addr::from(u32::from(v4) & m))
        }
        IpAddr::V6(v6) => {
            let m = u128::MAX
                .checked_shl(128 - u32::from(prefix.min(128)))
                .unwrap_or(0);
            IpAddr::V6(Ipv6Addr::from(u128::from(v6) & m))
        }
    }
}

/// Whether `ip` is in the network `cidr` (parsed with [`Cidr::from_str`]).
pub fn cidr_contains(cidr: &str, ip: IpAddr) -> Result<bool, InvalidCidr> {
    Ok(cidr.parse::<Cidr>()?.contains(ip))
}

/// The `allowed_networks` setting, parsed once. Empty allows everything, so a
/// default configuration works on any LAN; the Node can use the same filter for
/// inbound connections.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NetworkFilter {
    nets: Vec<Cidr>,
    /// Set only by [`NetworkFilter::deny_all`].
    deny: bool,
}

impl NetworkFilter {
    /// Parses every entry; the first invalid one is the error.
    pub fn parse<S: AsRef<str>>(list: &[S]) -> Result<Self, InvalidCidr> {
        let nets = list
            .iter()
            .map(|s| s.as_ref().parse())
            .collect::<Result<Vec<Cidr>, _>>()?;
        Ok(NetworkFilter { nets, deny: false })
    }

    /// A filter no address passes: the fallback for a list that cannot be
    /// parsed, so a mistake closes the node instead of opening it.
    pub fn deny_all() -> Self {
        NetworkFilter {
            nets: Vec::new(),
            deny: true,
        }
    }

    /// Whether `ip` may be heard from (and connect).
    pub fn allows(&self, ip: IpAddr) -> bool {
        !self.deny && (self.nets.is_empty() || self.nets.iter().any(|n| n.contains(ip)))
    }

    /// The parsed networks.
    pub fn networks(&self) -> &[Cidr] {
        &self.nets
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks() {
        let ip: IpAddr = "10.1.2.3".parse().unwrap();
        assert_eq!(mask(ip, 0), "0.0.0.0".parse::<IpAddr>().unwrap());
        assert_eq!(mask(ip, 16), "10.1.0.0".parse::<IpAddr>().unwrap());
        assert_eq!(mask(ip, 32), ip);
        let v6: IpAddr = "fd00:1:2:3:4:5:6:7".parse().unwrap();
        assert_eq!(mask(v6, 64), "fd00:1:2:3::".parse::<IpAddr>().unwrap());
        assert_eq!(mask(v6, 128), v6);
        assert_eq!(mask(v6, 0), "::".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn cidrs_parse_strictly_and_mapped_ones_become_ipv4() {
        let c: Cidr = "10.1.0.0/16".parse().unwrap();
        assert_eq!((c.addr(), c.prefix()), ("10.1.0.0".parse().unwrap(), 16));
        assert_eq!(c.to_string(), "10.1.0.0/16");
        assert_eq!("10.1.2.3".parse::<Cidr>().unwrap().prefix(), 32);
        assert_eq!("fd00::1".parse::<Cidr>().unwrap().prefix(), 128);
        for bad in [
            "10.1.2.3/16",
            "10.0.0.0/33",
            "10.0.0.0/",
            "10.0.0.0/+8",
            "x/8",
            "::g/64",
        ] {
            assert!(bad.parse::<Cidr>().is_err(), "{bad}");
        }
        let mapped: Cidr = "::ffff:10.0.0.0/104".parse().unwrap();
        assert_eq!(mapped, "10.0.0.0/8".parse().unwrap());
    }

    #[test]
    fn containment_compares_canonical_addresses() {
        let c: Cidr = "10.0.0.0/8".parse().unwrap();
        assert!(c.contains("10.9.9.9".parse().unwrap()));
        assert!(c.contains("::ffff:10.9.9.9".parse().unwrap()));
        assert!(!c.contains("11.0.0.1".parse().unwrap()));
        let v6: Cidr = "::/0".parse().unwrap();
        assert!(!v6.contains("10.0.0.1".parse().unwrap()));
        assert_eq!(
            cidr_contains("fd00::/8", "fd12::1".parse().unwrap()),
            Ok(true)
        );
    }

    #[test]
    fn an_empty_filter_allows_all_and_deny_all_nothing() {
        let ip: IpAddr = "192.168.1.5".parse().unwrap();
        assert!(NetworkFilter::default().allows(ip));
        assert!(!NetworkFilter::deny_all().allows(ip));
        let f = NetworkFilter::parse(&["10.0.0.0/8", "192.168.1.0/24"]).unwrap();
        assert!(f.allows(ip) && !f.allows("172.16.0.1".parse().unwrap()));
        assert_eq!(f.networks().len(), 2);
        assert!(NetworkFilter::parse(&["10.0.0.0/8", "nope"]).is_err());
    }
}
