//! Input never panics the parser: truncated, corrupted and spliced bodies are refused with an
//! error, and whatever is accepted can be forwarded and parses again.

// Tests fail loudly: unwrap and expect are the assertion here (`clippy.toml` allows them in
// `#[test]` functions; this covers the helpers beside them).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use openrtb::forward::Outbound;
use proptest::prelude::*;

const EXAMPLE: &str = include_str!("../../examples/banner.json");
const NATIVE: &str = r#"{"id":"n","imp":[{"id":"1","native":{"request":"{\"ver\":\"1.2\",\"assets\":[{\"id\":1,\"title\":{\"len\":90}},{\"id\":2,\"img\":{\"type\":3,\"w\":300,\"h\":250}}]}"}}],"app":{"bundle":"com.example"},"regs":{"gdpr":1},"tmax":80}"#;

fn check(body: &[u8]) {
    if let Ok(req) = openrtb::request::parse(body) {
        let outbound = Outbound::new(body, &req, 2, "USD");
        let mut out = Vec::new();
        outbound.render(17, &mut out);
        let again = openrtb::request::parse(&out);
        assert!(
            again.is_ok(),
            "forwarded body does not parse: {:?}",
            again.err()
        );
        assert_eq!(again.map(|r| r.tmax()).ok().flatten(), Some(17));
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn truncated_bodies_never_panic(cut in 0usize..EXAMPLE.len(), which in 0usize..2) {
        let src = [EXAMPLE, NATIVE][which];
        let cut = cut.min(src.len());
        check(&src.as_bytes()[..cut]);
    }

    #[test]
    fn corrupted_bytes_never_panic(at in 0usize..EXAMPLE.len(), byte in any::<u8>(), which in 0usize..2) {
        let src = [EXAMPLE, NATIVE][which];
        let mut body = src.as_bytes().to_vec();
        let at = at.min(body.len() - 1);
        body[at] = byte;
        check(&body);
    }

    #[test]
    fn spliced_junk_never_panics(at in 0usize..EXAMPLE.len(), junk in proptest::collection::vec(any::<u8>(), 0..16)) {
        let mut body = EXAMPLE.as_bytes().to_vec();
        let at = at.min(body.len());
        body.splice(at..at, junk);
        check(&body);
    }

    #[test]
    fn arbitrary_bytes_never_panic(body in proptest::collection::vec(any::<u8>(), 0..256)) {
        check(&body);
    }
}

#[test]
fn the_samples_themselves_are_valid() {
    for src in [EXAMPLE, NATIVE] {
        openrtb::request::parse(src.as_bytes()).unwrap();
        check(src.as_bytes());
    }
}
