//! serde building blocks for the borrowed wire model: field types that read OpenRTB the way
//! the spec means it, so the model structs need no per-field `deserialize_with`.
//!
//! serde's own impls allocate more than needed (`Option<Cow<str>>` is always owned) and are
//! laxer than OpenRTB in places (a struct also accepts a JSON array, fields by position) and
//! stricter in others (`null` for a list is an error, while `null` for a scalar is not).
//! The wrappers here close those gaps:
//!
//! - [`Str`]: a string that borrows from the body unless it had escapes;
//! - [`List`] and [`Strs`]: lists where `null` (or absence) reads as empty;
//! - [`RawObject`] and [`RawArray`]: opaque values kept as text, of the right JSON kind;
//! - `objects_only!`: model structs that refuse a JSON array in place of an object;
//! - `located_*`: the exchange-owned values, with where they sit in the body (these keep
//!   a `deserialize_with`, since even a `null` there has to be located).
//!
//! All of them deref to the plain type (`str`, `[T]`, `RawValue`), so reading the model
//! looks like reading plain fields.

use std::borrow::Cow;
use std::fmt;
use std::marker::PhantomData;
use std::ops::Deref;

use serde::de::{self, Deserialize, Deserializer, Error as _, SeqAccess, Visitor};
use serde_json::value::RawValue;

use crate::request::{Currencies, Located};

/// A string borrowed from the JSON body, or owned when the JSON escaped it.
#[derive(Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Str<'a>(pub Cow<'a, str>);

impl Deref for Str<'_> {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl AsRef<str> for Str<'_> {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Str<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl fmt::Display for Str<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl PartialEq<str> for Str<'_> {
    fn eq(&self, other: &str) -> bool {
        *self.0 == *other
    }
}

impl PartialEq<&str> for Str<'_> {
    fn eq(&self, other: &&str) -> bool {
        *self.0 == **other
    }
}

impl<'a> From<Str<'a>> for Cow<'a, str> {
    fn from(s: Str<'a>) -> Self {
        s.0
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Str<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = Str<'a>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Str(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Str(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
                Ok(Str(Cow::Owned(v)))
            }
        }
        d.deserialize_str(V(PhantomData))
    }
}

/// A JSON array of `T`; `null` and a missing key both read as empty.
#[derive(Clone, PartialEq, Eq)]
pub struct List<T>(pub Vec<T>);

impl<T> Default for List<T> {
    fn default() -> Self {
        List(Vec::new())
    }
}

impl<T> Deref for List<T> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        &self.0
    }
}

impl<T: fmt::Debug> fmt::Debug for List<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl<'a, T> IntoIterator for &'a List<T> {
    type Item = &'a T;
    type IntoIter = std::slice::Iter<'a, T>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for List<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // `deserialize_option` is also what serde derive calls for a missing key, so a
        // missing list needs no `#[serde(default)]`.
        Ok(List(Option::<Vec<T>>::deserialize(d)?.unwrap_or_default()))
    }
}

/// A JSON array of strings, each borrowed unless escaped; `null` and a missing key both
/// read as empty. Derefs to `[Cow<str>]`, the form the auction's block lists take.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Strs<'a>(pub Vec<Cow<'a, str>>);

impl<'a> Deref for Strs<'a> {
    type Target = [Cow<'a, str>];
    fn deref(&self) -> &[Cow<'a, str>] {
        &self.0
    }
}

impl fmt::Debug for Strs<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Strs<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Seq<'a>(PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for Seq<'a> {
            type Value = Vec<Cow<'a, str>>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an array of strings")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(64));
                while let Some(s) = seq.next_element::<Str<'a>>()? {
                    out.push(s.0);
                }
                Ok(out)
            }
        }
        struct Opt<'a>(PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for Opt<'a> {
            type Value = Strs<'a>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an array of strings or null")
            }
            fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(Strs(Vec::new()))
            }
            fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(Strs(Vec::new()))
            }
            fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
                d.deserialize_seq(Seq(PhantomData)).map(Strs)
            }
        }
        d.deserialize_option(Opt(PhantomData))
    }
}

/// An opaque JSON object (an `ext`, `schain`), kept as its text.
#[derive(Clone, Copy)]
pub struct RawObject<'a>(pub &'a RawValue);

/// An opaque JSON array (`eids`, `data`), kept as its text.
#[derive(Clone, Copy)]
pub struct RawArray<'a>(pub &'a RawValue);

macro_rules! raw_kind {
    ($name:ident, $open:literal, $expected:literal) => {
        impl<'a> Deref for $name<'a> {
            type Target = RawValue;
            fn deref(&self) -> &RawValue {
                self.0
            }
        }

        impl fmt::Debug for $name<'_> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.0.get())
            }
        }

        impl<'de: 'a, 'a> Deserialize<'de> for $name<'a> {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let raw = <&'a RawValue>::deserialize(d)?;
                if raw.get().starts_with($open) {
                    Ok($name(raw))
                } else {
                    Err(D::Error::custom($expected))
                }
            }
        }
    };
}

raw_kind!(RawObject, '{', "expected a JSON object");
raw_kind!(RawArray, '[', "expected a JSON array");

