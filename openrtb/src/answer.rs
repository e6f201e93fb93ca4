//! Writing the publisher's BidResponse: one `seatbid` per winning seat, each winning bid
//! re-emitted from the DSP's own bytes with the exchange's edits.

use crate::json;
use crate::response::{Bid, BidEdits};

/// One winning bid as the answer carries it.
pub struct Winning<'w> {
    /// Groups bids into seatbids together with `seat`: the DSP's index in the exchange's
    /// configuration, so two DSPs naming the same seat stay apart.
    pub bidder: u32,
    /// The seat the bid speaks for.
    pub seat: &'w str,
    /// The bid as the DSP sent it.
    pub bid: &'w Bid<'w>,
    /// What the exchange changes in it (price, markup, URLs).
    pub edits: BidEdits<'w>,
}

/// Writes `{"id", "seatbid": [...], "cur"}` for `winners` (at least one), grouped by bidder
/// and seat in that order. `None` when nothing won: the caller answers 204.
pub fn write(id: &str, currency: &str, winners: &[Winning<'_>]) -> Option<Vec<u8>> {
    if winners.is_empty() {
        return None;
    }
    Some(write_answer(id, currency, winners, None))
}

/// As [`write`], with `ext` (the bytes of one JSON object, e.g. `{"debug":{...}}`, written
/// as given) as the answer's `ext`, and an answer even when nothing won: `"seatbid":[]`.
/// For answers that must say something about an auction that sold nothing (debugging).
pub fn write_with_ext(id: &str, currency: &str, winners: &[Winning<'_>], ext: &[u8]) -> Vec<u8> {
    write_answer(id, currency, winners, Some(ext))
}

fn write_answer(id: &str, currency: &str, winners: &[Winning<'_>], ext: Option<&[u8]>) -> Vec<u8> {
    let mut order: Vec<&Winning<'_>> = winners.iter().collect();
    order.sort_by(|a, b| (a.bidder, a.seat).cmp(&(b.bidder, b.seat)));

    let markup: usize = winners
        .iter()
        .map(|w| w.bid.raw().len() + w.edits.adm.map_or(0, str::len) + 512)
        .sum();
    let extra = ext.map_or(0, |e| e.len() + 8);
    let mut out = Vec::with_capacity(64 + id.len() + markup + extra);
    out.extend_from_slice(b"{\"id\":");
    json::write_str(&mut out, id);
    out.extend_from_slice(b",\"seatbid\":[");
    let mut current: Option<(u32, &str)> = None;
    for w in order {
        let key = (w.bidder, w.seat);
        if current != Some(key) {
            if current.is_some() {
                out.extend_from_slice(b"]},");
            }
            out.extend_from_slice(b"{\"seat\":");
            json::write_str(&mut out, w.seat);
            out.extend_from_slice(b",\"bid\":[");
            current = Some(key);
        } else {
            out.push(b',');
        }
        w.bid.rewrite(&w.edits, &mut out);
    }
    if current.is_some() {
        out.extend_from_slice(b"]}");
    }
    out.extend_from_slice(b"],\"cur\":");
    json::write_str(&mut out, currency);
    if let Some(ext) = ext {
        out.extend_from_slice(b",\"ext\":");
        out.extend_from_slice(ext);
    }
    out.push(b'}');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::response::{read_answer, AcceptedBid, Answer, Expect};

    const EXPECT: Expect<'static> = Expect {
        request_id: "req-1",
        imp_ids: &["imp-1", "imp-2"],
        currency: "USD",
        rated: &[],
    };

    fn accepted(body: &str) -> Vec<AcceptedBid<'_>> {
        match read_answer(200, body.as_bytes(), &EXPECT) {
            Answer::Bids { accepted, .. } => accepted,
            other => panic!("expected bids, got {other:?}"),
        }
    }

    fn edits(price_micros: u64) -> BidEdits<'static> {
        BidEdits {
            price: money::CpmMicros::new(price_micros),
            adm: None,
            nurl: None,
            burl: Some("https://x.example/imp"),
            lurl: None,
            drop_nurl: false,
        }
    }

    #[test]
    fn nothing_won_is_no_answer() {
        assert_eq!(write("req-1", "USD", &[]), None);
    }

    #[test]
    fn an_ext_is_written_as_given_even_when_nothing_won() {
        let out = write_with_ext("req-1", "USD", &[], br#"{"debug":{"x":[1]}}"#);
        assert_eq!(
            String::from_utf8(out).expect("UTF-8"),
            r#"{"id":"req-1","seatbid":[],"cur":"USD","ext":{"debug":{"x":[1]}}}"#
        );
        let a = accepted(
            r#"{"id":"req-1","seatbid":[{"seat":"s","bid":[{"id":"x","impid":"imp-1","price":2,"adm":"<b>"}]}]}"#,
        );
        let winners = [Winning {
            bidder: 0,
            seat: "s",
            bid: &a[0].bid,
            edits: edits(1_000_000),
        }];
        let out = write_with_ext("req-1", "USD", &winners, b"{}");
        let got: serde_json::Value = serde_json::from_slice(&out).expect("valid JSON");
        assert_eq!(got["ext"], serde_json::json!({}));
        assert_eq!(got["seatbid"][0]["bid"][0]["id"], "x");
        let plain = write("req-1", "USD", &winners).expect("an answer");
        let mut without: serde_json::Value = got.clone();
        without.as_object_mut().expect("an object").remove("ext");
        assert_eq!(
            serde_json::from_slice::<serde_json::Value>(&plain).expect("valid JSON"),
            without
        );
    }

    #[test]
    fn winners_are_grouped_by_bidder_then_seat() {
        let a = r#"{"id":"req-1","seatbid":[{"seat":"s1","bid":[{"id":"a1","impid":"imp-1","price":2,"adm":"<b>"}]},{"seat":"s2","bid":[{"id":"a2","impid":"imp-2","price":1.5,"adm":"<i>"}]}]}"#;
        let b = r#"{"id":"req-1","seatbid":[{"seat":"s1","bid":[{"id":"b1","impid":"imp-2","price":3,"adm":"<u>","ext":{"k":1}}]}]}"#;
        let (a, b) = (accepted(a), accepted(b));
        // Given out of order: bidder 1's bid first, bidder 0's seats interleaved.
        let winners = [
            Winning {
                bidder: 1,
                seat: "s1",
                bid: &b[0].bid,
                edits: edits(2_010_000),
            },
            Winning {
                bidder: 0,
                seat: "s2",
                bid: &a[1].bid,
                edits: edits(1_000_000),
            },
            Winning {
                bidder: 0,
                seat: "s1",
                bid: &a[0].bid,
                edits: edits(1_500_000),
            },
        ];
        let out = write("req-1", "EUR", &winners).expect("an answer");
        let got: serde_json::Value = serde_json::from_slice(&out).expect("valid JSON");
        let want = serde_json::json!({
            "id": "req-1",
            "seatbid": [
                {"seat": "s1", "bid": [{"id": "a1", "impid": "imp-1", "price": 1.5, "adm": "<b>", "burl": "https://x.example/imp"}]},
                {"seat": "s2", "bid": [{"id": "a2", "impid": "imp-2", "price": 1, "adm": "<i>", "burl": "https://x.example/imp"}]},
                {"seat": "s1", "bid": [{"id": "b1", "impid": "imp-2", "price": 2.01, "adm": "<u>", "ext": {"k": 1}, "burl": "https://x.example/imp"}]},
            ],
            "cur": "EUR",
        });
        assert_eq!(got, want);
    }

    #[test]
    fn two_bids_of_one_seat_share_its_seatbid() {
        let a = r#"{"id":"req-1","seatbid":[{"seat":"s","bid":[{"id":"x","impid":"imp-1","price":2,"adm":"1"},{"id":"y","impid":"imp-2","price":2,"adm":"2"}]}]}"#;
        let a = accepted(a);
        let winners = [
            Winning {
                bidder: 0,
                seat: "s",
                bid: &a[0].bid,
                edits: edits(1_000_000),
            },
            Winning {
                bidder: 0,
                seat: "s",
                bid: &a[1].bid,
                edits: edits(2_000_000),
            },
        ];
        let out = write("req-1", "USD", &winners).expect("an answer");
        let got: serde_json::Value = serde_json::from_slice(&out).expect("valid JSON");
        assert_eq!(got["seatbid"].as_array().map(Vec::len), Some(1));
        let ids: Vec<&str> = got["seatbid"][0]["bid"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|b| b["id"].as_str())
            .collect();
        assert_eq!(ids, ["x", "y"]);
    }
}
