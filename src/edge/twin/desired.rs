//! The desired properties as edgeHub hands them out: a whole twin on GET, numbered patches
//! after. edgeHub's rules (reference §1.5): an offline edgeHub with nothing stored answers an
//! empty twin without `$version` (that is "unknown", not "empty": the last known desired
//! properties stay); a patch whose version is not the next one means patches were missed, so
//! the whole twin is fetched again; `null` in a patch deletes a member.

use serde_json::{Map, Value};

/// Deepest desired document taken (edgeHub's own limit for twins is 10 levels).
const MAX_DEPTH: usize = 10;

/// The desired properties as far as they are known.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Desired {
    /// Their version; `None` until a versioned twin arrived.
    pub version: Option<u64>,
    /// The properties, without `$version` and other `$` members.
    pub doc: Map<String, Value>,
}

/// What a message did to the desired properties.
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    /// They changed: put the new document in force.
    Changed,
    /// Nothing new (same version, or an unversioned empty twin from an offline edgeHub).
    Same,
    /// A patch was missed: GET the whole twin.
    Refetch,
}

/// Why a message from edgeHub could not be used.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Malformed(pub String);

impl Desired {
    /// A GET answer: `{"desired": {…, "$version": n}, "reported": {…}}`.
    pub fn on_twin(&mut self, body: &[u8]) -> Result<Step, Malformed> {
        let twin: Value = parse(body)?;
        let desired = match twin.get("desired") {
            Some(Value::Object(d)) => d,
            _ => return Err(Malformed("the twin has no desired object".into())),
        };
        let Some(version) = version_of(desired)? else {
            // An offline edgeHub's empty twin: keep what is known.
            return Ok(Step::Same);
        };
        if self.version == Some(version) {
            return Ok(Step::Same);
        }
        self.version = Some(version);
        self.doc = strip(desired);
        Ok(Step::Changed)
    }

    /// A desired patch published on `…/desired/?$version=V` with `{…, "$version": V}`.
    pub fn on_patch(&mut self, topic_version: Option<u64>, body: &[u8]) -> Result<Step, Malformed> {
        let patch: Value = parse(body)?;
        let Value::Object(patch) = patch else {
            return Err(Malformed("a desired patch is not an object".into()));
        };
        let version = version_of(&patch)?.or(topic_version);
        match (self.version, version) {
            (Some(v), Some(p)) if p == v + 1 => {
                merge(&mut self.doc, &strip(&patch));
                self.version = Some(p);
                Ok(Step::Changed)
            }
            (Some(v), Some(p)) if p <= v => Ok(Step::Same),
            _ => Ok(Step::Refetch),
        }
    }
}

fn parse(body: &[u8]) -> Result<Value, Malformed> {
    let v: Value = serde_json::from_slice(body).map_err(|e| Malformed(format!("not JSON: {e}")))?;
    if depth(&v) > MAX_DEPTH {
        return Err(Malformed(format!("nested deeper than {MAX_DEPTH} levels")));
    }
    Ok(v)
}

fn depth(v: &Value) -> usize {
    match v {
        Value::Object(m) => 1 + m.values().map(depth).max().unwrap_or(0),
        Value::Array(a) => 1 + a.iter().map(depth).max().unwrap_or(0),
        _ => 0,
    }
}

fn version_of(m: &Map<String, Value>) -> Result<Option<u64>, Malformed> {
    match m.get("$version") {
        None => Ok(None),
        Some(v) => v
            .as_u64()
            .map(Some)
            .ok_or_else(|| Malformed(format!("$version {v} is not a version number"))),
    }
}

/// The members that are properties (`$version`, `$metadata` are the service's).
fn strip(m: &Map<String, Value>) -> Map<String, Value> {
    m.iter()
        .filter(|(k, _)| !k.starts_with('$'))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// Applies a JSON merge patch: objects merge, `null` deletes, anything else replaces.
pub fn merge(base: &mut Map<String, Value>, patch: &Map<String, Value>) {
    for (k, v) in patch {
        match v {
            Value::Null => {
                base.remove(k);
            }
            Value::Object(p) => {
                if let Some(Value::Object(b)) = base.get_mut(k) {
                    merge(b, p);
                } else {
                    let mut fresh = Map::new();
                    merge(&mut fresh, p);
                    base.insert(k.clone(), Value::Object(fresh));
                }
            }
            other => {
                base.insert(k.clone(), other.clone());
            }
        }
    }
}

/// The topic parameter `name` (`$rid`, `$version`) of `…/?a=1&b=2`.
pub fn topic_param<'a>(topic: &'a str, name: &str) -> Option<&'a str> {
    let query = topic.rsplit_once('?')?.1;
    query
        .split('&')
        .filter_map(|p| p.split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_twin_then_contiguous_patches_then_a_gap() {
        let mut d = Desired::default();
        let twin = br#"{"desired":{"mode":"ReadOnly","sync":{"repositories":["a"]},"$version":3},"reported":{"$version":1}}"#;
        assert_eq!(d.on_twin(twin).unwrap(), Step::Changed);
        assert_eq!(d.version, Some(3));
        assert_eq!(d.on_twin(twin).unwrap(), Step::Same);
        let p = br#"{"sync":{"interval":"PT5S"},"mode":null,"$version":4}"#;
        assert_eq!(d.on_patch(Some(4), p).unwrap(), Step::Changed);
        assert_eq!(d.doc.get("mode"), None, "null deletes");
        assert_eq!(d.doc["sync"]["repositories"][0], "a", "objects merge");
        assert_eq!(d.doc["sync"]["interval"], "PT5S");
        assert_eq!(
            d.on_patch(Some(6), br#"{"x":1,"$version":6}"#).unwrap(),
            Step::Refetch,
            "a skipped version means a missed patch"
        );
        assert_eq!(d.version, Some(4), "a gap applies nothing");
        assert_eq!(
            d.on_patch(Some(4), br#"{"$version":4}"#).unwrap(),
            Step::Same
        );
    }

    #[test]
    fn an_offline_empty_twin_keeps_what_is_known() {
        let mut d = Desired {
            version: Some(7),
            doc: serde_json::from_str(r#"{"mode":"ReadWrite"}"#).unwrap(),
        };
        assert_eq!(
            d.on_twin(br#"{"desired":{},"reported":{}}"#).unwrap(),
            Step::Same
        );
        assert_eq!(d.version, Some(7));
        assert_eq!(d.doc["mode"], "ReadWrite");
        let mut fresh = Desired::default();
        assert_eq!(
            fresh.on_patch(Some(1), br#"{"a":1,"$version":1}"#).unwrap(),
            Step::Refetch,
            "a patch before any twin needs the whole twin"
        );
        assert!(d.on_twin(b"not json").is_err());
        assert!(d.on_twin(br#"{"reported":{}}"#).is_err());
    }

    #[test]
    fn topic_parameters() {
        assert_eq!(
            topic_param("$iothub/twin/res/200/?$rid=17", "$rid"),
            Some("17")
        );
        assert_eq!(
            topic_param(
                "$iothub/twin/PATCH/properties/desired/?$version=9",
                "$version"
            ),
            Some("9")
        );
        assert_eq!(
            topic_param("$iothub/twin/res/204/?$rid=1&$version=6", "$version"),
            Some("6")
        );
        assert_eq!(topic_param("$iothub/twin/res/204/", "$rid"), None);
    }
}
