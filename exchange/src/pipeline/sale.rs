//! What is on sale, as the auction sees it: each imp's floors, deals and blocked creative
//! attributes, borrowed from the parsed request.

use std::borrow::Cow;

use auction::AuctionType;
use money::CpmMicros;
use openrtb::request::{BidRequest, Imp};

/// A floor no bid can meet.
const UNREACHABLE: CpmMicros = CpmMicros::new(u64::MAX);

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

/// A floor in a currency other than the auction's cannot be compared with bids until
/// currency conversion exists, so such an imp is not sold below an unknown floor: its floor
/// becomes unreachable and every bid on it loses with "below floor".
fn floor(value: Option<f64>, floor_currency: Option<&str>, currency: &str) -> CpmMicros {
    let Some(floor) = value.filter(|f| *f > 0.0) else {
        return CpmMicros::ZERO;
    };
    if floor_currency.is_some_and(|c| !c.eq_ignore_ascii_case(currency)) {
        return UNREACHABLE;
    }
    CpmMicros::from_cpm(floor).unwrap_or(UNREACHABLE)
}

/// The auction's view of `req`; `battrs` comes from [`blocked_attributes`].
pub(crate) fn request<'r>(
    req: &'r BidRequest<'r>,
    battrs: &'r [Cow<'r, [u32]>],
    at: AuctionType,
    currency: &str,
    tie_seed: u64,
) -> auction::Request<'r> {
    let imps = req
        .imp
        .iter()
        .zip(battrs)
        .map(|(imp, battr)| {
            let imp_floor_cur = imp.bidfloorcur.as_deref();
            let deals = imp
                .pmp
                .as_ref()
                .map(|pmp| {
                    pmp.deals
                        .iter()
                        .map(|d| auction::Deal {
                            id: &d.id,
                            floor: floor(
                                d.bidfloor,
                                d.bidfloorcur.as_deref().or(imp_floor_cur),
                                currency,
                            ),
                            at: d.at.and_then(AuctionType::from_openrtb),
                            wseat: &d.wseat,
                        })
                        .collect()
                })
                .unwrap_or_default();
            auction::Imp {
                id: &imp.id,
                floor: floor(
                    imp.bidfloor.as_ref().and_then(|f| f.value),
                    imp_floor_cur,
                    currency,
                ),
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

    #[test]
    fn a_floor_in_another_currency_cannot_be_met() {
        let cases: &[(Option<f64>, Option<&str>, u64)] = &[
            (None, None, 0),
            (Some(0.0), None, 0),
            (Some(1.5), None, 1_500_000),
            (Some(1.5), Some("usd"), 1_500_000),
            (Some(1.5), Some("EUR"), u64::MAX),
            (Some(f64::INFINITY), None, u64::MAX),
        ];
        for &(value, cur, want) in cases {
            assert_eq!(floor(value, cur, "USD").get(), want, "{value:?} {cur:?}");
        }
    }
}
