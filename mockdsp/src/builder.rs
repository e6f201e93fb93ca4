//! The mock DSP builder: every knob with a working default, validated once at `start`.

use std::time::Duration;

use tokio::net::TcpListener;

use crate::config::{Behavior, Latency, Price};
use crate::handle::MockDspHandle;
use crate::settings::{base_url_with, check_behavior, NoticeUrls, Settings};
use crate::tls::TestCa;
use crate::Error;

/// How many request bodies and notices a mock keeps by default.
pub const DEFAULT_RECORD: usize = 1024;

/// Request bodies above this are answered 413: a mock is a test tool, not a sink.
const MAX_BODY_BYTES: usize = 4 * 1024 * 1024;

/// Namespace for [`MockDsp::builder`].
#[derive(Debug)]
pub enum MockDsp {}

impl MockDsp {
    /// A builder for a mock named `name` that bids a fixed 1.0 CPM on every imp, instantly,
    /// on `127.0.0.1` at a free port.
    pub fn builder(name: impl Into<String>) -> MockDspBuilder {
        MockDspBuilder::new(name.into())
    }
}

/// Configures one mock DSP; [`MockDspBuilder::start`] binds it and serves.
#[derive(Clone, Debug)]
pub struct MockDspBuilder {
    name: String,
    behavior: Behavior,
    price: Price,
    bid_probability: f64,
    latency: Latency,
    seat: Option<String>,
    cids: Option<Vec<String>>,
    adomains: Option<Vec<String>>,
    crid: Option<String>,
    deal: Option<String>,
    deals_from_request: bool,
    adm: Option<String>,
    currency: Option<String>,
    notices: bool,
    bind: String,
    trickle_every: Duration,
    record: usize,
    tls: Option<TestCa>,
}

impl MockDspBuilder {
    fn new(name: String) -> Self {
        Self {
            name,
            behavior: Behavior::Bid,
            price: Price::Fixed(1.0),
            bid_probability: 1.0,
            latency: Latency::None,
            seat: None,
            cids: None,
            adomains: None,
            crid: None,
            deal: None,
            deals_from_request: false,
            adm: None,
            currency: None,
            notices: false,
            bind: "127.0.0.1:0".to_owned(),
            trickle_every: Duration::from_millis(5),
            record: DEFAULT_RECORD,
            tls: None,
        }
    }

    /// The mock's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The campaign ids its bids carry in `cid` (the configured list, else the default).
    pub fn campaign_ids(&self) -> Vec<String> {
        self.cids
            .clone()
            .unwrap_or_else(|| default_cids(&self.name))
    }

    /// How `/bid` answers. Default [`Behavior::Bid`].
    pub fn behavior(mut self, behavior: Behavior) -> Self {
        self.behavior = behavior;
        self
    }

    /// The bid price distribution (CPM). Default `Fixed(1.0)`.
    pub fn price(mut self, price: Price) -> Self {
        self.price = price;
        self
    }

    /// The chance, in `[0, 1]`, that a `Bid` mock bids on a given imp. Default 1.
    pub fn bid_probability(mut self, p: f64) -> Self {
        self.bid_probability = p;
        self
    }

    /// The wait before answering, for every behaviour. Default none.
    pub fn latency(mut self, latency: Latency) -> Self {
        self.latency = latency;
        self
    }

    /// `seatbid.seat`. Default: the mock's name.
    pub fn seat(mut self, seat: impl Into<String>) -> Self {
        self.seat = Some(seat.into());
        self
    }

    /// The campaign ids each bid's `cid` is drawn from. Default `["<name>-campaign"]`; an empty
    /// list sends no `cid`.
    pub fn cids<I, S>(mut self, cids: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.cids = Some(cids.into_iter().map(Into::into).collect());
        self
    }

    /// The advertiser domains each bid's `adomain` (one entry) is drawn from. Default
    /// `["<name>.example"]`; an empty list sends no `adomain`.
    pub fn adomains<I, S>(mut self, adomains: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.adomains = Some(adomains.into_iter().map(Into::into).collect());
        self
    }

    /// `crid` of every bid. Default `"<name>-creative"`.
    pub fn crid(mut self, crid: impl Into<String>) -> Self {
        self.crid = Some(crid.into());
        self
    }

    /// Every bid carries this `dealid`, whatever the request's `pmp` says.
    pub fn deal(mut self, deal: impl Into<String>) -> Self {
        self.deal = Some(deal.into());
        self
    }

    /// Bids on imps that list `pmp.deals` carry the id of the first deal this seat may bid in
    /// (no `wseat`, or `wseat` naming this seat). Ignored when [`Self::deal`] is set.
    pub fn deals_from_request(mut self, on: bool) -> Self {
        self.deals_from_request = on;
        self
    }

