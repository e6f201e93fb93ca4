//! What each DSP may see of a request: the privacy rules (COPPA, GDPR with TCF v2 consent,
//! US Privacy, GPP's US sections), decided once per auction, and per DSP only where GDPR
//! makes the answer depend on the DSP's vendor id.
//!
//! The scrubbing itself is `openrtb::forward::scrub`; the bodies, one per distinct decision
//! and shared by the DSPs that got it, are in `bodies.rs`.

mod bodies;
pub mod consent;

pub use bodies::Bodies;

use openrtb::forward::Scrub;
use openrtb::request::BidRequest;

use consent::Tcf;

/// Why a body was scrubbed, as counted in `exchange_scrubbed_total{rule}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rule {
    Coppa,
    Gdpr,
    UsPrivacy,
    Gpp,
}

impl Rule {
    pub const ALL: [Rule; 4] = [Rule::Coppa, Rule::Gdpr, Rule::UsPrivacy, Rule::Gpp];

    pub fn label(self) -> &'static str {
        match self {
            Rule::Coppa => "coppa",
            Rule::Gdpr => "gdpr",
            Rule::UsPrivacy => "us_privacy",
            Rule::Gpp => "gpp",
        }
    }
}

/// One auction's privacy decision.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    /// A rule that scrubs every DSP's body: COPPA first, then a US opt-out.
    everyone: Option<(Scrub, Rule)>,
    /// GDPR applies; the decoded consent, `None` when there is none or it does not decode.
    gdpr: Option<Option<Tcf>>,
}

impl Decision {
    /// Reads the request's signals, 2.6 locations first, then the 2.5 `ext` ones. A TC string
    /// is decoded here, once per auction, only when GDPR applies.
    pub fn of(req: &BidRequest<'_>) -> Decision {
        let p = req.privacy();
        let everyone = if p.coppa {
            Some((Scrub::Coppa, Rule::Coppa))
        } else if p.us_privacy.is_some_and(consent::us_privacy_opts_out) {
            Some((Scrub::Restricted, Rule::UsPrivacy))
        } else if p.gpp.is_some_and(|g| consent::gpp_opts_out(g, p.gpp_sid)) {
            Some((Scrub::Restricted, Rule::Gpp))
        } else {
            None
        };
        let gdpr = match (everyone, p.gdpr) {
            // Everyone is scrubbed already: no consent string to decode.
            (Some(_), _) | (None, None | Some(false)) => None,
            (None, Some(true)) => Some(match p.consent {
                Some(tc) => Tcf::decode(tc),
                // GDPR consent carried only in a GPP string's TCF EU v2 section.
                None => p
                    .gpp
                    .filter(|_| p.gpp_sid.contains(&2))
                    .and_then(consent::tcf_in_gpp),
            }),
        };
        Decision { everyone, gdpr }
    }

    /// Whether no DSP's body needs scrubbing: the plain path.
    pub fn is_plain(&self) -> bool {
        self.everyone.is_none() && self.gdpr.is_none()
    }

    /// How the body for a DSP with this vendor id is scrubbed, and why; `None`: not at all.
    /// A DSP without a vendor id is treated as without consent.
    pub fn for_dsp(&self, gvl_id: Option<u16>) -> Option<(Scrub, Rule)> {
        if self.everyone.is_some() {
            return self.everyone;
        }
        let consent = self.gdpr.as_ref()?;
        let allowed = matches!((consent, gvl_id), (Some(tcf), Some(id)) if tcf.allows(id));
        (!allowed).then_some((Scrub::Restricted, Rule::Gdpr))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decision(regs_user: &str) -> Decision {
        let body = format!(r#"{{"id":"r","imp":[{{"id":"1","banner":{{}}}}],{regs_user}}}"#);
        let req = openrtb::request::parse(body.as_bytes()).unwrap();
        Decision::of(&req)
    }

    #[test]
    fn no_signal_is_the_plain_path() {
        let d = decision(r#""site":{"id":"s"}"#);
        assert!(d.is_plain());
        assert_eq!(d.for_dsp(None), None);
        assert!(decision(r#""regs":{"gdpr":0,"coppa":0,"us_privacy":"1NNN"}"#).is_plain());
    }

    #[test]
    fn coppa_wins_over_every_other_rule() {
        let d = decision(r#""regs":{"coppa":1,"gdpr":1,"us_privacy":"1YYY"}"#);
        assert_eq!(d.for_dsp(Some(1)), Some((Scrub::Coppa, Rule::Coppa)));
        let d = decision(r#""regs":{"ext":{"coppa":1}}"#);
        assert_eq!(d.for_dsp(None), Some((Scrub::Coppa, Rule::Coppa)));
    }

    #[test]
    fn us_opt_outs_in_both_locations() {
        for regs in [
            r#""regs":{"us_privacy":"1YYN"}"#,
            r#""regs":{"ext":{"us_privacy":"1-Y-"}}"#,
        ] {
            let d = decision(regs);
            assert_eq!(
                d.for_dsp(Some(1)),
                Some((Scrub::Restricted, Rule::UsPrivacy)),
                "{regs}"
            );
        }
        let d = decision(r#""regs":{"gpp":"DBABTA~1YYN","gpp_sid":[6]}"#);
        assert_eq!(d.for_dsp(Some(1)), Some((Scrub::Restricted, Rule::Gpp)));
    }

    #[test]
    fn gdpr_consent_is_per_vendor_from_the_tc_string_or_the_gpp_one() {
        let tc = "COvFyGBOvFyGBAbAAAENAPCAAOAAAAAAAAAAAEEUACCKAAA";
        for regs_user in [
            format!(r#""regs":{{"gdpr":1}},"user":{{"consent":"{tc}"}}"#),
            format!(r#""regs":{{"ext":{{"gdpr":1}}}},"user":{{"ext":{{"consent":"{tc}"}}}}"#),
            format!(r#""regs":{{"gdpr":1,"gpp":"DBABMA~{tc}","gpp_sid":[2]}}"#),
        ] {
            let d = decision(&regs_user);
            assert_eq!(d.for_dsp(Some(8)), None, "{regs_user}");
            assert_eq!(d.for_dsp(Some(9)), Some((Scrub::Restricted, Rule::Gdpr)));
            assert_eq!(d.for_dsp(None), Some((Scrub::Restricted, Rule::Gdpr)));
        }
        // The GPP string's TCF section counts only when `gpp_sid` lists it...
        let d = decision(&format!(
            r#""regs":{{"gdpr":1,"gpp":"DBABMA~{tc}","gpp_sid":[]}}"#
        ));
        assert_eq!(d.for_dsp(Some(8)), Some((Scrub::Restricted, Rule::Gdpr)));
        // ...and a listed US section it lacks is an opt-out for everyone.
        let d = decision(&format!(
            r#""regs":{{"gdpr":1,"gpp":"DBABMA~{tc}","gpp_sid":[2,6]}}"#
        ));
        assert_eq!(d.for_dsp(Some(8)), Some((Scrub::Restricted, Rule::Gpp)));
    }

    #[test]
    fn gdpr_without_a_readable_consent_scrubs_everyone() {
        let d = decision(r#""regs":{"gdpr":1},"user":{"consent":"there-is-a-real-cs-in-it"}"#);
        assert_eq!(d.for_dsp(Some(1)), Some((Scrub::Restricted, Rule::Gdpr)));
        let d = decision(r#""regs":{"ext":{"gdpr":1}}"#);
        assert_eq!(d.for_dsp(None), Some((Scrub::Restricted, Rule::Gdpr)));
    }
}
