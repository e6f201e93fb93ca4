//! Reading the consent strings: TCF v2 (GDPR) and GPP's US sections, decoded with the
//! `iab_gpp` crate (its TCF EU v2 section is the TC string's own encoding, so one crate reads
//! both), and the US Privacy string, whose one character is read by position as its spec
//! defines it.

use std::collections::BTreeSet;

use iab_gpp::sections::tcfeuv2::{RestrictionType, TcfEuV2};
use iab_gpp::sections::us_common::OptOut;
use iab_gpp::sections::uspv1::Flag;
use iab_gpp::sections::{usnat, Section, SectionId};
use iab_gpp::v1::GPPString;

/// What a TCF v2 string allows, reduced to what the exchange asks of it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tcf {
    /// Purpose 1 (store and/or access information on a device) consented.
    purpose_one: bool,
    /// Vendors with the user's consent.
    vendors: BTreeSet<u16>,
    /// Vendors the publisher does not allow purpose 1 to at all.
    not_allowed: BTreeSet<u16>,
}

impl Tcf {
    /// Decodes a TC string; `None` when it is not a readable TCF v2 string.
    pub fn decode(consent: &str) -> Option<Tcf> {
        consent.parse::<TcfEuV2>().ok().map(Self::of)
    }

    fn of(tcf: TcfEuV2) -> Tcf {
        let core = tcf.core;
        let not_allowed = core
            .publisher_restrictions
            .into_iter()
            .filter(|r| r.purpose_id == 1 && r.restriction_type == RestrictionType::NotAllowed)
            .flat_map(|r| r.restricted_vendor_ids)
            .collect();
        Tcf {
            purpose_one: core.purpose_consents.contains(&1),
            vendors: core.vendor_consents,
            not_allowed,
        }
    }

    /// Whether vendor `gvl_id` may receive the user's identifiers: purpose 1 and the vendor
    /// consented, and the publisher not restricting the vendor from purpose 1.
    pub fn allows(&self, gvl_id: u16) -> bool {
        self.purpose_one && self.vendors.contains(&gvl_id) && !self.not_allowed.contains(&gvl_id)
    }
}

/// A TCF v2 string inside a GPP string (section 2), for requests that carry GDPR consent only
/// there.
pub fn tcf_in_gpp(gpp: &str) -> Option<Tcf> {
    let gpp = GPPString::parse_str(gpp).ok()?;
    gpp.decode::<TcfEuV2>().ok().map(Tcf::of)
}

/// A US Privacy string (`1YNN`) whose third character, "opted out of sale", is `Y`.
pub fn us_privacy_opts_out(usp: &str) -> bool {
    matches!(usp.as_bytes().get(2), Some(b'Y' | b'y'))
}

/// The GPP section ids that are US ones: the US Privacy section (6), US national (7) and the
/// US states (8 to 23). Ids the crate does not know yet are left out.
fn us_section(id: i32) -> Option<SectionId> {
    Some(match id {
        6 => SectionId::UspV1,
        7 => SectionId::UsNat,
        8 => SectionId::UsCa,
        9 => SectionId::UsVa,
        10 => SectionId::UsCo,
        11 => SectionId::UsUt,
        12 => SectionId::UsCt,
        13 => SectionId::UsFl,
        14 => SectionId::UsMt,
        15 => SectionId::UsOr,
        16 => SectionId::UsTx,
        17 => SectionId::UsDe,
        18 => SectionId::UsIa,
        19 => SectionId::UsNe,
        20 => SectionId::UsNh,
        21 => SectionId::UsNj,
        22 => SectionId::UsTn,
        23 => SectionId::UsMn,
        _ => return None,
    })
}

/// Whether the GPP string opts the user out of sale or sharing in one of the US sections
/// that `sids` (the request's `gpp_sid`) says apply. Conservative: a GPP string that does
/// not decode, or an applicable US section missing from it or not decoding, counts as an
/// opt-out.
pub fn gpp_opts_out(gpp: &str, sids: &[i32]) -> bool {
    let mut applicable = sids.iter().filter_map(|id| us_section(*id)).peekable();
    if applicable.peek().is_none() {
        return false;
    }
    let Ok(gpp) = GPPString::parse_str(gpp) else {
        return true;
    };
    applicable.any(|id| match gpp.decode_section(id) {
        Ok(section) => section_opts_out(&section),
        Err(_) => true,
    })
}

