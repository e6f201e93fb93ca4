//! `[[publisher]]` (the publishers the exchange sells for: who may claim which id, their
//! margin, their sellers.json entry), `[sellers]` (the exchange's own sellers.json fields),
//! `[auction] unknown_publisher`, and their rules.

use serde::{Deserialize, Serialize};

use super::Config;

/// One publisher account, matched against the request's `site.publisher.id`,
/// `app.publisher.id` or `dooh.publisher.id`.
#[derive(Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PublisherConfig {
    /// The publisher's id, as its requests carry it and as sellers.json lists it
    /// (`seller_id`). Unique, not empty.
    pub id: String,
    /// The legal name paid for this inventory: sellers.json `name`. Required unless
    /// `is_confidential`.
    #[serde(default)]
    pub name: String,
    /// The publisher's business domain: sellers.json `domain`. Default empty (left out).
    #[serde(default)]
    pub domain: String,
    /// The exchange's take of this publisher's sales, 0 to 1. Default none: `[auction]
    /// default_margin`.
    #[serde(default)]
    pub margin: Option<f64>,
    /// With a token, a request claiming this publisher must carry `Authorization: Bearer
    /// TOKEN`. Printable ASCII without spaces. Default none: anyone may claim the id.
    #[serde(default)]
    pub token: Option<String>,
    /// The token is read from this environment variable instead (keeps the secret out of the
    /// file); set one of `token` and `token_env`, not both. An unset or empty variable is a
    /// config error, never an open account.
    #[serde(default)]
    pub token_env: Option<String>,
    /// sellers.json `seller_type`. Default `PUBLISHER`.
    #[serde(default)]
    pub seller_type: SellerType,
    /// sellers.json `is_confidential`: the entry then carries no `name` or `domain`. Default
    /// false.
    #[serde(default)]
    pub is_confidential: bool,
}

impl PublisherConfig {
    /// A publisher with every optional key at its default.
    pub fn new(id: impl Into<String>, name: impl Into<String>) -> Self {
        Self {
            id: id.into(),
            name: name.into(),
            domain: String::new(),
            margin: None,
            token: None,
            token_env: None,
            seller_type: SellerType::default(),
            is_confidential: false,
        }
    }
}

impl std::fmt::Debug for PublisherConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The token is a credential: never in logs.
        f.debug_struct("PublisherConfig")
            .field("id", &self.id)
            .field("name", &self.name)
            .field("domain", &self.domain)
            .field("margin", &self.margin)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("token_env", &self.token_env)
            .field("seller_type", &self.seller_type)
            .field("is_confidential", &self.is_confidential)
            .finish()
    }
}

/// sellers.json `seller_type`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum SellerType {
    /// Sells its own inventory and is paid for it directly.
    #[default]
    Publisher,
    /// Sells inventory it does not own.
    Intermediary,
    Both,
}

impl SellerType {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Publisher => "PUBLISHER",
            Self::Intermediary => "INTERMEDIARY",
            Self::Both => "BOTH",
        }
    }
}

/// `[auction] unknown_publisher`: what happens to a request whose publisher id is not a
/// configured `[[publisher]]` (or that has none).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UnknownPublisher {
    /// It runs, with no publisher account (no token, the default margin).
    #[default]
    Allow,
    /// 403 naming the publisher id field; no DSP is called.
    Reject,
}

/// `[sellers]`: the exchange's own fields of its `GET /sellers.json`.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SellersConfig {
    /// Where buyers write about the file. Default none (left out).
    pub contact_email: Option<String>,
    /// The exchange's business address. Default none (left out).
    pub contact_address: Option<String>,
    /// Other registries' ids of the exchange, e.g. `{ name = "TAG-ID", value = "..." }`.
    /// Default none.
    pub identifiers: Vec<SellersIdentifier>,
}

/// One entry of sellers.json `identifiers`.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SellersIdentifier {
    pub name: String,
    pub value: String,
}

impl Config {
    /// Reads each `token_env` named variable into its publisher's `token` and clears
    /// `token_env`. One left set (the variable is unset or empty, or the file also has a
    /// `token`) is reported by `validate` with every other problem.
    pub(super) fn apply_publisher_env(&mut self, var: &impl Fn(&str) -> Option<String>) {
        for p in &mut self.publishers {
            if let (Some(name), None) = (&p.token_env, &p.token) {
                if let Some(token) = var(name).filter(|t| !t.is_empty()) {
                    p.token = Some(token);
                    p.token_env = None;
                }
            }
        }
    }

