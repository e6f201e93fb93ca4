//! Blocked domains and app bundles. A listed domain blocks itself and every subdomain
//! (`example.com` blocks `ads.example.com`, not `badexample.com`); case and a trailing dot
//! are ignored; a leading `*.` or `.` in the list means the same as the bare domain. App
//! bundles match whole, ignoring case.

use std::borrow::Cow;
use std::collections::HashSet;
use std::path::PathBuf;

/// Domains, each blocking its subdomains too.
#[derive(Clone, Debug, Default)]
pub struct DomainSet(HashSet<Box<str>>);

impl DomainSet {
    pub fn from_files(files: &[PathBuf], errors: &mut Vec<String>) -> Self {
        let mut set = DomainSet::default();
        for file in files {
            super::list::read(file, errors, |entry| set.insert(entry));
        }
        set
    }

    pub fn insert(&mut self, entry: &str) -> Result<(), String> {
        let bare = entry
            .trim_start_matches("*.")
            .trim_start_matches('.')
            .trim_end_matches('.');
        let valid = !bare.is_empty()
            && bare
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'));
        if !valid {
            return Err(format!("{entry:?} is not a domain name"));
        }
        self.0.insert(bare.to_ascii_lowercase().into_boxed_str());
        Ok(())
    }

    /// Whether `host` or one of its parent domains is listed.
    pub fn blocks(&self, host: &str) -> bool {
        if self.0.is_empty() {
            return false;
        }
        let host = lower(host.trim_end_matches('.'));
        let mut rest: &str = &host;
        loop {
            if self.0.contains(rest) {
                return true;
            }
            match rest.split_once('.') {
                Some((_, parent)) if !parent.is_empty() => rest = parent,
                _ => return false,
            }
        }
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// App bundles (`com.example.game`, `1234567890`), matched whole.
#[derive(Clone, Debug, Default)]
pub struct BundleSet(HashSet<Box<str>>);

impl BundleSet {
    pub fn from_files(files: &[PathBuf], errors: &mut Vec<String>) -> Self {
        let mut set = BundleSet::default();
        for file in files {
            super::list::read(file, errors, |entry| set.insert(entry));
        }
        set
    }

    pub fn insert(&mut self, entry: &str) -> Result<(), String> {
        if entry.contains(char::is_whitespace) {
            return Err(format!("{entry:?} is not an app bundle (it has a space)"));
        }
        self.0.insert(entry.to_ascii_lowercase().into_boxed_str());
        Ok(())
    }

    pub fn blocks(&self, bundle: &str) -> bool {
        !self.0.is_empty() && self.0.contains(&*lower(bundle.trim()))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// `s` in lower case, copied only when it has an upper-case letter.
fn lower(s: &str) -> Cow<'_, str> {
    if s.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(s.to_ascii_lowercase())
    } else {
        Cow::Borrowed(s)
    }
}

/// The host of a page URL (`https://user@www.example.com:8080/path?q` gives
/// `www.example.com`), or `None` when it has none. Hand-written rather than `http::Uri`, which
/// refuses the spaces and non-ASCII characters real page URLs carry in their paths.
pub fn page_host(page: &str) -> Option<&str> {
    let rest = page.trim();
    let rest = match rest.find("://") {
        Some(i) => &rest[i + 3..],
        None => rest.strip_prefix("//")?,
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or(rest);
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let host = if host_port.starts_with('[') {
        host_port.split_once(']').map(|(h, _)| &h[1..])?
    } else {
        host_port.split(':').next().unwrap_or(host_port)
    };
    (!host.is_empty()).then_some(host)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_listed_domain_blocks_its_subdomains_only() {
        let mut s = DomainSet::default();
        for e in ["Example.COM", "*.bad.test", ".also.test", "trail.test."] {
            s.insert(e).unwrap();
        }
        for blocked in [
            "example.com",
            "EXAMPLE.com.",
            "www.example.com",
            "a.b.example.com",
            "bad.test",
            "x.bad.test",
            "also.test",
            "trail.test",
        ] {
            assert!(s.blocks(blocked), "{blocked}");
        }
        for open in [
            "badexample.com",
            "example.org",
            "com",
            "test",
            "example.com.evil",
            "",
        ] {
            assert!(!s.blocks(open), "{open}");
        }
        assert!(s.insert("bad domain").is_err());
        assert!(s.insert("*.").is_err());
    }

    #[test]
    fn bundles_match_whole_ignoring_case() {
        let mut s = BundleSet::default();
        s.insert("com.Example.Game").unwrap();
        assert!(s.blocks("com.example.game"));
        assert!(!s.blocks("com.example.game2"));
        assert!(!s.blocks("example.game"));
    }

    #[test]
    fn the_page_host_is_found_in_any_page_url() {
        for (page, host) in [
            ("https://www.example.com/a b/ü?x=1", Some("www.example.com")),
            ("http://user:pw@news.example:8080/", Some("news.example")),
            ("//cdn.example/x", Some("cdn.example")),
            ("https://[2001:db8::1]:443/", Some("2001:db8::1")),
            ("https://example.com?q", Some("example.com")),
            ("example.com/path", None),
            ("https:///nohost", None),
        ] {
            assert_eq!(page_host(page), host, "{page}");
        }
    }
}
