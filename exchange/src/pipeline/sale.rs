//! What is on sale, as the auction sees it: each imp's floors (effective, from
//! `crate::pricing`), deals and blocked creative attributes, borrowed from the parsed request.

use std::borrow::Cow;

use auction::AuctionType;
use money::CpmMicros;
use openrtb::request::{BidRequest, Imp};

use crate::pricing::rates::RateTable;
use crate::pricing::{convert_floor, Pricing, UNREACHABLE};

/// The blocked creative attributes of every imp, in imp order: the union over its media
/// objects, borrowed when only one of them blocks anything (the usual case).
pub(crate) fn blocked_attributes<'r>(req: &'r BidRequest<'r>) -> Vec<Cow<'r, [u32]>> {
    req.imp.iter().map(imp_battr).collect()
}

fn imp_battr<'r>(imp: &'r Imp<'r>) -> Cow<'r, [u32]> {
    let mut lists = [
        imp.banner.as_ref().map(|b| &b.battr[..]),
        imp.video.as_ref().map(|v| &v.battr[..]),
        imp.audio.as_ref().map(|a| &a.battr[..]),
        imp.native.as_ref().map(|n| &n.battr[..]),
    ]
    .into_iter()
    .flatten()
    .filter(|l| !l.is_empty());
    let Some(first) = lists.next() else {
        return Cow::Borrowed(&[]);
    };
    let Some(second) = lists.next() else {
        return Cow::Borrowed(first);
    };
    let mut all: Vec<u32> = first
        .iter()
        .chain(second)
        .chain(lists.flatten())
        .copied()
        .collect();
    all.sort_unstable();
    all.dedup();
    Cow::Owned(all)
}

/// The prices of a sale: each imp's effective floor (`crate::pricing::floors`) and what deal
/// floors are converted with.
pub(crate) struct Prices<'p> {
    pub floors: &'p [CpmMicros],
    pub pricing: &'p Pricing,
    pub table: &'p RateTable,
}

/// The auction's view of `req`; `battrs` comes from [`blocked_attributes`]. A deal's floor
/// is converted as an imp's is (rounding up; no rate: unsellable), and not raised by rules:
/// a deal's price is agreed.
pub(crate) fn request<'r>(
    req: &'r BidRequest<'r>,
    battrs: &'r [Cow<'r, [u32]>],
    at: AuctionType,
    prices: &Prices<'_>,
    tie_seed: u64,
) -> auction::Request<'r> {
    let imps = req
        .imp
        .iter()
        .zip(battrs)
        .enumerate()
        .map(|(i, (imp, battr))| {
            let imp_floor_cur = imp.bidfloorcur.as_deref();
            let deals = imp
                .pmp
                .as_ref()
                .map(|pmp| {
                    pmp.deals
                        .iter()
                        .map(|d| auction::Deal {
                            id: &d.id,
                            floor: convert_floor(
                                prices.pricing,
                                d.bidfloor,
                                d.bidfloorcur.as_deref().or(imp_floor_cur),
                                prices.table,
                            ),
                            at: d.at.and_then(AuctionType::from_openrtb),
                            wseat: &d.wseat,
                        })
                        .collect()
                })
                .unwrap_or_default();
            auction::Imp {
                id: &imp.id,
                floor: prices.floors.get(i).copied().unwrap_or(UNREACHABLE),
                deals,
                private_auction: imp.pmp.as_ref().and_then(|p| p.private_auction) == Some(1),
                battr,
            }
        })
        .collect();
    auction::Request {
        at,
        imps,
        bcat: &req.bcat,
        badv: &req.badv,
        bapp: &req.bapp,
        wseat: &req.wseat,
        bseat: &req.bseat,
        tie_seed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `(imp JSON, blocked attributes, borrowed from the request)`, one imp per case.
    fn check(cases: &[(&str, &[u32], bool)]) {
        for &(imp, want, borrowed) in cases {
            let body = format!(r#"{{"id":"r","imp":[{imp}]}}"#);
            let req = openrtb::request::parse(body.as_bytes()).expect("a valid request");
            let battrs = blocked_attributes(&req);
            assert_eq!(&battrs[0][..], want, "{imp}");
            assert_eq!(matches!(battrs[0], Cow::Borrowed(_)), borrowed, "{imp}");
        }
    }

    #[test]
    fn blocked_attributes_are_the_union_over_media_objects() {
        check(&[
            (r#"{"id":"1","banner":{"w":1,"h":1}}"#, &[], true),
            (
                r#"{"id":"1","banner":{"w":1,"h":1,"battr":[3,1]}}"#,
                &[3, 1],
                true,
            ),
            (
                r#"{"id":"1","banner":{"w":1,"h":1,"battr":[]},"video":{"mimes":["v"],"battr":[8]}}"#,
                &[8],
                true,
            ),
            (
                r#"{"id":"1","banner":{"w":1,"h":1,"battr":[3,1]},"video":{"mimes":["v"],"battr":[1,8]}}"#,
                &[1, 3, 8],
                false,
            ),
        ]);
    }
}
