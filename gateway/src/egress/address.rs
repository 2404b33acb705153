//! Which upstream addresses the gateway may connect to.
//!
//! A reference token names the hosts its value may go to, but a name is only as good as the
//! address it resolves to: `api.example.com` pointed at `169.254.169.254` would hand the value
//! (and the gateway's network position) to a cloud metadata service. So every address a name
//! resolves to is classified here, and anything that is not plainly a public unicast address
//! is refused unless the route lists its network. Tunnelling and translation prefixes (v4-mapped
//! and v4-compatible IPv6, NAT64, 6to4, Teredo) are refused too: they reach IPv4 addresses the
//! IPv4 checks would refuse.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;

/// Why an address is not a plain public one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum AddressClass {
    /// `0.0.0.0/8`, `::`.
    Unspecified,
    /// `127.0.0.0/8`, `::1`.
    Loopback,
    /// RFC 1918 (`10/8`, `172.16/12`, `192.168/16`).
    Private,
    /// Shared address space for carrier-grade NAT (`100.64/10`), where some clouds put their
    /// metadata service.
    Cgnat,
    /// `169.254/16`, `fe80::/10` (the usual home of metadata services).
    LinkLocal,
    /// IPv6 unique local addresses (`fc00::/7`), and the deprecated site-local `fec0::/10`.
    UniqueLocal,
    /// IPv4 inside IPv6 (`::ffff:0:0/96`, `::/96`, NAT64 `64:ff9b::/96` and `64:ff9b:1::/48`,
    /// 6to4 `2002::/16`, Teredo `2001::/32`).
    Embedded,
    /// Multicast and broadcast.
    Multicast,
    /// Documentation, benchmarking, protocol-assignment and reserved ranges.
    Reserved,
}

impl AddressClass {
    /// A short name for messages, metrics and the audit line.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unspecified => "unspecified",
            Self::Loopback => "loopback",
            Self::Private => "private",
            Self::Cgnat => "cgnat",
            Self::LinkLocal => "link-local",
            Self::UniqueLocal => "unique-local",
            Self::Embedded => "ipv4-in-ipv6",
            Self::Multicast => "multicast",
            Self::Reserved => "reserved",
        }
    }
}

impl fmt::Display for AddressClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The class of `ip`, or `None` for a public unicast address.
pub fn classify(ip: IpAddr) -> Option<AddressClass> {
    match ip {
        IpAddr::V4(v4) => classify_v4(v4),
        IpAddr::V6(v6) => classify_v6(v6),
    }
}

fn classify_v4(ip: Ipv4Addr) -> Option<AddressClass> {
    let [a, b, c, _] = ip.octets();
    let class = match (a, b, c) {
        (0, _, _) => AddressClass::Unspecified,
        (127, _, _) => AddressClass::Loopback,
        (10, _, _) | (192, 168, _) => AddressClass::Private,
        (172, 16..=31, _) => AddressClass::Private,
        (100, 64..=127, _) => AddressClass::Cgnat,
        (169, 254, _) => AddressClass::LinkLocal,
        (224..=239, _, _) => AddressClass::Multicast,
        (255, 255, 255) if ip.is_broadcast() => AddressClass::Multicast,
        (240..=255, _, _) => AddressClass::Reserved,
        (192, 0, 0) | (192, 0, 2) | (198, 51, 100) | (203, 0, 113) => AddressClass::Reserved,
        (198, 18..=19, _) => AddressClass::Reserved,
        _ => return None,
    };
    Some(class)
}

fn classify_v6(ip: Ipv6Addr) -> Option<AddressClass> {
    let s = ip.segments();
    let class = if ip.is_unspecified() {
        AddressClass::Unspecified
    } else if ip.is_loopback() {
        AddressClass::Loopback
    } else if embeds_ipv4(s) {
        AddressClass::Embedded
    } else if s[0] & 0xfe00 == 0xfc00 || s[0] & 0xffc0 == 0xfec0 {
        AddressClass::UniqueLocal
    } else if s[0] & 0xffc0 == 0xfe80 {
        AddressClass::LinkLocal
    } else if s[0] & 0xff00 == 0xff00 {
        AddressClass::Multicast
    } else if (s[0] == 0x2001 && s[1] == 0xdb8) || (s[0] == 0x100 && s[1..4] == [0; 3]) {
        // Documentation, and the discard-only prefix 100::/64.
        AddressClass::Reserved
    } else if s[0] & 0xe000 != 0x2000 {
        // Outside 2000::/3, the only global unicast space allocated.
        AddressClass::Reserved
    } else {
        return None;
    };
    Some(class)
}

