//! The exchange's own node in the supply chain (`source.schain`), appended before the
//! fan-out, following the IAB SupplyChain object's implementation rules: a seller appends its
//! node to the chain it received, keeping `complete` as it was; a seller that received no
//! chain creates one with `complete` = 0 and its node as the only one.

use super::object::{members, rebuild, Keep, Member};
use super::{Edit, Splice};

/// The node the exchange appends.
#[derive(Clone, Copy, Debug)]
pub struct Node<'a> {
    /// The exchange's canonical domain (`[supply_chain] asi`).
    pub asi: &'a str,
    /// The seller's account id with the exchange: the publisher's id.
    pub sid: &'a str,
    /// The request id as the exchange issues it.
    pub rid: &'a str,
}

impl Node<'_> {
    fn write(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(br#"{"asi":"#);
        crate::json::write_str(out, self.asi);
        out.extend_from_slice(br#","sid":"#);
        crate::json::write_str(out, self.sid);
        out.extend_from_slice(br#","rid":"#);
        crate::json::write_str(out, self.rid);
        out.extend_from_slice(br#","hp":1}"#);
    }

    /// A chain of this node alone, `complete` 0: whoever sold before is unknown.
    fn new_chain(&self) -> Vec<u8> {
        let mut out = br#"{"complete":0,"nodes":["#.to_vec();
        self.write(&mut out);
        out.extend_from_slice(br#"],"ver":"1.0"}"#);
        out
    }
}

/// The splice that puts `node` at the end of the request's supply chain, wherever it is:
/// - `source.schain` (2.6) gets the node appended;
/// - `source.ext.schain` (2.5) gets it appended too, so 2.5 and 2.6 readers see one chain;
/// - with only `source.ext.schain`, `source.schain` is created as a copy of the appended chain;
/// - with neither, `source.schain` is created with `complete` 0.
pub(crate) fn splice(body: &[u8], top: &[Member<'_>], node: Node<'_>) -> Splice {
    let Some(source) = top.iter().rev().find(|m| m.key == "source") else {
        let mut member = br#""source":{"schain":"#.to_vec();
        member.extend_from_slice(&node.new_chain());
        member.push(b'}');
        return Splice {
            edits: Vec::new(),
            members: vec![member],
        };
    };
    let inner = match source.is_object() {
        true => members(body, source.text()).unwrap_or_default(),
        // `null`: nothing to keep.
        false => Vec::new(),
    };
    let chain = inner
        .iter()
        .rev()
        .find(|m| m.key == "schain" && m.is_object());
    let ext = inner.iter().rev().find(|m| m.key == "ext" && m.is_object());
    let ext_members = ext
        .and_then(|e| members(body, e.text()))
        .unwrap_or_default();
    let ext_chain = ext_members
        .iter()
        .rev()
        .find(|m| m.key == "schain" && m.is_object());

    let appended = |m: &Member<'_>| append(body, m, node);
    let added = match (chain, ext_chain) {
        (Some(_), _) => Vec::new(),
        (None, Some(old)) => vec![schain_member(appended(old))],
        (None, None) => vec![schain_member(node.new_chain())],
    };
    let mut out = Vec::with_capacity(source.value.len() + 128);
    rebuild(&mut out, body, &inner, &added, |m| match m.key.as_ref() {
        "schain" if chain.is_some_and(|c| c.value == m.value) => Keep::Value(appended(m)),
        "ext" if ext.is_some_and(|e| e.value == m.value) && ext_chain.is_some() => {
            let mut ext_out = Vec::with_capacity(m.value.len() + 64);
            rebuild(&mut ext_out, body, &ext_members, &[], |e| {
                match ext_chain.is_some_and(|c| c.value == e.value) {
                    true => Keep::Value(appended(e)),
                    false => Keep::As,
                }
            });
            Keep::Value(ext_out)
        }
        _ => Keep::As,
    });
    Splice {
        edits: vec![Edit {
            span: source.value,
            text: out,
        }],
        members: Vec::new(),
    }
}

fn schain_member(chain: Vec<u8>) -> Vec<u8> {
    let mut member = br#""schain":"#.to_vec();
    member.extend_from_slice(&chain);
    member
}

/// The chain object `chain` with `node` at the end of its `nodes`; every other member kept.
/// A chain without a readable `nodes` array gets `[node]`.
fn append(body: &[u8], chain: &Member<'_>, node: Node<'_>) -> Vec<u8> {
    let inner = members(body, chain.text()).unwrap_or_default();
    let has_nodes = inner
        .iter()
        .any(|m| m.key == "nodes" && m.text().starts_with('['));
    let mut added = Vec::new();
    if !has_nodes {
        let mut member = br#""nodes":["#.to_vec();
        node.write(&mut member);
        member.push(b']');
        added.push(member);
    }
    let mut out = Vec::with_capacity(chain.value.len() + 96);
    rebuild(&mut out, body, &inner, &added, |m| {
        if m.key != "nodes" {
            return Keep::As;
        }
        let text = m.text();
        let Some(open) = text.strip_suffix(']') else {
            return Keep::Drop;
        };
        let mut nodes = Vec::with_capacity(text.len() + 96);
        nodes.extend_from_slice(open.as_bytes());
        if !open[1..].trim().is_empty() {
            nodes.push(b',');
        }
        node.write(&mut nodes);
        nodes.push(b']');
        Keep::Value(nodes)
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::forward::{object::top_level, Outbound};
    use crate::request::parse;
    use serde_json::{json, Value};

    const NODE: Node<'static> = Node {
        asi: "x.example",
        sid: "pub-1",
        rid: "r",
    };

    fn with_chain(body: &str) -> (String, Value) {
        let req = parse(body.as_bytes()).unwrap();
        let top = top_level(body.as_bytes()).unwrap();
        let splice = splice(body.as_bytes(), &top, NODE);
        let mut out = Vec::new();
        Outbound::with_splice(body.as_bytes(), &req, 2, "USD", &splice).render(9, &mut out);
        let v = serde_json::from_slice(&out).unwrap();
        (String::from_utf8(out).unwrap(), v)
    }

    fn ours() -> Value {
        json!({"asi":"x.example","sid":"pub-1","rid":"r","hp":1})
    }

    #[test]
    fn a_26_chain_gets_the_node_appended_and_keeps_complete() {
        let (text, v) = with_chain(
            r#"{"id":"r","imp":[{"id":"1","banner":{}}],"source":{"tid":"t","schain":{"complete":1,"nodes":[{"asi":"a.com","sid":"1","hp":1}],"ver":"1.0","ext":{"k":1}}}}"#,
        );
        assert_eq!(
            v["source"],
            json!({"tid":"t","schain":{"complete":1,"nodes":[{"asi":"a.com","sid":"1","hp":1},ours()],"ver":"1.0","ext":{"k":1}}})
        );
        assert!(
            text.starts_with(r#"{"tmax":9,"at":2,"cur":["USD"],"id":"r","#),
            "{text}"
        );
    }

    #[test]
    fn a_25_chain_is_appended_in_place_and_copied_to_26() {
        let (_, v) = with_chain(
            r#"{"id":"r","imp":[{"id":"1","banner":{}}],"source":{"ext":{"schain":{"complete":1,"nodes":[ ],"ver":"1.0"},"o":2}}}"#,
        );
        let chain = json!({"complete":1,"nodes":[ours()],"ver":"1.0"});
        assert_eq!(
            v["source"],
            json!({"ext":{"schain":chain,"o":2},"schain":chain})
        );
    }

    #[test]
    fn no_chain_creates_an_incomplete_one() {
        let chain = json!({"complete":0,"nodes":[ours()],"ver":"1.0"});
        let (_, v) = with_chain(r#"{"id":"r","imp":[{"id":"1","banner":{}}],"source":{"fd":1}}"#);
        assert_eq!(v["source"], json!({"fd":1,"schain":chain}));
        let (_, v) = with_chain(r#"{"id":"r","imp":[{"id":"1","banner":{}}]}"#);
        assert_eq!(v["source"], json!({"schain":chain}));
        let (_, v) = with_chain(r#"{"id":"r","imp":[{"id":"1","banner":{}}],"source":null}"#);
        assert_eq!(v["source"], json!({"schain":chain}));
    }

    #[test]
    fn a_chain_without_nodes_gets_them() {
        let (_, v) = with_chain(
            r#"{"id":"r","imp":[{"id":"1","banner":{}}],"source":{"schain":{"complete":1}}}"#,
        );
        assert_eq!(
            v["source"]["schain"],
            json!({"complete":1,"nodes":[ours()]})
        );
    }
}
