//! Reported properties within edgeHub's limits (reference §1.5.3): names without `.`, `$`, `#`,
//! whitespace or control characters, strings of at most 4096 bytes, at most 10 levels, no
//! `null` in arrays, a patch of at most 32 KiB. Only what changed since the last accepted
//! report is sent.

use serde_json::{Map, Value};

/// Largest reported patch edgeHub accepts.
pub const MAX_PATCH: usize = 32 * 1024;
/// Longest string value edgeHub accepts, in bytes.
const MAX_STRING: usize = 4096;
/// Longest property name edgeHub accepts, in bytes.
const MAX_NAME: usize = 1024;
/// The member whose entries are dropped, oldest first, until a report fits.
const SHEDDABLE: &str = "statusDetails";

/// Makes `doc` acceptable to edgeHub: bad names are rewritten, long strings cut, nulls in
/// arrays dropped, and old status details shed until the whole fits in a patch.
pub fn fit(mut doc: Map<String, Value>) -> Map<String, Value> {
    doc = clean_map(doc);
    while size(&doc) > MAX_PATCH {
        match doc.get_mut(SHEDDABLE) {
            Some(Value::Array(a)) if !a.is_empty() => {
                a.remove(0);
            }
            _ => break,
        }
    }
    doc
}

/// What to send so the reported properties become `now` after `last` (all of `now` when
/// nothing was accepted yet); members gone are deleted with `null`.
pub fn patch(last: Option<&Map<String, Value>>, now: &Map<String, Value>) -> Map<String, Value> {
    let Some(last) = last else {
        return now.clone();
    };
    let mut p: Map<String, Value> = now
        .iter()
        .filter(|(k, v)| last.get(*k) != Some(*v))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    for k in last.keys().filter(|k| !now.contains_key(*k)) {
        p.insert(k.clone(), Value::Null);
    }
    p
}

/// Bytes the document takes as JSON.
pub fn size(doc: &Map<String, Value>) -> usize {
    serde_json::to_vec(doc).map_or(usize::MAX, |v| v.len())
}

fn clean_map(m: Map<String, Value>) -> Map<String, Value> {
    m.into_iter().map(|(k, v)| (name(&k), clean(v))).collect()
}

fn clean(v: Value) -> Value {
    match v {
        Value::String(s) => Value::String(cut(s)),
        Value::Object(m) => Value::Object(clean_map(m)),
        Value::Array(a) => {
            Value::Array(a.into_iter().filter(|x| !x.is_null()).map(clean).collect())
        }
        other => other,
    }
}

/// A property name edgeHub accepts: refused characters become `_`.
fn name(k: &str) -> String {
    let mut n: String = k
        .chars()
        .map(|c| {
            if c.is_whitespace() || c.is_control() || matches!(c, '.' | '$' | '#') {
                '_'
            } else {
                c
            }
        })
        .collect();
    n.truncate(floor(&n, MAX_NAME));
    n
}

fn cut(mut s: String) -> String {
    s.truncate(floor(&s, MAX_STRING));
    s
}

/// The largest char boundary at or below `max`.
fn floor(s: &str, max: usize) -> usize {
    let mut i = max.min(s.len());
    while !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn map(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => unreachable!(),
        }
    }

    #[test]
    fn names_strings_and_arrays_are_made_acceptable() {
        let d = fit(map(
            json!({"a.b": 1, "c $#d": {"e f": [1, null, "x"]}, "s": "é".repeat(3000)}),
        ));
        assert!(d.contains_key("a_b"));
        assert_eq!(d["c___d"]["e_f"], json!([1, "x"]));
        let s = d["s"].as_str().unwrap();
        assert!(s.len() <= 4096 && s.chars().all(|c| c == 'é'));
    }

    #[test]
    fn old_details_are_shed_until_the_report_fits() {
        let details: Vec<Value> = (0..100)
            .map(|i| json!({"code": format!("C{i}"), "description": "x".repeat(1000)}))
            .collect();
        let d = fit(map(
            json!({"connectionState": "Online", "statusDetails": details}),
        ));
        assert!(size(&d) <= MAX_PATCH);
        let kept = d["statusDetails"].as_array().unwrap();
        assert!(!kept.is_empty() && kept.len() < 100);
        assert_eq!(kept.last().unwrap()["code"], "C99", "the newest stay");
    }

    #[test]
    fn only_changes_are_sent() {
        let last = map(json!({"a": 1, "b": {"x": 1}, "gone": true}));
        let now = map(json!({"a": 1, "b": {"x": 2}, "new": "y"}));
        assert_eq!(
            Value::Object(patch(Some(&last), &now)),
            json!({"b": {"x": 2}, "new": "y", "gone": null})
        );
        assert_eq!(patch(None, &now), now);
        assert!(patch(Some(&now), &now).is_empty());
    }
}
