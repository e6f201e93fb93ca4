//! Byte spans of raw JSON values inside the buffer they were parsed from.
//!
//! serde_json hands out `&RawValue`s that borrow from the input, so the offset of a value
//! is plain pointer arithmetic against the start of that input. That lets us replace a
//! handful of fields in a large document without re-serialising the rest of it.

use serde_json::value::RawValue;

/// A half-open byte range `[start, end)` in some source buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Span {
    pub start: usize,
    pub end: usize,
}

impl Span {
    /// Where `raw` sits inside `source`, or `None` when `raw` does not borrow from it
    /// (for instance when it was parsed from another buffer).
    pub fn of(source: &[u8], raw: &RawValue) -> Option<Span> {
        Self::of_str(source, raw.get())
    }

    /// Where the string slice `part` sits inside `source`, if it is a sub-slice of it.
    pub fn of_str(source: &[u8], part: &str) -> Option<Span> {
        let base = source.as_ptr() as usize;
        let start = (part.as_ptr() as usize).checked_sub(base)?;
        let end = start.checked_add(part.len())?;
        (end <= source.len()).then_some(Span { start, end })
    }

    pub fn len(&self) -> usize {
        self.end - self.start
    }

    pub fn is_empty(&self) -> bool {
        self.start == self.end
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_a_raw_value_inside_its_source() {
        let body = br#"{"a":1,"tmax":120,"b":[1,2]}"#;
        #[derive(serde::Deserialize)]
        struct T<'a> {
            #[serde(borrow)]
            tmax: &'a RawValue,
        }
        let t: T = serde_json::from_slice(body).unwrap();
        let span = Span::of(body, t.tmax).unwrap();
        assert_eq!(&body[span.start..span.end], b"120");
    }

    #[test]
    fn refuses_a_slice_from_another_buffer() {
        let a = b"{\"x\":1}";
        let other = String::from("1");
        assert_eq!(Span::of_str(a, &other), None);
    }
}
