//! The effective floors a DSP receives: each imp whose floor the exchange raised or converted
//! gets its `bidfloor` and `bidfloorcur` replaced (or added), and only that imp is rebuilt,
//! from its members' own bytes; every other byte of the body is the publisher's.

use money::CpmMicros;
use serde_json::value::RawValue;

use super::object::{self, Keep, Member};
use super::Edit;
use crate::span::Span;

/// One imp's floor as DSPs must see it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ImpFloor {
    /// Index into the request's `imp` array.
    pub imp: usize,
    /// The floor, in the currency `currency` names.
    pub floor: CpmMicros,
}

/// The edits that give each imp of `floors` its `bidfloor` and `bidfloorcur = currency`.
/// An imp that cannot be located in `body` is left as sent (parsing refuses such bodies).
pub(crate) fn edits(
    body: &[u8],
    top: &[Member<'_>],
    floors: &[ImpFloor],
    currency: &str,
) -> Vec<Edit> {
    if floors.is_empty() {
        return Vec::new();
    }
    let Some(imps) = top.iter().rev().find(|m| m.key == "imp") else {
        return Vec::new();
    };
    let Ok(list) = serde_json::from_str::<Vec<&RawValue>>(imps.text()) else {
        return Vec::new();
    };
    let mut cur = Vec::with_capacity(currency.len() + 2);
    // Writing a &str into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut cur, currency);
    let mut edits = Vec::with_capacity(floors.len());
    for f in floors {
        let Some(raw) = list.get(f.imp) else {
            continue;
        };
        let (Some(span), Some(members)) = (Span::of(body, raw), object::members(body, raw.get()))
        else {
            continue;
        };
        let mut floor = Vec::with_capacity(16);
        f.floor.write_decimal(&mut floor);
        let has = |key: &str| members.iter().any(|m| m.key == key);
        let mut added = Vec::new();
        if !has("bidfloor") {
            added.push([&b"\"bidfloor\":"[..], &floor].concat());
        }
        if !has("bidfloorcur") {
            added.push([&b"\"bidfloorcur\":"[..], &cur].concat());
        }
        let mut text = Vec::with_capacity(raw.get().len() + 48);
        object::rebuild(&mut text, body, &members, &added, |m| {
            match m.key.as_ref() {
                "bidfloor" => Keep::Value(floor.clone()),
                "bidfloorcur" => Keep::Value(cur.clone()),
                _ => Keep::As,
            }
        });
        edits.push(Edit { span, text });
    }
    edits
}

#[cfg(test)]
mod tests {
    use super::super::{Document, Outbound};
    use super::*;
    use crate::request::parse;

    fn render(body: &str, floors: &[ImpFloor]) -> String {
        let req = parse(body.as_bytes()).unwrap();
        let doc = Document::read(body.as_bytes()).unwrap();
        let splice = doc.floors(floors, "USD");
        let out = Outbound::with_splice(body.as_bytes(), &req, 2, "USD", &splice);
        let mut bytes = Vec::new();
        out.render(50, &mut bytes);
        String::from_utf8(bytes).unwrap()
    }

    #[test]
    fn only_the_changed_imps_are_rebuilt() {
        let body = r#"{"id":"r","tmax":100,"imp":[{"id":"1", "bidfloor": 1.2,"bidfloorcur":"EUR","banner":{}} , {"id":"2","banner":{},"bidfloor":3}],"cur":["USD"]}"#;
        let floor = |imp, micros| ImpFloor {
            imp,
            floor: CpmMicros::new(micros),
        };
        assert_eq!(
            render(body, &[floor(0, 1_304_348)]),
            r#"{"at":2,"id":"r","tmax":50,"imp":[{"id":"1","bidfloor": 1.304348,"bidfloorcur":"USD","banner":{}} , {"id":"2","banner":{},"bidfloor":3}],"cur":["USD"]}"#
        );
        // Absent fields are added at the end of the imp.
        let body = r#"{"id":"r","imp":[{"id":"1","banner":{}}]}"#;
        assert_eq!(
            render(body, &[floor(0, 2_500_000)]),
            r#"{"tmax":50,"at":2,"cur":["USD"],"id":"r","imp":[{"id":"1","banner":{},"bidfloor":2.5,"bidfloorcur":"USD"}]}"#
        );
        assert_eq!(
            render(body, &[]),
            r#"{"tmax":50,"at":2,"cur":["USD"],"id":"r","imp":[{"id":"1","banner":{}}]}"#
        );
    }
}
