//! The bodies of one auction: at most one per distinct privacy decision (plain, restricted,
//! COPPA), each prepared the first time a DSP needs it and shared by every DSP that got the
//! same decision, all carrying the exchange's supply-chain node when one is configured.

use std::sync::OnceLock;

use bytes::Bytes;
use openrtb::forward::{Document, ImpFloor, Node, Outbound, Scrub, Splice};
use openrtb::request::BidRequest;

use super::Decision;
use crate::config::SupplyChainConfig;
use crate::fanout::Dsp;

/// The bodies of one auction.
pub struct Bodies<'a> {
    body: &'a [u8],
    req: &'a BidRequest<'a>,
    at: u8,
    cur: &'a str,
    decision: Decision,
    /// The top-level members, read only when a splice is needed.
    doc: OnceLock<Option<Document<'a>>>,
    /// The supply-chain splice every body carries; empty without `[supply_chain]`.
    base: Splice,
    plain: OnceLock<Outbound>,
    restricted: OnceLock<Outbound>,
    coppa: OnceLock<Outbound>,
}

impl<'a> Bodies<'a> {
    /// Decides the auction's privacy rules and prepares the supply-chain splice. No body is
    /// built yet.
    pub fn new(
        body: &'a [u8],
        req: &'a BidRequest<'a>,
        at: u8,
        cur: &'a str,
        supply_chain: Option<&SupplyChainConfig>,
    ) -> Bodies<'a> {
        let mut bodies = Bodies {
            body,
            req,
            at,
            cur,
            decision: Decision::of(req),
            doc: OnceLock::new(),
            base: Splice::default(),
            plain: OnceLock::new(),
            restricted: OnceLock::new(),
            coppa: OnceLock::new(),
        };
        if let Some(sc) = supply_chain {
            let node = Node {
                asi: &sc.asi,
                sid: crate::publishers::claimed(req).1,
                rid: &req.id,
            };
            bodies.base = bodies.doc().map(|d| d.schain(node)).unwrap_or_default();
        }
        bodies
    }

    /// Every body tells DSPs these imps' effective floors (in the auction currency), from
    /// `crate::pricing::floors`. Call before the first body is built.
    pub fn set_floors(&mut self, floors: &[ImpFloor]) {
        if floors.is_empty() {
            return;
        }
        let splice = self.doc().map(|d| d.floors(floors, self.cur));
        if let Some(splice) = splice {
            self.base = splice.and(&self.base);
        }
    }

    fn doc(&self) -> Option<&Document<'a>> {
        self.doc.get_or_init(|| Document::read(self.body)).as_ref()
    }

    /// The body for `scrub` (`None`: unscrubbed), prepared on first use.
    pub fn outbound(&self, scrub: Option<Scrub>) -> &Outbound {
        let (cell, level) = match scrub {
            None => (&self.plain, None),
            Some(Scrub::Restricted) => (&self.restricted, Some(Scrub::Restricted)),
            Some(Scrub::Coppa) => (&self.coppa, Some(Scrub::Coppa)),
        };
        cell.get_or_init(|| {
            let splice = match level {
                None => None,
                // A body that cannot be read for scrubbing would leak: parsing refuses such
                // bodies, so this only guards against a caller bug, and sends nothing useful.
                Some(level) => Some(match self.doc() {
                    Some(doc) => doc.scrub(level).and(&self.base),
                    None => return Outbound::new(b"{}", self.req, self.at, self.cur),
                }),
            };
            match splice {
                Some(splice) => {
                    Outbound::with_splice(self.body, self.req, self.at, self.cur, &splice)
                }
                None if self.base.is_empty() => {
                    Outbound::new(self.body, self.req, self.at, self.cur)
                }
                None => Outbound::with_splice(self.body, self.req, self.at, self.cur, &self.base),
            }
        })
    }

    /// What `ext.debug.scrubbing` shows: the supply-chain node appended, and per DSP the
    /// scrub level and the rule that set it (`null` for a DSP that sees the request as sent).
    pub fn debug(&self, dsps: &[std::sync::Arc<Dsp>]) -> serde_json::Value {
        let per_dsp: Vec<_> = dsps
            .iter()
            .map(|dsp| {
                let (scrub, rule) = match self.decision.for_dsp(dsp.gvl_id) {
                    Some((Scrub::Restricted, rule)) => (Some("restricted"), Some(rule.label())),
                    Some((Scrub::Coppa, rule)) => (Some("coppa"), Some(rule.label())),
                    None => (None, None),
                };
                serde_json::json!({ "dsp": &*dsp.name, "scrub": scrub, "rule": rule })
            })
            .collect();
        serde_json::json!({ "schain_node": !self.base.is_empty(), "dsps": per_dsp })
    }

    /// The body `dsp` receives with `tmax_ms`; a scrubbed one is counted on the DSP by rule.
    pub fn render(&self, dsp: &Dsp, tmax_ms: u32) -> Bytes {
        let scrub = self.decision.for_dsp(dsp.gvl_id);
        if let Some((_, rule)) = scrub {
            dsp.metrics.scrubbed(rule);
        }
        let outbound = self.outbound(scrub.map(|(level, _)| level));
        let mut out = Vec::with_capacity(outbound.len_hint() + 8);
        outbound.render(tmax_ms, &mut out);
        Bytes::from(out)
    }
}
