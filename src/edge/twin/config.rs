//! What the desired properties configure: the policy file's keys as JSON (`mode`, `sync`, `gc`,
//! `notifications` and `server.log_level`), plus the connection string. Checked here for
//! shape; the policy's values are checked by the policy hub, the connection string by its
//! parser.

use serde_json::{Map, Value};

/// The connection string's member.
pub const CONNECTION_STRING: &str = "connectionString";
/// Top-level members that are policy keys of the file.
const POLICY_KEYS: [&str; 4] = ["mode", "sync", "gc", "notifications"];
/// The `server` keys that may change while the registry runs.
const LIVE_SERVER_KEYS: [&str; 1] = ["log_level"];

/// The desired properties, sorted by where they go.
#[derive(Debug, Clone, PartialEq)]
pub struct DesiredConfig {
    /// `connectionString`, when given.
    pub connection_string: Option<String>,
    /// The policy keys, as a policy file document.
    pub policy: toml::Table,
}

impl DesiredConfig {
    /// Sorts and checks the desired properties; the error names the member at fault.
    pub fn parse(doc: &Map<String, Value>) -> Result<Self, String> {
        let mut policy = Map::new();
        let mut connection_string = None;
        for (k, v) in doc {
            match k.as_str() {
                CONNECTION_STRING => match v {
                    Value::String(s) if !s.trim().is_empty() => {
                        connection_string = Some(s.clone());
                    }
                    _ => return Err(format!("{CONNECTION_STRING} must be a non-empty string")),
                },
                "server" => {
                    let Value::Object(server) = v else {
                        return Err("server must be an object".into());
                    };
                    if let Some(other) = server
                        .keys()
                        .find(|k| !LIVE_SERVER_KEYS.contains(&k.as_str()))
                    {
                        return Err(format!(
                            "server.{other} cannot be set from the module twin (only \
                             server.log_level can change while the registry runs; set the \
                             others in the environment or the configuration file)"
                        ));
                    }
                    policy.insert(k.clone(), v.clone());
                }
                key if POLICY_KEYS.contains(&key) => {
                    policy.insert(k.clone(), v.clone());
                }
                other => {
                    return Err(format!(
                        "unknown desired property '{}' (expected {CONNECTION_STRING}, mode, \
                         sync, gc, notifications or server)",
                        crate::registry::echo(other)
                    ))
                }
            }
        }
        let policy = to_toml(Value::Object(policy))?;
        Ok(DesiredConfig {
            connection_string,
            policy,
        })
    }
}

/// The JSON document as TOML, so the policy file's parser reads it with the same rules.
fn to_toml(v: Value) -> Result<toml::Table, String> {
    if let Some(path) = null_at(&v, String::new()) {
        return Err(format!(
            "{path} is null (a desired property left without a value)"
        ));
    }
    match toml::Value::try_from(v) {
        Ok(toml::Value::Table(t)) => Ok(t),
        Ok(_) => Err("the desired properties are not an object".into()),
        Err(e) => Err(format!("cannot be read as policy keys: {e}")),
    }
}

fn null_at(v: &Value, path: String) -> Option<String> {
    let join = |k: &str| {
        if path.is_empty() {
            k.to_owned()
        } else {
            format!("{path}.{k}")
        }
    };
    match v {
        Value::Null => Some(path),
        Value::Object(m) => m.iter().find_map(|(k, x)| null_at(x, join(k))),
        Value::Array(a) => a
            .iter()
            .enumerate()
            .find_map(|(i, x)| null_at(x, format!("{path}[{i}]"))),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(text: &str) -> Map<String, Value> {
        serde_json::from_str(text).unwrap()
    }

    #[test]
    fn sorts_the_connection_string_from_the_policy() {
        let c = DesiredConfig::parse(&doc(
            r#"{"connectionString":"ConnectedRegistryName=a","mode":"ReadWrite",
                "sync":{"repositories":["hello-world"],"interval":"PT1M","chunk_size_mb":4},
                "server":{"log_level":"Debug"}}"#,
        ))
        .unwrap();
        assert_eq!(
            c.connection_string.as_deref(),
            Some("ConnectedRegistryName=a")
        );
        assert_eq!(c.policy["sync"]["chunk_size_mb"].as_integer(), Some(4));
        assert_eq!(c.policy["server"]["log_level"].as_str(), Some("Debug"));
        assert!(!c.policy.contains_key(CONNECTION_STRING));
    }

    #[test]
    fn notifications_are_policy_keys_read_like_the_files() {
        let c = DesiredConfig::parse(&doc(
            r#"{"notifications":[{"name":"hq","url":"https://hq.example/hook",
                "patterns":["app:*:push"],"headers":{"Authorization":"Bearer x"},
                "timeout":"PT3S"}]}"#,
        ))
        .unwrap();
        let p = crate::sync::policy::SyncPolicy::from_table(&c.policy, "twin").unwrap();
        assert_eq!(p.notifications.len(), 1);
        assert_eq!(p.notifications[0].name, "hq");
        assert_eq!(
            p.notifications[0].timeout,
            std::time::Duration::from_secs(3)
        );
        let bad = DesiredConfig::parse(&doc(r#"{"notifications":[{"url":"hq"}]}"#)).unwrap();
        let e = crate::sync::policy::SyncPolicy::from_table(&bad.policy, "twin").unwrap_err();
        assert!(e.to_string().contains("notifications.url"), "{e}");
    }

    #[test]
    fn gc_is_a_policy_key_read_like_the_files() {
        let c = DesiredConfig::parse(&doc(
            r#"{"gc":{"enabled":false,"grace":"PT12H","untagged_retention":"P7D"}}"#,
        ))
        .unwrap();
        let p = crate::sync::policy::SyncPolicy::from_table(&c.policy, "twin").unwrap();
        assert!(!p.gc.enabled);
        assert_eq!(p.gc.grace, std::time::Duration::from_secs(12 * 3600));
        let bad = DesiredConfig::parse(&doc(r#"{"gc":{"grace":"soon"}}"#)).unwrap();
        let e = crate::sync::policy::SyncPolicy::from_table(&bad.policy, "twin").unwrap_err();
        assert!(e.to_string().contains("gc.grace"), "{e}");
    }

    #[test]
    fn refuses_what_it_cannot_apply_naming_the_member() {
        for (text, named) in [
            (r#"{"sync":{"repositories":"a"},"Sync":{}}"#, "Sync"),
            (r#"{"server":{"listen":"0.0.0.0:1"}}"#, "server.listen"),
            (r#"{"connectionString":5}"#, "connectionString"),
            (r#"{"sync":{"tags":{"include":null}}}"#, "sync.tags.include"),
        ] {
            let e = DesiredConfig::parse(&doc(text)).unwrap_err();
            assert!(e.contains(named), "{text}: {e}");
        }
    }
}
