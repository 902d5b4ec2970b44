//! An ordered JSON tree and its writer: objects keep their keys in the order they were added (the
//! reference's persistence JSON has a fixed key order; serde_json's maps sort keys), output is
//! byte-for-byte deterministic. Pretty output is Go's `json.MarshalIndent(v, "", "  ")` layout;
//! f32 values are written as Go writes a float32 (shortest round-trip digits).

use crate::error::{Error, Result};
use serde_json::Value;

#[derive(Debug, Clone, PartialEq)]
pub enum Node {
    Null,
    Bool(bool),
    /// A number already formatted (integers, serde_json's f64 text, `f32` below).
    Number(String),
    Str(String),
    Array(Vec<Node>),
    Object(Vec<(String, Node)>),
}

impl Node {
    pub fn int(v: impl Into<i128>) -> Node {
        Node::Number(v.into().to_string())
    }

    /// A float32 as Go's encoding/json writes it ('f' form, 'e' form outside [1e-6, 1e21),
    /// exponent without zero padding); a non-finite value is an error (JSON has none).
    pub fn f32(v: f32, what: &str) -> Result<Node> {
        if !v.is_finite() {
            return Err(Error::Value(format!("{what} is {v}, which JSON cannot hold")));
        }
        let abs = v.abs();
        let text = if abs != 0.0 && !(1e-6..1e21).contains(&abs) {
            let e = format!("{v:e}");
            let (mantissa, exp) = e.split_once('e').expect("{:e} writes an exponent");
            match exp.strip_prefix('-') {
                Some(digits) => format!("{mantissa}e-{digits}"),
                None => format!("{mantissa}e+{exp}"),
            }
        } else {
            format!("{v}")
        };
        Ok(Node::Number(text))
    }

    /// A serde_json value (object keys in serde_json's sorted order).
    pub fn from_value(v: &Value) -> Node {
        match v {
            Value::Null => Node::Null,
            Value::Bool(b) => Node::Bool(*b),
            Value::Number(n) => Node::Number(n.to_string()),
            Value::String(s) => Node::Str(s.clone()),
            Value::Array(a) => Node::Array(a.iter().map(Node::from_value).collect()),
            Value::Object(o) => Node::Object(o.iter().map(|(k, v)| (k.clone(), Node::from_value(v))).collect()),
        }
    }

    /// Go's MarshalIndent layout: two spaces per level, `"key": value`, `[]`/`{}` when empty.
    pub fn pretty(&self) -> String {
        let mut out = String::new();
        self.write(&mut out, Some(0));
        out
    }

    /// No whitespace at all.
    pub fn compact(&self) -> String {
        let mut out = String::new();
        self.write(&mut out, None);
        out
    }

    fn write(&self, out: &mut String, indent: Option<usize>) {
        let newline = |out: &mut String, level: usize| {
            if indent.is_some() {
                out.push('\n');
                out.extend(std::iter::repeat_n("  ", level));
            }
        };
        let level = indent.unwrap_or(0);
        let deeper = indent.map(|l| l + 1);
        match self {
            Node::Null => out.push_str("null"),
            Node::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
            Node::Number(n) => out.push_str(n),
            Node::Str(s) => out.push_str(&serde_json::to_string(s).expect("strings serialise")),
            Node::Array(items) if items.is_empty() => out.push_str("[]"),
            Node::Object(fields) if fields.is_empty() => out.push_str("{}"),
            Node::Array(items) => {
                out.push('[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    newline(out, level + 1);
                    item.write(out, deeper);
                }
                newline(out, level);
                out.push(']');
            }
            Node::Object(fields) => {
                out.push('{');
                for (i, (key, value)) in fields.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    newline(out, level + 1);
                    out.push_str(&serde_json::to_string(key).expect("strings serialise"));
                    out.push_str(if indent.is_some() { ": " } else { ":" });
                    value.write(out, deeper);
                }
                newline(out, level);
                out.push('}');
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_matches_go_marshal_indent() {
        let n = Node::Object(vec![
            ("a".into(), Node::int(1)),
            ("b".into(), Node::Array(vec![Node::Bool(true), Node::Str("x\"y".into())])),
            ("c".into(), Node::Array(vec![])),
            ("d".into(), Node::Object(vec![])),
        ]);
        assert_eq!(n.pretty(), "{\n  \"a\": 1,\n  \"b\": [\n    true,\n    \"x\\\"y\"\n  ],\n  \"c\": [],\n  \"d\": {}\n}");
        assert_eq!(n.compact(), "{\"a\":1,\"b\":[true,\"x\\\"y\"],\"c\":[],\"d\":{}}");
    }

    #[test]
    fn f32_text_is_go_style_and_reads_back_exactly() {
        let text = |v: f32| match Node::f32(v, "x").unwrap() {
            Node::Number(s) => s,
            _ => unreachable!(),
        };
        assert_eq!(text(1.0), "1");
        assert_eq!(text(0.014054817), "0.014054817");
        assert_eq!(text(1e-7), "1e-7");
        assert_eq!(text(-2.5e21), "-2.5e+21");
        assert!(Node::f32(f32::NAN, "scale").is_err());
        // Read back the way the persistence reader does (JSON number → f64 → f32).
        let mut bits = 0x1234_5678u32;
        for _ in 0..200_000 {
            bits = bits.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            let v = f32::from_bits(bits);
            if v.is_finite() {
                let back: f64 = serde_json::from_str(&text(v)).unwrap();
                assert_eq!((back as f32).to_bits(), v.to_bits(), "{v:e}");
            }
        }
    }
}