/// Whether an IPv6 address carries an IPv4 one: v4-mapped (`::ffff:a.b.c.d`), the deprecated
/// v4-compatible (`::a.b.c.d`), NAT64 (`64:ff9b::/96`, `64:ff9b:1::/48`), 6to4 (`2002::/16`)
/// and Teredo (`2001::/32`).
fn embeds_ipv4(s: [u16; 8]) -> bool {
    let mapped = s[..5] == [0; 5] && (s[5] == 0xffff || s[5] == 0);
    let nat64 = s[0] == 0x64 && s[1] == 0xff9b && (s[2..6] == [0; 4] || s[2] == 1);
    let tunnel = s[0] == 0x2002 || (s[0] == 0x2001 && s[1] == 0);
    mapped || nat64 || tunnel
}

/// The addresses one route may reach beyond the public ones.
#[derive(Debug, Clone, Default)]
pub struct AddressPolicy {
    /// Networks allowed although their class is refused by default (for example
    /// `127.0.0.1/32` for an upstream on the gateway's own host).
    pub allowed: Vec<IpNet>,
}

impl AddressPolicy {
    /// Why `ip` may not be dialed under this policy, or `None` when it may.
    pub fn refuses(&self, ip: IpAddr) -> Option<AddressClass> {
        let class = classify(ip)?;
        let listed = self.allowed.iter().any(|n| n.contains(&ip));
        (!listed).then_some(class)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn class(s: &str) -> Option<AddressClass> {
        classify(s.parse().unwrap())
    }

    #[test]
    fn public_addresses_pass() {
        for ip in [
            "1.1.1.1",
            "8.8.8.8",
            "93.184.216.34",
            "172.15.255.255",
            "172.32.0.1",
            "100.63.255.255",
            "100.128.0.1",
            "2606:4700:4700::1111",
            "2a00:1450:4001:80b::200e",
        ] {
            assert_eq!(class(ip), None, "{ip}");
        }
    }

    #[test]
    fn everything_else_is_classified() {
        use AddressClass::*;
        for (ip, want) in [
            ("0.0.0.0", Unspecified),
            ("0.1.2.3", Unspecified),
            ("127.0.0.1", Loopback),
            ("127.255.0.9", Loopback),
            ("10.0.0.1", Private),
            ("172.16.0.1", Private),
            ("172.31.255.254", Private),
            ("192.168.1.1", Private),
            ("100.64.0.1", Cgnat),
            ("100.100.100.200", Cgnat),
            ("169.254.169.254", LinkLocal),
            ("224.0.0.1", Multicast),
            ("255.255.255.255", Multicast),
            ("240.0.0.1", Reserved),
            ("192.0.0.192", Reserved),
            ("192.0.2.1", Reserved),
            ("198.18.0.1", Reserved),
            ("::", Unspecified),
            ("::1", Loopback),
            ("::ffff:127.0.0.1", Embedded),
            ("::ffff:8.8.8.8", Embedded),
            ("::127.0.0.1", Embedded),
            ("64:ff9b::a9fe:a9fe", Embedded),
            ("64:ff9b:1::1", Embedded),
            ("2002:a9fe:a9fe::1", Embedded),
            ("2001:0:4136:e378::1", Embedded),
            ("fd00:ec2::254", UniqueLocal),
            ("fc00::1", UniqueLocal),
            ("fec0::1", UniqueLocal),
            ("fe80::1", LinkLocal),
            ("ff02::1", Multicast),
            ("2001:db8::1", Reserved),
            ("100::1", Reserved),
            ("4000::1", Reserved),
        ] {
            assert_eq!(class(ip), Some(want), "{ip}");
        }
    }

    #[test]
    fn a_route_may_allow_listed_networks_only() {
        let p = AddressPolicy {
            allowed: vec!["127.0.0.2/32".parse().unwrap()],
        };
        assert_eq!(p.refuses("127.0.0.2".parse().unwrap()), None);
        assert_eq!(
            p.refuses("127.0.0.1".parse().unwrap()),
            Some(AddressClass::Loopback)
        );
        assert_eq!(p.refuses("8.8.8.8".parse().unwrap()), None);
        assert_eq!(
            AddressPolicy::default().refuses("::ffff:127.0.0.2".parse().unwrap()),
            Some(AddressClass::Embedded)
        );
    }
}
