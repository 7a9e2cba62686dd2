//! JSON text exactly as JavaScript's `JSON.stringify` writes it.
//!
//! node-resque finds jobs by comparing strings (`LREM`, `timestamps:<json>`
//! keys, lock keys), so resq must produce the same bytes it would. serde_json
//! matches `JSON.stringify` for strings, integers and object key order (with
//! `preserve_order`), but writes floats differently (`1.0`, `1e21`); this
//! module writes floats the ECMAScript way (`1`, `1e+21`) through `ryu-js`.

use serde_json::Value;

/// Appends the `JSON.stringify` form of `value` to `out`.
pub fn write_js(out: &mut String, value: &Value) {
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(true) => out.push_str("true"),
        Value::Bool(false) => out.push_str("false"),
        Value::Number(n) => {
            if n.is_i64() || n.is_u64() {
                out.push_str(&n.to_string());
            } else if let Some(f) = n.as_f64() {
                if f.is_finite() {
                    let mut buf = ryu_js::Buffer::new();
                    out.push_str(buf.format_finite(f));
                } else {
                    // JSON.stringify(NaN) and JSON.stringify(Infinity) give null.
                    out.push_str("null");
                }
            } else {
                out.push_str(&n.to_string());
            }
        }
        Value::String(s) => write_js_str(out, s),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_js(out, item);
            }
            out.push(']');
        }
        Value::Object(map) => {
            // JavaScript orders an object's integer-like keys first, ascending,
            // then the other keys in insertion order.
            let mut indexed: Vec<(u32, &String, &Value)> = map
                .iter()
                .filter_map(|(k, v)| array_index(k).map(|i| (i, k, v)))
                .collect();
            indexed.sort_unstable_by_key(|(i, _, _)| *i);
            let named = map.iter().filter(|(k, _)| array_index(k).is_none());
            out.push('{');
            let entries = indexed.into_iter().map(|(_, k, v)| (k, v)).chain(named);
            for (i, (k, v)) in entries.enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_js_str(out, k);
                out.push(':');
                write_js(out, v);
            }
            out.push('}');
        }
    }
}

/// ECMAScript's array index: a canonical decimal below 2^32 − 1 ("0", "7", not "07").
fn array_index(key: &str) -> Option<u32> {
    let canonical = key == "0" || (!key.starts_with('0') && !key.is_empty() && key.bytes().all(|b| b.is_ascii_digit()));
    if !canonical {
        return None;
    }
    key.parse::<u32>().ok().filter(|i| *i < u32::MAX)
}

/// The `JSON.stringify` form of `value`.
pub fn to_js_string(value: &Value) -> String {
    let mut out = String::new();
    write_js(&mut out, value);
    out
}

/// Appends a quoted JSON string. Only `"`, `\` and control characters are
/// escaped (`\b \f \n \r \t`, else `\u00xx` in lower-case hex), as in JavaScript.
pub fn write_js_str(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{08}' => out.push_str("\\b"),
            '\u{0c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                const HEX: &[u8; 16] = b"0123456789abcdef";
                let b = c as u32 as usize;
                out.push_str("\\u00");
                out.push(HEX[b >> 4] as char);
                out.push(HEX[b & 0xf] as char);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn numbers_follow_ecmascript() {
        assert_eq!(
            to_js_string(&json!([1.0, 1.5, 1e21, -0.0, 123456789012345678_u64])),
            "[1,1.5,1e+21,0,123456789012345678]"
        );
        assert_eq!(to_js_string(&json!([0.1, 1e-7, 100.0])), "[0.1,1e-7,100]");
    }

    #[test]
    fn strings_escape_like_javascript() {
        let v = json!(["a\"b\\c\n\u{1}/é\u{2028}"]);
        assert_eq!(to_js_string(&v), "[\"a\\\"b\\\\c\\n\\u0001/é\u{2028}\"]");
        // serde_json agrees for strings, which is why write_js_str may be swapped for it.
        assert_eq!(serde_json::to_string(&v).unwrap(), to_js_string(&v));
    }

    #[test]
    fn integer_like_keys_come_first_as_in_javascript() {
        let v: Value = serde_json::from_str(r#"{"b":1,"10":2,"1":3,"01":4,"-1":5,"4294967295":6,"a":7}"#).unwrap();
        assert_eq!(
            to_js_string(&v),
            r#"{"1":3,"10":2,"b":1,"01":4,"-1":5,"4294967295":6,"a":7}"#
        );
    }

    #[test]
    fn object_keys_keep_insertion_order() {
        let v: Value = serde_json::from_str(r#"{"z":1,"a":{"y":[],"b":null}}"#).unwrap();
        assert_eq!(to_js_string(&v), r#"{"z":1,"a":{"y":[],"b":null}}"#);
    }
}