/// Gives model structs a `Deserialize` that accepts only a JSON object.
///
/// Each struct derives `Deserialize` with `#[serde(remote = "Self")]`, which turns the
/// derived code into an inherent `Self::deserialize`; the trait impl generated here hands
/// it the entries of a JSON object and refuses anything else.
macro_rules! objects_only {
    ($($name:ident),* $(,)?) => {$(
        impl<'de: 'a, 'a> ::serde::Deserialize<'de> for $name<'a> {
            fn deserialize<D: ::serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                struct V<'a>(::std::marker::PhantomData<&'a ()>);
                impl<'de: 'a, 'a> ::serde::de::Visitor<'de> for V<'a> {
                    type Value = $name<'a>;
                    fn expecting(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                        f.write_str("a JSON object")
                    }
                    fn visit_map<A: ::serde::de::MapAccess<'de>>(
                        self,
                        map: A,
                    ) -> Result<Self::Value, A::Error> {
                        $name::deserialize(::serde::de::value::MapAccessDeserializer::new(map))
                    }
                }
                d.deserialize_map(V(::std::marker::PhantomData))
            }
        }
    )*};
}
pub(crate) use objects_only;

/// Captures the raw text (even `null`, whose bytes must still be replaced when
/// forwarding) and reads the value from it.
fn located<'de: 'a, 'a, D: Deserializer<'de>, T>(
    d: D,
    read: impl FnOnce(&'a str) -> Result<T, &'static str>,
) -> Result<Option<Located<'a, T>>, D::Error> {
    let raw = <&'a RawValue>::deserialize(d)?;
    let text = raw.get();
    let value = if text == "null" {
        None
    } else {
        Some(read(text).map_err(D::Error::custom)?)
    };
    Ok(Some(Located { value, raw }))
}

/// `tmax`, `at`: an integer and where it sits.
pub(crate) fn located_int<'de: 'a, 'a, D: Deserializer<'de>>(
    d: D,
) -> Result<Option<Located<'a, i64>>, D::Error> {
    // Valid JSON integer text is exactly what `i64::from_str` accepts; fractions,
    // exponents and strings are refused like serde_json would.
    located(d, |t| t.parse::<i64>().map_err(|_| "expected an integer"))
}

/// `imp.bidfloor`: a finite number and where it sits.
pub(crate) fn located_float<'de: 'a, 'a, D: Deserializer<'de>>(
    d: D,
) -> Result<Option<Located<'a, f64>>, D::Error> {
    located(d, |t| {
        // Strings are quoted in the raw text, so "inf"/"NaN" spellings cannot reach
        // `parse`; only overflow to infinity needs refusing.
        match t.parse::<f64>() {
            Ok(v) if v.is_finite() => Ok(v),
            Ok(_) => Err("number out of range"),
            Err(_) => Err("expected a number"),
        }
    })
}

/// `cur`: a list of strings and where it sits.
pub(crate) fn located_strs<'de: 'a, 'a, D: Deserializer<'de>>(
    d: D,
) -> Result<Option<Located<'a, Currencies<'a>>>, D::Error> {
    located(d, |t| {
        let mut de = serde_json::Deserializer::from_str(t);
        Strs::deserialize(&mut de)
            .map(|s| s.0)
            .map_err(|_| "expected an array of strings")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Deserialize)]
    struct Probe<'a> {
        #[serde(borrow)]
        s: Option<Str<'a>>,
        #[serde(borrow)]
        strs: Strs<'a>,
        list: List<u32>,
        #[serde(borrow)]
        obj: Option<RawObject<'a>>,
        #[serde(borrow)]
        arr: Option<RawArray<'a>>,
    }

    fn probe(json: &str) -> Result<Probe<'_>, String> {
        serde_json::from_str(json).map_err(|e| e.to_string())
    }

    #[test]
    fn missing_and_null_read_as_absent_or_empty() {
        for json in [
            "{}",
            r#"{"s":null,"strs":null,"list":null,"obj":null,"arr":null}"#,
        ] {
            let p = probe(json).unwrap();
            assert!(
                p.s.is_none() && p.obj.is_none() && p.arr.is_none(),
                "{json}"
            );
            assert!(p.strs.is_empty() && p.list.is_empty(), "{json}");
        }
    }

    #[test]
    fn strings_borrow_unless_escaped() {
        let p = probe(r#"{"s":"plain","strs":["a","\u0062"]}"#).unwrap();
        assert!(matches!(p.s, Some(Str(Cow::Borrowed("plain")))));
        assert!(matches!(
            &p.strs[..],
            [Cow::Borrowed("a"), Cow::Owned(b)] if b == "b"
        ));
    }

    #[test]
    fn values_of_the_wrong_kind_are_refused() {
        for json in [
            r#"{"s":1}"#,
            r#"{"strs":"a"}"#,
            r#"{"strs":[1]}"#,
            r#"{"list":[-1]}"#,
            r#"{"list":{}}"#,
            r#"{"obj":[]}"#,
            r#"{"arr":{}}"#,
        ] {
            assert!(probe(json).is_err(), "{json}");
        }
        let p = probe(r#"{"list":[3,1],"obj":{"a":[]},"arr":[{}]}"#).unwrap();
        assert_eq!(*p.list, [3, 1]);
        assert_eq!(p.obj.map(|o| o.0.get()), Some(r#"{"a":[]}"#));
        assert_eq!(p.arr.map(|a| a.0.get()), Some("[{}]"));
    }
}