    /// `[[publisher]]` and `[sellers]`.
    pub(super) fn validate_publishers(&self, errors: &mut Vec<String>) {
        let mut seen = std::collections::HashSet::new();
        for (i, p) in self.publishers.iter().enumerate() {
            let at = format!("publisher[{i}] ({:?})", p.id);
            if p.id.trim().is_empty() {
                errors.push(format!("publisher[{i}]: id must not be empty"));
            } else if !seen.insert(p.id.as_str()) {
                errors.push(format!("{at}: id is used by another publisher"));
            }
            if let Some(m) = p.margin {
                if !(0.0..=1.0).contains(&m) {
                    errors.push(format!("{at}: margin must be between 0 and 1, not {m}"));
                }
            }
            match (&p.token, &p.token_env) {
                (Some(_), Some(_)) => {
                    errors.push(format!("{at}: set token or token_env, not both"))
                }
                (Some(t), _) if t.is_empty() => errors.push(format!(
                    "{at}: token must not be empty (leave it out for a publisher without one)"
                )),
                (Some(t), _) if !t.bytes().all(|b| (0x21..=0x7e).contains(&b)) => {
                    errors.push(format!(
                    "{at}: token must be printable ASCII without spaces (it is sent as a header)"
                ))
                }
                (None, Some(var)) => errors.push(format!(
                    "{at}: token_env {var} is not set in the environment or is empty"
                )),
                _ => {}
            }
            if !p.is_confidential && p.name.trim().is_empty() {
                errors.push(format!(
                    "{at}: name must not be empty unless is_confidential (sellers.json needs it)"
                ));
            }
        }
        for (i, id) in self.sellers.identifiers.iter().enumerate() {
            if id.name.trim().is_empty() || id.value.trim().is_empty() {
                errors.push(format!(
                    "sellers.identifiers[{i}]: name and value must not be empty"
                ));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Error;

    /// Each case: the config text (applied the environment `env` gives) and the exact errors.
    fn check(cases: &[(&str, &[&str])]) {
        let env = |k: &str| (k == "PUB_TOKEN").then(|| "from-the-environment".to_owned());
        for (text, want) in cases {
            let got = Config::from_toml(text).and_then(|mut c| {
                c.apply_env(env)?;
                c.validate()
            });
            let got = match got {
                Ok(()) => Vec::new(),
                Err(Error::Config(e)) => e,
                Err(e) => vec![e.to_string()],
            };
            assert_eq!(got, *want, "config:\n{text}");
        }
    }

    #[test]
    fn publisher_rules_are_reported_together() {
        check(&[
            // Everything at once.
            (
                r#"
                [[publisher]]
                id = "p1"
                name = "One"
                margin = 1.5
                token = ""
                [[publisher]]
                id = "p1"
                name = "Again"
                [[publisher]]
                id = " "
                name = "Blank"
                margin = -0.1
                [[publisher]]
                id = "p4"
                token = "has space"
                [[publisher]]
                id = "p5"
                name = "Five"
                token_env = "NOT_SET"
                [[publisher]]
                id = "p6"
                name = "Six"
                token = "tok-6"
                token_env = "PUB_TOKEN"
                [sellers]
                identifiers = [{ name = "TAG-ID", value = "" }]
                "#,
                &[
                    "publisher[0] (\"p1\"): margin must be between 0 and 1, not 1.5",
                    "publisher[0] (\"p1\"): token must not be empty (leave it out for a publisher without one)",
                    "publisher[1] (\"p1\"): id is used by another publisher",
                    "publisher[2]: id must not be empty",
                    "publisher[2] (\" \"): margin must be between 0 and 1, not -0.1",
                    "publisher[3] (\"p4\"): token must be printable ASCII without spaces (it is sent as a header)",
                    "publisher[3] (\"p4\"): name must not be empty unless is_confidential (sellers.json needs it)",
                    "publisher[4] (\"p5\"): token_env NOT_SET is not set in the environment or is empty",
                    "publisher[5] (\"p6\"): set token or token_env, not both",
                    "sellers.identifiers[0]: name and value must not be empty",
                ],
            ),
            // A valid set: margins at both ends, a token from the environment, a confidential
            // seller without a name.
            (
                r#"
                [auction]
                unknown_publisher = "reject"
                [[publisher]]
                id = "p1"
                name = "One"
                margin = 0.0
                token = "tok-1"
                [[publisher]]
                id = "p2"
                margin = 1.0
                token_env = "PUB_TOKEN"
                is_confidential = true
                seller_type = "INTERMEDIARY"
                [sellers]
                contact_email = "ads@exchange.example"
                "#,
                &[],
            ),
            // Unknown keys and values are refused when read.
            (
                "[[publisher]]\nid = \"p\"\nname = \"P\"\nseller_type = \"RESELLER\"\n",
                &["TOML parse error at line 4, column 15\n  |\n4 | seller_type = \"RESELLER\"\n  |               ^^^^^^^^^^\nunknown variant `RESELLER`, expected one of `PUBLISHER`, `INTERMEDIARY`, `BOTH`\n"],
            ),
        ]);
    }

    #[test]
    fn the_token_comes_from_the_environment_and_never_shows_in_debug() {
        let mut c = Config::from_toml(
            "[[publisher]]\nid = \"p\"\nname = \"P\"\ntoken_env = \"PUB_TOKEN\"\n[auction]\nunknown_publisher = \"reject\"\n",
        )
        .unwrap();
        c.apply_env(|k| (k == "PUB_TOKEN").then(|| "secret-token".to_owned()))
            .unwrap();
        assert_eq!(c.publishers[0].token.as_deref(), Some("secret-token"));
        assert_eq!(c.auction.unknown_publisher, UnknownPublisher::Reject);
        assert!(!format!("{c:?}").contains("secret-token"));
        let d = Config::from_toml("").unwrap();
        assert_eq!(d.auction.unknown_publisher, UnknownPublisher::Allow);
        assert!(d.publishers.is_empty());
    }
}
