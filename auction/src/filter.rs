//! Eligibility: the publisher's blocks, seats, deals, floors and budgets a bid must pass before
//! it competes, each failure mapped to its loss reason.

use std::borrow::Cow;

use crate::scratch::InlineVec;
use money::CpmMicros;

use crate::{Candidate, Imp, Ledger, LossReason, Request};

/// `badv` entries whose bare hosts stay on the stack; longer lists spill to the heap once per
/// auction.
const INLINE_BADV: usize = 8;

/// Where an eligible bid competes within its imp.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Class {
    Open,
    /// Index into the imp's `deals`.
    Deal(usize),
}

/// The request's block lists reduced once per auction rather than once per bid: `badv` as bare
/// hosts, without the entries that can never block anything.
pub(crate) struct Blocks<'a> {
    badv: InlineVec<&'a [u8], INLINE_BADV>,
}

impl<'a> Blocks<'a> {
    #[inline]
    pub(crate) fn new(req: &Request<'a>) -> Self {
        let mut badv = InlineVec::new(&[][..]);
        for blocked in req.badv {
            let host = bare_host(blocked);
            if !host.is_empty() {
                badv.push(host);
            }
        }
        Self { badv }
    }
}

/// Checks one bid in the documented order; the first failed check is the loss reason.
pub(crate) fn eligibility<L: Ledger>(
    req: &Request<'_>,
    blocks: &Blocks<'_>,
    bid: &Candidate<'_, L::Campaign>,
    ledger: &L,
) -> Result<Class, LossReason> {
    let Some(imp) = req.imps.get(bid.imp) else {
        return Err(LossReason::InternalError);
    };
    if contains_exact(req.bseat, bid.seat)
        || (!req.wseat.is_empty() && !contains_exact(req.wseat, bid.seat))
    {
        return Err(LossReason::BuyerSeatBlocked);
    }
    let class = classify(imp, bid.deal_id, bid.seat)?;
    let badv = blocks.badv.as_slice();
    if !badv.is_empty()
        && bid.adomain.iter().any(|adv| {
            let adv = bare_host(adv);
            badv.iter().any(|blocked| host_blocked(blocked, adv))
        })
    {
        return Err(LossReason::AdvertiserExclusions);
    }
    if let Some(bundle) = bid.bundle.filter(|b| !b.is_empty()) {
        if req.bapp.iter().any(|b| b.eq_ignore_ascii_case(bundle)) {
            return Err(LossReason::AppStoreIdExclusions);
        }
    }
    if bid.cat.iter().any(|cat| {
        req.bcat
            .iter()
            .any(|blocked| category_blocked(blocked, cat))
    }) {
        return Err(LossReason::CategoryExclusions);
    }
    if bid.attr.iter().any(|a| imp.battr.contains(a)) {
        return Err(LossReason::CreativeAttributeExclusions);
    }
    // An adjusted bid must also be able to pay the floor: its cap is what it pays at most.
    let payable = bid.pay_cap.map_or(bid.price, |cap| cap.min(bid.price));
    match class {
        Class::Open if bid.price < imp.floor || payable < imp.floor => {
            return Err(LossReason::BelowAuctionFloor)
        }
        Class::Deal(k)
            if bid.price < floor_of(imp, Class::Deal(k))
                || payable < floor_of(imp, Class::Deal(k)) =>
        {
            return Err(LossReason::BelowDealFloor)
        }
        _ => {}
    }
    if let Some(campaign) = &bid.campaign {
        if !ledger.is_active(campaign) {
            return Err(LossReason::CampaignInactive);
        }
        // The bid is the most the winner can be charged, so a campaign that covers it can pay
        // whatever the clearing price turns out to be.
        if !ledger.can_cover(campaign, payable.cost_of_one()) {
            return Err(LossReason::CampaignBudgetExhausted);
        }
    }
    Ok(class)
}

/// The floor a bid of `class` must meet on `imp`: a deal's floor replaces the imp floor.
pub(crate) fn floor_of(imp: &Imp<'_>, class: Class) -> CpmMicros {
    match class {
        Class::Open => imp.floor,
        Class::Deal(k) => imp.deals.get(k).map_or(imp.floor, |d| d.floor),
    }
}

/// Resolves the bid's deal. A deal bid from a seat the deal does not allow is blocked rather
/// than demoted to the open market: the DSP priced it under the deal's terms.
#[inline]
fn classify(imp: &Imp<'_>, deal_id: Option<&str>, seat: &str) -> Result<Class, LossReason> {
    let deal_id = deal_id.filter(|d| !d.is_empty());
    let found = deal_id.and_then(|id| imp.deals.iter().enumerate().find(|(_, d)| d.id == id));
    match found {
        Some((k, deal)) => {
            if deal.wseat.is_empty() || contains_exact(deal.wseat, seat) {
                Ok(Class::Deal(k))
            } else {
                Err(LossReason::BuyerSeatBlocked)
            }
        }
        None if !imp.private_auction => Ok(Class::Open),
        None if deal_id.is_some() => Err(LossReason::InvalidDealId),
        None => Err(LossReason::NotAllowedInDeal),
    }
}