    /// The `adm` of every bid. Default: a small HTML snippet containing `${AUCTION_PRICE}`.
    pub fn adm(mut self, adm: impl Into<String>) -> Self {
        self.adm = Some(adm.into());
        self
    }

    /// Forces the response `cur`. Default: the request's first `cur`, else `"USD"`.
    pub fn currency(mut self, cur: impl Into<String>) -> Self {
        self.currency = Some(cur.into());
        self
    }

    /// Puts `nurl`/`burl`/`lurl` in bids, pointing at this mock's own `/nurl`, `/burl`, `/lurl`
    /// with the OpenRTB macros in the query. Default off.
    pub fn notices(mut self, on: bool) -> Self {
        self.notices = on;
        self
    }

    /// The address to listen on. Default `127.0.0.1:0` (a free port).
    pub fn bind(mut self, addr: impl Into<String>) -> Self {
        self.bind = addr.into();
        self
    }

    /// The gap between two body bytes of a [`Behavior::Trickle`] mock. Default 5 ms.
    pub fn trickle_every(mut self, every: Duration) -> Self {
        self.trickle_every = every;
        self
    }

    /// How many recent request bodies and notices to keep (each). Default 1024; 0 keeps none,
    /// which is what a long load test wants.
    pub fn record(mut self, n: usize) -> Self {
        self.record = n;
        self
    }

    /// Serves over HTTPS (HTTP/2 or HTTP/1.1 by ALPN) with `ca`'s loopback certificate; the
    /// URLs it hands out (its bid URL, its notice URLs) are `https://`. Default plain HTTP/1.1.
    pub fn tls(mut self, ca: TestCa) -> Self {
        self.tls = Some(ca);
        self
    }

    /// Validates the configuration, binds and starts serving on the current tokio runtime.
    pub async fn start(self) -> Result<MockDspHandle, Error> {
        let invalid = |reason: String| Error::InvalidConfig {
            name: self.name.clone(),
            reason,
        };
        self.price.validate().map_err(invalid)?;
        self.latency.validate().map_err(invalid)?;
        if !(0.0..=1.0).contains(&self.bid_probability) {
            return Err(invalid(format!(
                "bid probability must be in [0, 1], got {}",
                self.bid_probability
            )));
        }
        check_behavior(&self.behavior).map_err(invalid)?;
        if self.trickle_every.is_zero() {
            return Err(invalid("trickle interval must be above zero".to_owned()));
        }

        let listener = TcpListener::bind(&self.bind)
            .await
            .map_err(|source| Error::Bind {
                name: self.name.clone(),
                addr: self.bind.clone(),
                source,
            })?;
        let addr = listener.local_addr().map_err(|source| Error::Bind {
            name: self.name.clone(),
            addr: self.bind.clone(),
            source,
        })?;
        let acceptor = self.tls.as_ref().map(TestCa::acceptor).transpose()?;
        let base = base_url_with(addr, if acceptor.is_some() { "https" } else { "http" });
        let name = self.name;
        let settings = Settings {
            behavior: std::sync::RwLock::new(self.behavior),
            price: self.price,
            bid_probability: self.bid_probability,
            latency: self.latency,
            seat: self.seat.unwrap_or_else(|| name.clone()),
            cids: self.cids.unwrap_or_else(|| default_cids(&name)),
            adomains: self
                .adomains
                .unwrap_or_else(|| vec![format!("{name}.example")]),
            crid: self.crid.unwrap_or_else(|| format!("{name}-creative")),
            deal: self.deal,
            deals_from_request: self.deals_from_request,
            adm: self.adm.unwrap_or_else(|| default_adm(&name)),
            currency: self.currency,
            notice_urls: self.notices.then(|| NoticeUrls::for_base(&base)),
            trickle_every: self.trickle_every,
            max_body_bytes: MAX_BODY_BYTES,
            name,
        };
        Ok(MockDspHandle::spawn(
            listener,
            addr,
            format!("{base}/bid"),
            settings,
            self.record,
            acceptor,
        ))
    }
}

fn default_cids(name: &str) -> Vec<String> {
    vec![format!("{name}-campaign")]
}

fn default_adm(name: &str) -> String {
    // The name lands in HTML: keep only characters that cannot break out of the attribute.
    let safe: String = name
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        .collect();
    format!(
        "<div class=\"mock-ad\" data-dsp=\"{safe}\" data-price=\"${{AUCTION_PRICE}}\">\
         <a href=\"https://{safe}.example/\">{safe} ad</a></div>"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_adm_carries_the_price_macro_and_no_markup_from_the_name() {
        let adm = default_adm("al\"pha<script>");
        assert!(adm.contains("${AUCTION_PRICE}"));
        assert!(adm.contains("data-dsp=\"alphascript\""));
        assert!(!adm.contains("<script>"));
    }
}
