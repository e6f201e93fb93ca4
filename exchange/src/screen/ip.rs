//! IP address sets (blocklists, trusted proxies): IPv4 and IPv6 addresses and CIDR ranges in two
//! multibit prefix tries (`prefix-trie`, a TreeBitMap), so a lookup walks at most 7 (IPv4) or
//! 26 (IPv6) nodes whatever the number of ranges. An IPv4-mapped IPv6 address (`::ffff:a.b.c.d`)
//! is looked up as the IPv4 address it carries.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;

use ipnet::IpNet;
use prefix_trie::PrefixSet;

/// A set of IP ranges. Empty by default.
#[derive(Clone, Default)]
pub struct IpSet {
    v4: PrefixSet<(u32, u8)>,
    v6: PrefixSet<(u128, u8)>,
    len: usize,
}

impl std::fmt::Debug for IpSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IpSet").field("ranges", &self.len).finish()
    }
}

impl IpSet {
    /// The set of the ranges in `files` (one address or CIDR range per line, `#` comments);
    /// every bad line and unreadable file is pushed to `errors` as `file:line: problem`.
    pub fn from_files(files: &[PathBuf], errors: &mut Vec<String>) -> Self {
        let mut set = IpSet::default();
        for file in files {
            super::list::read(file, errors, |entry| set.insert_str(entry));
        }
        set
    }

    /// Adds an address (`192.0.2.1`, `2001:db8::1`) or a CIDR range (`192.0.2.0/24`,
    /// `2001:db8::/32`). Host bits below the prefix length are ignored, as routers do.
    pub fn insert_str(&mut self, entry: &str) -> Result<(), String> {
        let net = match entry.parse::<IpNet>() {
            Ok(net) => net.trunc(),
            Err(_) => match entry.parse::<IpAddr>() {
                Ok(addr) => IpNet::from(addr),
                Err(_) => return Err(format!("{entry:?} is not an IP address or CIDR range")),
            },
        };
        self.insert(net);
        Ok(())
    }

    pub fn insert(&mut self, net: IpNet) {
        let added = match net {
            IpNet::V4(n) => self.v4.insert((u32::from(n.network()), n.prefix_len())),
            IpNet::V6(n) => match (n.network().to_ipv4_mapped(), n.prefix_len()) {
                // A mapped range is the IPv4 range it carries, so both spellings match.
                (Some(v4), len @ 96..=128) => self.v4.insert((u32::from(v4), len - 96)),
                _ => self.v6.insert((u128::from(n.network()), n.prefix_len())),
            },
        };
        if added {
            self.len += 1;
        }
    }

    /// Whether `ip` lies in one of the ranges.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match canonical(ip) {
            IpAddr::V4(v4) => self.contains_v4(v4),
            IpAddr::V6(v6) => self.contains_v6(v6),
        }
    }

    fn contains_v4(&self, ip: Ipv4Addr) -> bool {
        self.v4.is_covered(&(u32::from(ip), 32))
    }

    fn contains_v6(&self, ip: Ipv6Addr) -> bool {
        self.v6.is_covered(&(u128::from(ip), 128))
    }

    /// Ranges held (a range listed twice counts once).
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// `ip`, with an IPv4-mapped IPv6 address turned into the IPv4 address it carries.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(entries: &[&str]) -> IpSet {
        let mut s = IpSet::default();
        for e in entries {
            s.insert_str(e).unwrap();
        }
        s
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn a_range_holds_its_edges_and_nothing_past_them() {
        let s = set(&["192.0.2.0/24", "2001:db8::/32"]);
        for inside in [
            "192.0.2.0",
            "192.0.2.255",
            "2001:db8::",
            "2001:db8:ffff:ffff:ffff:ffff:ffff:ffff",
        ] {
            assert!(s.contains(ip(inside)), "{inside}");
        }
        for outside in [
            "192.0.1.255",
            "192.0.3.0",
            "2001:db7:ffff:ffff:ffff:ffff:ffff:ffff",
            "2001:db9::",
        ] {
            assert!(!s.contains(ip(outside)), "{outside}");
        }
        assert_eq!(s.len(), 2);
    }

    #[test]
    fn single_addresses_are_slash_32_and_slash_128() {
        let s = set(&[
            "198.51.100.7",
            "203.0.113.9/32",
            "2001:db8::1",
            "2001:db8::2/128",
        ]);
        for inside in ["198.51.100.7", "203.0.113.9", "2001:db8::1", "2001:db8::2"] {
            assert!(s.contains(ip(inside)), "{inside}");
        }
        for outside in [
            "198.51.100.6",
            "198.51.100.8",
            "203.0.113.10",
            "2001:db8::3",
            "2001:db8::",
        ] {
            assert!(!s.contains(ip(outside)), "{outside}");
        }
    }

    #[test]
    fn slash_zero_holds_every_address_of_its_family_only() {
        let v4 = set(&["0.0.0.0/0"]);
        assert!(v4.contains(ip("0.0.0.0")));
        assert!(v4.contains(ip("255.255.255.255")));
        assert!(!v4.contains(ip("::1")));
        let v6 = set(&["::/0"]);
        assert!(v6.contains(ip("ffff:ffff:ffff:ffff:ffff:ffff:ffff:fffe")));
        assert!(!v6.contains(ip("10.0.0.1")));
    }

    #[test]
    fn ipv4_mapped_ipv6_matches_either_spelling() {
        let s = set(&["10.1.0.0/16", "::ffff:172.16.0.0/108"]);
        assert!(s.contains(ip("::ffff:10.1.2.3")));
        assert!(!s.contains(ip("::ffff:10.2.0.0")));
        assert!(s.contains(ip("172.16.5.5")));
        assert!(s.contains(ip("::ffff:172.31.255.255")));
        assert!(!s.contains(ip("172.32.0.0")));
    }

    #[test]
    fn host_bits_are_ignored_and_nested_ranges_count() {
        let s = set(&["10.9.8.7/8", "10.1.0.0/16"]);
        assert!(s.contains(ip("10.200.0.1")));
        assert!(!s.contains(ip("11.0.0.0")));
    }

    #[test]
    fn a_bad_file_names_each_bad_line_and_unreadable_files() {
        let dir = std::env::temp_dir().join(format!("ipset-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("dc.txt");
        std::fs::write(
            &file,
            "# data centres\n192.0.2.0/24\n\n10.0.0.0/33\n  203.0.113.1  # one host\nnot-an-ip\n",
        )
        .unwrap();
        let missing = dir.join("missing.txt");
        let mut errors = Vec::new();
        let s = IpSet::from_files(&[file.clone(), missing.clone()], &mut errors);
        assert_eq!(s.len(), 2);
        assert!(s.contains(ip("203.0.113.1")));
        assert_eq!(errors.len(), 3, "{errors:#?}");
        assert_eq!(
            errors[0],
            format!(
                "{}:4: \"10.0.0.0/33\" is not an IP address or CIDR range",
                file.display()
            )
        );
        assert_eq!(
            errors[1],
            format!(
                "{}:6: \"not-an-ip\" is not an IP address or CIDR range",
                file.display()
            )
        );
        assert!(
            errors[2].starts_with(&format!("{}: cannot read: ", missing.display())),
            "{}",
            errors[2]
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
