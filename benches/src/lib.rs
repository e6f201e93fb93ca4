//! Fixtures shared by the criterion benchmarks: the IAB example requests and synthetic DSP
//! answers and auctions of a chosen size.
//!
//! This crate owns no production code; it must never be a dependency of anything but the
//! benchmarks themselves.

use std::borrow::Cow;

/// The IAB OpenRTB 2.6 "Simple Banner" example (604 bytes).
pub const IAB_BANNER: &[u8] = include_bytes!("../data/iab26_banner.json");
/// The IAB OpenRTB 2.6 "Mobile" example, an app banner (1401 bytes).
pub const IAB_APP_BANNER: &[u8] = include_bytes!("../data/iab26_app_banner.json");
/// The IAB OpenRTB 2.6 "Video" example (2549 bytes).
pub const IAB_VIDEO: &[u8] = include_bytes!("../data/iab26_video.json");

/// A DSP answer with `bids` bids on imp "1" of request `id`, each with markup and notice
/// URLs full of macros, as real DSPs send them.
pub fn dsp_answer(id: &str, bids: usize) -> Vec<u8> {
    let bid: Vec<serde_json::Value> = (0..bids)
        .map(|i| {
            serde_json::json!({
                "id": format!("bid-{i}"),
                "impid": "1",
                "price": 1.0 + i as f64 * 0.137,
                "adid": format!("ad-{i}"),
                "cid": "cmp-1",
                "crid": format!("cr-{i}"),
                "adomain": ["advertiser.example"],
                "cat": ["IAB3-1"],
                "w": 300, "h": 250,
                "nurl": "http://dsp.example/win?a=${AUCTION_ID}&b=${AUCTION_BID_ID}&p=${AUCTION_PRICE}",
                "burl": "http://dsp.example/bill?a=${AUCTION_ID}&p=${AUCTION_PRICE}",
                "lurl": "http://dsp.example/loss?a=${AUCTION_ID}&l=${AUCTION_LOSS}&m=${AUCTION_MIN_TO_WIN}",
                "adm": "<div class=\"ad\"><a href=\"http://dsp.example/click?a=${AUCTION_ID}\"><img src=\"http://cdn.example/cr.png\" width=\"300\" height=\"250\"></a><img src=\"http://dsp.example/imp?p=${AUCTION_PRICE}\" width=\"1\" height=\"1\"></div>",
                "ext": {"dsp": {"model": "v7", "score": 0.93}}
            })
        })
        .collect();
    serde_json::to_vec(&serde_json::json!({
        "id": id,
        "bidid": "resp-1",
        "cur": "USD",
        "seatbid": [{"seat": "seat-1", "bid": bid}]
    }))
    .unwrap_or_default()
}

/// Owned strings the synthetic auctions borrow from.
pub struct AuctionFixture {
    pub imp_ids: Vec<String>,
    pub seats: Vec<String>,
    pub adomain: Vec<Cow<'static, str>>,
    pub cat: Vec<Cow<'static, str>>,
    pub badv: Vec<Cow<'static, str>>,
    pub bcat: Vec<Cow<'static, str>>,
}

impl AuctionFixture {
    pub fn new(imps: usize, bidders: usize) -> Self {
        Self {
            imp_ids: (0..imps).map(|i| format!("imp-{i}")).collect(),
            seats: (0..bidders).map(|i| format!("seat-{i}")).collect(),
            adomain: vec![Cow::Borrowed("advertiser.example")],
            cat: vec![Cow::Borrowed("IAB3-1")],
            badv: vec![
                Cow::Borrowed("blocked.example"),
                Cow::Borrowed("other.example"),
            ],
            bcat: vec![Cow::Borrowed("IAB25"), Cow::Borrowed("IAB26")],
        }
    }

    /// The auction's request: every imp with a 0.50 CPM floor, the usual block lists.
    pub fn request(&self) -> auction::Request<'_> {
        auction::Request {
            at: auction::AuctionType::SecondPrice,
            imps: self
                .imp_ids
                .iter()
                .map(|id| auction::Imp {
                    id,
                    floor: money::CpmMicros::new(500_000),
                    deals: Vec::new(),
                    private_auction: false,
                    battr: &[],
                })
                .collect(),
            bcat: &self.bcat,
            badv: &self.badv,
            bapp: &[],
            wseat: &[],
            bseat: &[],
            tie_seed: 0x9e37_79b9_7f4a_7c15,
        }
    }

    /// `per_imp` bids on every imp, prices spread so that every auction has a clear order.
    pub fn bids(&self, per_imp: usize) -> Vec<auction::Candidate<'_, ()>> {
        let mut out = Vec::with_capacity(self.imp_ids.len() * per_imp);
        for imp in 0..self.imp_ids.len() {
            for b in 0..per_imp {
                out.push(auction::Candidate {
                    imp,
                    bidder: b as u32,
                    seat: &self.seats[b % self.seats.len()],
                    price: money::CpmMicros::new(600_000 + ((b as u64 * 7_919) % 50) * 37_000),
                    pay_cap: None,
                    deal_id: None,
                    adomain: &self.adomain,
                    cat: &self.cat,
                    attr: &[],
                    bundle: None,
                    campaign: None,
                });
            }
        }
        out
    }
}
