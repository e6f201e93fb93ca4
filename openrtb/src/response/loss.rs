//! Why a DSP's answer, or one bid in it, was not taken: the outcomes' metric labels and
//! the OpenRTB loss reason codes they map to.

use std::fmt;

/// How a DSP said "no bid".
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NoBidKind {
    /// HTTP 204, the spec's preferred no-bid.
    NoContent,
    /// HTTP 200 with an empty (or all-whitespace) body.
    EmptyBody,
    /// A JSON answer without a single bid (`{}`, no or empty `seatbid`) and no reason.
    NoBids,
    /// A JSON answer without bids that gives a no-bid reason code (`nbr`).
    Declined { nbr: u32 },
}

impl NoBidKind {
    /// A stable snake_case label for metrics.
    pub fn as_str(&self) -> &'static str {
        match self {
            NoBidKind::NoContent => "no_content",
            NoBidKind::EmptyBody => "empty_body",
            NoBidKind::NoBids => "no_bids",
            NoBidKind::Declined { .. } => "declined",
        }
    }
}

/// Why a whole answer was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AnswerRejection {
    /// An HTTP status other than 200 and 204.
    BadStatus(u16),
    /// Not JSON: a syntax error, truncation, trailing bytes, invalid UTF-8.
    MalformedJson,
    /// JSON, but not an object (`null`, a string, an array...).
    NotAnObject,
    /// A JSON object whose top-level or `seatbid` fields have the wrong types
    /// (`"seatbid": {}`, a `seatbid` entry that is not an object, `"cur": 5`...).
    InvalidResponse,
    /// `id` missing or not the id of the request the DSP received.
    WrongId,
    /// `cur` (absent = USD) is a real currency, but neither the auction currency nor one the
    /// exchange has a rate for.
    WrongCurrency,
    /// `cur` is not an ISO-4217 code at all.
    UnknownCurrency,
}

impl AnswerRejection {
    /// A stable snake_case label for metrics.
    pub fn as_str(&self) -> &'static str {
        match self {
            AnswerRejection::BadStatus(_) => "bad_status",
            AnswerRejection::MalformedJson => "malformed_json",
            AnswerRejection::NotAnObject => "not_an_object",
            AnswerRejection::InvalidResponse => "invalid_response",
            AnswerRejection::WrongId => "wrong_id",
            AnswerRejection::WrongCurrency => "wrong_currency",
            AnswerRejection::UnknownCurrency => "unknown_currency",
        }
    }

    /// The OpenRTB loss reason code that fits: 5 (invalid auction ID) for a wrong id,
    /// 3 (invalid bid response) for everything else.
    pub fn loss_code(&self) -> u16 {
        match self {
            AnswerRejection::WrongId => LOSS_INVALID_AUCTION_ID,
            _ => LOSS_INVALID_BID_RESPONSE,
        }
    }
}

/// Why one bid was refused while its siblings were still considered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BidRejection {
    /// Not a JSON object, or a field has the wrong type (`"w": "300"`, `"id": 7`,
    /// `"mtype": "video"`) or appears twice.
    Malformed,
    /// `id` absent or empty.
    MissingId,
    /// `impid` absent or empty.
    MissingImpId,
    /// `impid` names no imp of the request.
    UnknownImp,
    /// `price` absent or `null`.
    MissingPrice,
    /// `price` not a number, not positive, under one micro, or above
    /// [`money::MAX_CPM`].
    BadPrice,
    /// Neither `adm` nor `nurl` (non-empty): nothing to serve.
    NoMarkup,
    /// `mtype` outside 1..=4 (banner, video, audio, native).
    BadMtype,
}

impl BidRejection {
    /// A stable snake_case label for metrics.
    pub fn as_str(&self) -> &'static str {
        match self {
            BidRejection::Malformed => "malformed_bid",
            BidRejection::MissingId => "missing_bid_id",
            BidRejection::MissingImpId => "missing_imp_id",
            BidRejection::UnknownImp => "unknown_imp",
            BidRejection::MissingPrice => "missing_price",
            BidRejection::BadPrice => "bad_price",
            BidRejection::NoMarkup => "no_markup",
            BidRejection::BadMtype => "bad_mtype",
        }
    }

    /// The OpenRTB 2.6 loss reason code for `${AUCTION_LOSS}` in this bid's `lurl`:
    /// 7 missing markup, 9 missing bid price, 3 invalid bid response otherwise.
    pub fn loss_code(&self) -> u16 {
        match self {
            BidRejection::NoMarkup => LOSS_MISSING_MARKUP,
            BidRejection::MissingPrice => LOSS_MISSING_BID_PRICE,
            _ => LOSS_INVALID_BID_RESPONSE,
        }
    }
}

impl fmt::Display for NoBidKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Display for AnswerRejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Display for BidRejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

// OpenRTB 2.6 loss reason codes (AdCOM list), the ones a broken answer maps to.
const LOSS_INVALID_BID_RESPONSE: u16 = 3;
const LOSS_INVALID_AUCTION_ID: u16 = 5;
const LOSS_MISSING_MARKUP: u16 = 7;
const LOSS_MISSING_BID_PRICE: u16 = 9;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejection_labels_and_loss_codes() {
        assert_eq!(BidRejection::NoMarkup.loss_code(), 7);
        assert_eq!(BidRejection::MissingPrice.loss_code(), 9);
        assert_eq!(BidRejection::UnknownImp.loss_code(), 3);
        assert_eq!(AnswerRejection::WrongId.loss_code(), 5);
        assert_eq!(AnswerRejection::MalformedJson.loss_code(), 3);
        assert_eq!(AnswerRejection::BadStatus(500).as_str(), "bad_status");
        assert_eq!(NoBidKind::Declined { nbr: 1 }.to_string(), "declined");
        let labels = [
            BidRejection::Malformed,
            BidRejection::MissingId,
            BidRejection::MissingImpId,
            BidRejection::UnknownImp,
            BidRejection::MissingPrice,
            BidRejection::BadPrice,
            BidRejection::NoMarkup,
            BidRejection::BadMtype,
        ]
        .map(|r| r.as_str());
        let mut unique = labels.to_vec();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(unique.len(), labels.len());
        assert!(labels
            .iter()
            .all(|l| l.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')));
    }
}