/// An opt-out of sale, of sharing, or (the states' name for the same advertising use) of
/// targeted advertising.
fn section_opts_out(section: &Section) -> bool {
    let out = |o: &OptOut| *o == OptOut::OptedOut;
    match section {
        Section::UspV1(s) => s.opt_out_sale == Flag::Yes,
        Section::UsNat(s) => match &s.core {
            usnat::Core::V1(c) => {
                out(&c.sale_opt_out)
                    || out(&c.sharing_opt_out)
                    || out(&c.targeted_advertising_opt_out)
            }
            usnat::Core::V2(c) => {
                out(&c.sale_opt_out)
                    || out(&c.sharing_opt_out)
                    || out(&c.targeted_advertising_opt_out)
            }
            // A version this crate reads but we do not know: conservative.
            #[allow(unreachable_patterns)]
            _ => true,
        },
        Section::UsCa(s) => out(&s.core.sale_opt_out) || out(&s.core.sharing_opt_out),
        Section::UsVa(s) => out(&s.core.sale_opt_out) || out(&s.core.targeted_advertising_opt_out),
        Section::UsCo(s) => out(&s.core.sale_opt_out) || out(&s.core.targeted_advertising_opt_out),
        Section::UsUt(s) => out(&s.core.sale_opt_out) || out(&s.core.targeted_advertising_opt_out),
        Section::UsCt(s) => out(&s.core.sale_opt_out) || out(&s.core.targeted_advertising_opt_out),
        Section::UsFl(s) => out(&s.core.sale_opt_out) || out(&s.core.targeted_advertising_opt_out),
        Section::UsMt(s) => out(&s.core.sale_opt_out) || out(&s.core.targeted_advertising_opt_out),
        Section::UsOr(s) => out(&s.core.sale_opt_out) || out(&s.core.targeted_advertising_opt_out),
        Section::UsTx(s) => out(&s.core.sale_opt_out) || out(&s.core.targeted_advertising_opt_out),
        Section::UsDe(s) => out(&s.core.sale_opt_out) || out(&s.core.targeted_advertising_opt_out),
        Section::UsIa(s) => out(&s.core.sale_opt_out) || out(&s.core.targeted_advertising_opt_out),
        Section::UsNe(s) => out(&s.core.sale_opt_out) || out(&s.core.targeted_advertising_opt_out),
        Section::UsNh(s) => out(&s.core.sale_opt_out) || out(&s.core.targeted_advertising_opt_out),
        Section::UsNj(s) => out(&s.core.sale_opt_out) || out(&s.core.targeted_advertising_opt_out),
        Section::UsTn(s) => out(&s.core.sale_opt_out) || out(&s.core.targeted_advertising_opt_out),
        Section::UsMn(s) => out(&s.core.sale_opt_out) || out(&s.core.targeted_advertising_opt_out),
        // Not a US section (`us_section` asks only for those).
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A published TCF v2 example (the `lib_tcstring` README's): purposes 1, 2 and 3 and
    /// vendors 2, 6 and 8 consented, no publisher restriction.
    pub const EXAMPLE: &str = "COvFyGBOvFyGBAbAAAENAPCAAOAAAAAAAAAAAEEUACCKAAA";

    #[test]
    fn tcf_strings_are_decoded_not_matched() {
        let tcf = Tcf::decode(EXAMPLE).unwrap();
        assert_eq!(
            tcf,
            Tcf {
                purpose_one: true,
                vendors: [2, 6, 8].into(),
                not_allowed: BTreeSet::new(),
            }
        );
        assert!(tcf.allows(8) && tcf.allows(2));
        assert!(!tcf.allows(7) && !tcf.allows(755));
        // Purpose 2 only (from the corpus): no vendor may have identifiers.
        let tcf = Tcf::decode("CPBCa-mPBCa-mAAAAAENA0CAAEAAAAAAACiQAaQAwAAgAgABoAAAAAA").unwrap();
        assert_eq!(tcf.vendors, [1, 32, 52].into());
        assert!(!tcf.purpose_one && !tcf.allows(1));
        // No purpose, no vendor.
        let tcf = Tcf::decode("CPXxRfAPXxRfAAfKABENB-CgAAAAAAAAAAYgAAAAAAAA").unwrap();
        assert!(!tcf.purpose_one && tcf.vendors.is_empty());
        // Not TCF v2: a TCF v1 string, a placeholder, an empty string.
        for broken in [
            "BOlOrv1OlOr2EAAABADECg-AAAApp7v______9______9uz_Ov_v_f__33e8__9v_l_7_-___u_-3zd4u_1vf99yfm1-7etr3tp_87ues2_Xur__79__3z3_9phP78k89r7337Ew-v02",
            "there-is-a-real-cs-in-it",
            "",
            "CO-X2XiO_eyUoAsAxBFRBECsA",
        ] {
            assert_eq!(Tcf::decode(broken), None, "{broken}");
        }
    }

    #[test]
    fn a_publisher_restriction_on_purpose_one_withdraws_the_vendor() {
        let mut tcf = Tcf::decode(EXAMPLE).unwrap();
        tcf.not_allowed.insert(8);
        assert!(!tcf.allows(8) && tcf.allows(6));
    }

    #[test]
    fn us_privacy_reads_the_third_character() {
        assert!(us_privacy_opts_out("1YYY"));
        assert!(us_privacy_opts_out("1-Y-"));
        assert!(!us_privacy_opts_out("1YNN"));
        assert!(!us_privacy_opts_out("1---"));
        assert!(!us_privacy_opts_out("uspConsentString"));
        assert!(!us_privacy_opts_out("1Y"));
    }

    #[test]
    fn gpp_us_sections_decide_and_broken_strings_count_as_opt_out() {
        // Section 6 (US Privacy) "1NYN": opted out of sale.
        let gpp = "DBACNYA~CPXxRfAPXxRfAAfKABENB-CgAAAAAAAAAAYgAAAAAAAA~1NYN";
        assert!(gpp_opts_out(gpp, &[2, 6]));
        // Only the TCF section applies.
        assert!(!gpp_opts_out(gpp, &[2]));
        assert!(!gpp_opts_out(gpp, &[]));
        assert!(!gpp_opts_out("DBABTA~1YNN", &[6]));
        assert!(gpp_opts_out("gppString", &[6]));
        assert!(!gpp_opts_out("gppString", &[2]));
        // A US section listed but absent from the string.
        assert!(gpp_opts_out("DBABTA~1YNN", &[7]));
    }

    /// The `iab_gpp` crate's own test strings: US national v1 opted out of everything, the
    /// same with everything not applicable, and California opted out.
    #[test]
    fn us_national_and_state_sections() {
        let opted_out = GPPString::parse_str(USNAT_OPTED_OUT).unwrap();
        let Ok(Section::UsNat(s)) = opted_out.decode_section(SectionId::UsNat) else {
            panic!("not a US national section");
        };
        let usnat::Core::V1(core) = &s.core else {
            panic!("not version 1");
        };
        assert_eq!(core.sale_opt_out, OptOut::OptedOut);
        assert_eq!(core.sharing_opt_out, OptOut::OptedOut);
        assert!(gpp_opts_out(USNAT_OPTED_OUT, &[7]));
        assert!(!gpp_opts_out("DBABLA~BAAAAAAAAQA", &[7]));
        assert!(gpp_opts_out("DBABBg~BVVVVVVY", &[8]));
        // Listed under another id than the one the string holds: missing, so conservative.
        assert!(gpp_opts_out("DBABLA~BAAAAAAAAQA", &[8]));
    }

    pub const USNAT_OPTED_OUT: &str = "DBABLA~BVVVVVVVVWA";
}