/// Seat IDs are opaque identifiers, compared exactly.
#[inline]
fn contains_exact(list: &[Cow<'_, str>], item: &str) -> bool {
    list.iter().any(|x| x == item)
}

/// [`host_blocked`] on raw `badv` and `adomain` entries.
#[cfg(test)]
pub(crate) fn domain_blocked(blocked: &str, adv: &str) -> bool {
    host_blocked(bare_host(blocked), bare_host(adv))
}

/// Whether advertiser host `adv` falls under the blocked host `blocked`, both already reduced by
/// [`bare_host`] (the auction reduces `badv` once per request, in [`Blocks`]): equal
/// ASCII-case-insensitively, or `adv` is a subdomain of `blocked` (`badv: ["ford.com"]` blocks
/// `ford.com`, `www.ford.com`, `shop.ford.com`, not `myford.com`; `badv: ["shop.ford.com"]` does
/// not block `ford.com`).
#[inline]
fn host_blocked(blocked: &[u8], adv: &[u8]) -> bool {
    if blocked.is_empty() {
        return false;
    }
    match adv.len().checked_sub(blocked.len()) {
        Some(0) => adv.eq_ignore_ascii_case(blocked),
        // The byte before the suffix is checked first: it rejects most non-matches for free.
        Some(extra) => {
            adv.get(extra - 1) == Some(&b'.')
                && adv
                    .get(extra..)
                    .is_some_and(|s| s.eq_ignore_ascii_case(blocked))
        }
        None => false,
    }
}

/// A domain reduced to its bare host: scheme, path, port, trailing dots and a leading `www.`
/// dropped. Bytes, not `str`, so that cutting at any position can never split a character and
/// panic.
#[inline]
fn bare_host(domain: &str) -> &[u8] {
    let mut host = trim(domain);
    // A bare domain, by far the usual `adomain`, has none of these, so one scan settles it.
    // It has no early exit on purpose: that lets the compiler scan many bytes per step.
    if host.iter().fold(false, |found, &c| found | is_host_end(c)) {
        if let Some(after) = after_scheme(host) {
            host = after;
        }
        if let Some(end) = host.iter().position(|&c| is_host_end(c)) {
            host = host.get(..end).unwrap_or(host);
        }
    }
    while let [rest @ .., b'.'] = host {
        host = rest;
    }
    match host {
        [w1, w2, w3, b'.', rest @ ..]
            if !rest.is_empty() && [*w1, *w2, *w3].eq_ignore_ascii_case(b"www") =>
        {
            rest
        }
        _ => host,
    }
}

/// Where a host ends: a path, query, fragment or port follows (`:` also starts `://`).
const fn is_host_end(c: u8) -> bool {
    matches!(c, b'/' | b'?' | b'#' | b':')
}

/// `str::trim` without its Unicode decoding when neither end could be whitespace, the usual case.
#[inline]
fn trim(domain: &str) -> &[u8] {
    let bytes = domain.as_bytes();
    match (bytes.first(), bytes.last()) {
        (Some(first), Some(last)) if first.is_ascii_graphic() && last.is_ascii_graphic() => bytes,
        _ => domain.trim().as_bytes(),
    }
}

/// What follows the first `://`, if any.
fn after_scheme(host: &[u8]) -> Option<&[u8]> {
    let mut from = 0;
    loop {
        let colon = from + host.get(from..)?.iter().position(|&c| c == b':')?;
        if host.get(colon + 1..colon + 3) == Some(b"//") {
            return host.get(colon + 3..);
        }
        from = colon + 1;
    }
}

/// Whether category `cat` falls under the blocked `blocked`: equal ASCII-case-insensitively, or
/// an IAB 1.0 subcategory of it (`bcat: ["IAB25"]` blocks `IAB25-3`, not `IAB2`).
#[inline]
pub(crate) fn category_blocked(blocked: &str, cat: &str) -> bool {
    let (blocked, cat) = (blocked.as_bytes(), cat.as_bytes());
    if blocked.is_empty() {
        return false;
    }
    match cat.len().checked_sub(blocked.len()) {
        Some(0) => cat.eq_ignore_ascii_case(blocked),
        Some(_) => cat[blocked.len()] == b'-' && cat[..blocked.len()].eq_ignore_ascii_case(blocked),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::{bare_host, category_blocked, domain_blocked};

    /// The plain statement of the reduction that `bare_host` computes without its shortcuts.
    fn bare_host_reference(domain: &str) -> &[u8] {
        let mut host = domain.trim().as_bytes();
        if let Some(at) = host.windows(3).position(|w| w == b"://") {
            host = &host[at + 3..];
        }
        if let Some(end) = host
            .iter()
            .position(|&c| matches!(c, b'/' | b'?' | b'#' | b':'))
        {
            host = &host[..end];
        }
        while let [rest @ .., b'.'] = host {
            host = rest;
        }
        if host.len() > 4 && host[..4].eq_ignore_ascii_case(b"www.") {
            host = &host[4..];
        }
        host
    }

    fn domain_blocked_reference(blocked: &str, adv: &str) -> bool {
        let (blocked, adv) = (bare_host_reference(blocked), bare_host_reference(adv));
        if blocked.is_empty() {
            return false;
        }
        match adv.len().checked_sub(blocked.len()) {
            Some(0) => adv.eq_ignore_ascii_case(blocked),
            Some(extra) => adv[extra - 1] == b'.' && adv[extra..].eq_ignore_ascii_case(blocked),
            None => false,
        }
    }

    /// `://`, schemes, `www.`, the other delimiters, dots, ASCII and Unicode whitespace, control
    /// bytes and multibyte letters, in any order.
    const DOMAIN: &str = "(://|https?|www\\.|WWW\\.|\
        [ \t\n.:/?#wWabF\u{e9}\u{fc}\u{a0}\u{85}\u{3000}\u{7f}\u{1}-]){0,12}";

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(5_000))]

        #[test]
        fn bare_host_agrees_with_the_plain_reduction(domain in DOMAIN) {
            prop_assert_eq!(bare_host(&domain), bare_host_reference(&domain));
        }

        #[test]
        fn domain_blocking_agrees_with_the_plain_reduction(blocked in DOMAIN, adv in DOMAIN) {
            prop_assert_eq!(
                domain_blocked(&blocked, &adv),
                domain_blocked_reference(&blocked, &adv)
            );
        }

        #[test]
        fn subdomains_of_a_blocked_domain_are_blocked(
            blocked in "[a-c]{1,3}\\.[a-c]{1,3}",
            sub in "[a-c]{1,3}",
        ) {
            let adv = format!("{sub}.{blocked}");
            prop_assert!(domain_blocked(&blocked, &adv), "{} should block {}", blocked, adv);
        }
    }

    #[test]
    fn domains_match_across_case_www_scheme_and_subdomains() {
        for (blocked, adv) in [
            ("ford.com", "ford.com"),
            ("ford.com", "FORD.com"),
            ("ford.com", "www.ford.com"),
            ("www.ford.com", "ford.com"),
            ("WWW.Ford.Com", "www.ford.com"),
            ("ford.com", "shop.ford.com"),
            ("ford.com", "https://www.ford.com/cars?x=1"),
            ("http://ford.com/", "ford.com."),
            ("ford.com", "ford.com:443"),
            (" ford.com ", "ford.com"),
        ] {
            assert!(
                domain_blocked(blocked, adv),
                "{blocked:?} should block {adv:?}"
            );
        }
    }

    #[test]
    fn domains_do_not_overmatch() {
        for (blocked, adv) in [
            ("ford.com", "myford.com"),
            ("ford.com", "ford.co"),
            ("shop.ford.com", "ford.com"),
            ("ford.com", "ford.com.evil.net"),
            ("", "ford.com"),
            ("www.", "ford.com"),
            ("ford.com", ""),
            ("ford.com", "wwwford.com"),
            ("é.com", "xé.com"),
        ] {
            assert!(
                !domain_blocked(blocked, adv),
                "{blocked:?} must not block {adv:?}"
            );
        }
    }

    #[test]
    fn multibyte_domains_never_panic_and_match_exactly() {
        assert!(domain_blocked("bücher.de", "www.bücher.de"));
        assert!(domain_blocked("bücher.de", "shop.bücher.de"));
        assert!(!domain_blocked("ücher.de", "bücher.de"));
    }

    #[test]
    fn categories_block_their_iab_subcategories() {
        assert!(category_blocked("IAB25", "IAB25"));
        assert!(category_blocked("IAB25", "iab25"));
        assert!(category_blocked("IAB25", "IAB25-3"));
        assert!(category_blocked("IAB7-39", "IAB7-39"));
        assert!(!category_blocked("IAB2", "IAB25"));
        assert!(!category_blocked("IAB25-3", "IAB25"));
        assert!(!category_blocked("IAB7-3", "IAB7-39"));
        assert!(!category_blocked("", "IAB1"));
        assert!(category_blocked("1234", "1234"));
        assert!(!category_blocked("123", "1234"));
    }
}
