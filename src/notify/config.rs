//! `[[notifications]]` entries of the policy file (or the module twin's `notifications`): where
//! to POST events, which, with what headers, and how patiently.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use serde::Deserialize;

use super::envelope::{EVENTS_V1, EVENTS_V2};
use super::pattern::Pattern;
use crate::config::{parse_duration, ConfigError};
use crate::registry::echo;

/// Time one POST may take when `timeout` is not set.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest pause between retries when `max_backoff` is not set.
pub const DEFAULT_MAX_BACKOFF: Duration = Duration::from_secs(300);
/// Shortest and longest `timeout` accepted.
const MIN_TIMEOUT: Duration = Duration::from_secs(1);
const MAX_TIMEOUT: Duration = Duration::from_secs(300);
/// Shortest `max_backoff` accepted (the first retry waits this long anyway) and the longest.
const MIN_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(86_400);

/// The envelope's media type an endpoint receives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ContentType {
    /// `application/vnd.docker.distribution.events.v1+json` (distribution 2).
    #[default]
    V1,
    /// `application/vnd.docker.distribution.events.v2+json` (distribution 3).
    V2,
}

impl ContentType {
    /// The media type sent as `Content-Type`.
    pub fn as_str(self) -> &'static str {
        match self {
            ContentType::V1 => EVENTS_V1,
            ContentType::V2 => EVENTS_V2,
        }
    }
}

/// One configured notification endpoint.
#[derive(Clone, PartialEq)]
pub struct Endpoint {
    /// Its name: keys its delivery cursor and names it in logs.
    pub name: String,
    /// Where events are POSTed.
    pub url: reqwest::Url,
    /// Which events it receives (any pattern selects).
    pub patterns: Vec<Pattern>,
    /// Extra request headers, by name (often a secret: never logged).
    pub headers: BTreeMap<String, String>,
    /// Time one POST may take.
    pub timeout: Duration,
    /// The envelope's media type.
    pub content_type: ContentType,
    /// Longest pause between retries.
    pub max_backoff: Duration,
}

impl fmt::Debug for Endpoint {
    /// Header values and the URL's query may hold secrets: only their shape is shown.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Endpoint")
            .field("name", &self.name)
            .field("url", &redacted(&self.url))
            .field(
                "patterns",
                &self
                    .patterns
                    .iter()
                    .map(Pattern::as_str)
                    .collect::<Vec<_>>(),
            )
            .field("headers", &self.headers.keys().collect::<Vec<_>>())
            .field("timeout", &self.timeout)
            .field("content_type", &self.content_type)
            .field("max_backoff", &self.max_backoff)
            .finish()
    }
}

impl Endpoint {
    /// Whether any of its patterns selects a change.
    pub fn selects(&self, n: &super::envelope::Notice) -> bool {
        let t = &n.target;
        self.patterns
            .iter()
            .any(|p| p.matches(n.action, &t.repository, t.tag.as_deref(), &t.digest))
    }
}

/// The URL without credentials and query: what may be logged or stored.
fn redacted(url: &reqwest::Url) -> String {
    let host = url.host_str().unwrap_or_default();
    let port = url.port().map(|p| format!(":{p}")).unwrap_or_default();
    format!("{host}{port}{}", url.path().trim_end_matches('/'))
}

/// One entry as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEndpoint {
    name: Option<String>,
    url: Option<String>,
    patterns: Option<Vec<String>>,
    headers: Option<BTreeMap<String, String>>,
    timeout: Option<String>,
    content_type: Option<String>,
    max_backoff: Option<String>,
}

fn bad(key: &'static str, entry: usize, message: impl fmt::Display) -> ConfigError {
    ConfigError::Value {
        key,
        message: format!("entry {entry}: {message}"),
    }
}

/// Reads the `notifications` array (absent: none); the error names the key and the entry
/// (counted from 1).
pub fn parse(value: Option<toml::Value>) -> Result<Vec<Endpoint>, ConfigError> {
    let Some(value) = value else {
        return Ok(Vec::new());
    };
    let toml::Value::Array(items) = value else {
        return Err(ConfigError::Value {
            key: "notifications",
            message: "must be an array of tables ([[notifications]] entries)".into(),
        });
    };
    let mut endpoints: Vec<Endpoint> = Vec::with_capacity(items.len());
    for (i, item) in items.into_iter().enumerate() {
        let n = i + 1;
        let raw: RawEndpoint = item
            .try_into()
            .map_err(|e: toml::de::Error| bad("notifications", n, e.message()))?;
        let e = endpoint(raw, n)?;
        if endpoints.iter().any(|o| o.name == e.name) {
            let m = format!(
                "two endpoints are named '{}' (give each a distinct name)",
                echo(&e.name)
            );
            return Err(bad("notifications.name", n, m));
        }
        endpoints.push(e);
    }
    Ok(endpoints)
}

fn endpoint(raw: RawEndpoint, n: usize) -> Result<Endpoint, ConfigError> {
    let text = raw
        .url
        .ok_or_else(|| bad("notifications.url", n, "is required"))?;
    let url = reqwest::Url::parse(&text)
        .ok()
        .filter(|u| matches!(u.scheme(), "http" | "https") && u.host_str().is_some())
        .ok_or_else(|| bad("notifications.url", n, "is not an http:// or https:// URL"))?;
    let name = match raw.name {
        Some(s) if valid_name(&s) => s,
        Some(s) => {
            let m = format!("'{}' is not 1 to 100 printable characters", echo(&s));
            return Err(bad("notifications.name", n, m));
        }
        None => redacted(&url),
    };
    let patterns = match raw.patterns {
        None => vec![Pattern::any()],
        Some(p) if p.is_empty() => {
            let m = "an empty list would select nothing; leave patterns out for every change";
            return Err(bad("notifications.patterns", n, m));
        }
        Some(p) => p
            .iter()
            .map(|s| Pattern::parse(s).map_err(|e| bad("notifications.patterns", n, e)))
            .collect::<Result<_, _>>()?,
    };
    Ok(Endpoint {
        name,
        url,
        patterns,
        headers: headers(raw.headers.unwrap_or_default(), n)?,
        timeout: duration(
            "notifications.timeout",
            raw.timeout,
            (DEFAULT_TIMEOUT, MIN_TIMEOUT, MAX_TIMEOUT),
            n,
        )?,
        content_type: content_type(raw.content_type, n)?,
        max_backoff: duration(
            "notifications.max_backoff",
            raw.max_backoff,
            (DEFAULT_MAX_BACKOFF, MIN_BACKOFF, MAX_BACKOFF),
            n,
        )?,
    })
}

fn valid_name(s: &str) -> bool {
    (1..=100).contains(&s.chars().count())
        && !s.chars().any(char::is_control)
        && !s.trim().is_empty()
}

fn headers(h: BTreeMap<String, String>, n: usize) -> Result<BTreeMap<String, String>, ConfigError> {
    let key = "notifications.headers";
    for (k, v) in &h {
        let name = reqwest::header::HeaderName::from_bytes(k.as_bytes())
            .map_err(|_| bad(key, n, format!("'{}' is not a header name", echo(k))))?;
        if name == reqwest::header::CONTENT_TYPE {
            return Err(bad(key, n, "Content-Type is set with content_type"));
        }
        // The value is not echoed: it is often a secret.
        reqwest::header::HeaderValue::from_str(v).map_err(|_| {
            bad(
                key,
                n,
                format!("the value of '{}' is not a header value", echo(k)),
            )
        })?;
    }
    Ok(h)
}

fn content_type(value: Option<String>, n: usize) -> Result<ContentType, ConfigError> {
    match value.as_deref() {
        None => Ok(ContentType::default()),
        Some(EVENTS_V1) => Ok(ContentType::V1),
        Some(EVENTS_V2) => Ok(ContentType::V2),
        Some(other) => Err(bad(
            "notifications.content_type",
            n,
            format!("'{}' is not {EVENTS_V1} or {EVENTS_V2}", echo(other)),
        )),
    }
}

/// An optional duration: `(default, min, max)`.
fn duration(
    key: &'static str,
    value: Option<String>,
    (default, min, max): (Duration, Duration, Duration),
    n: usize,
) -> Result<Duration, ConfigError> {
    let Some(s) = value else {
        return Ok(default);
    };
    let d = parse_duration(&s).map_err(|m| bad(key, n, m))?;
    if d < min || d > max {
        let m = format!(
            "'{}' is not between {} and {}",
            echo(&s),
            humantime::format_duration(min),
            humantime::format_duration(max)
        );
        return Err(bad(key, n, m));
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_text(text: &str) -> Result<Vec<Endpoint>, ConfigError> {
        let mut doc: toml::Table = text.parse().unwrap();
        parse(doc.remove("notifications"))
    }

    #[test]
    fn reads_every_key_with_defaults() {
        let e = parse_text(
            r#"
            [[notifications]]
            url = "https://hooks.example.com/registry?code=secret"
            [[notifications]]
            name = "audit"
            url = "http://10.0.0.5:8080/events"
            patterns = ["app:v*:push", "*:delete"]
            headers = { Authorization = "Bearer t0k3n", X-Site = "plant-4" }
            timeout = "PT10S"
            content_type = "application/vnd.docker.distribution.events.v2+json"
            max_backoff = "PT1M"
            "#,
        )
        .unwrap();
        assert_eq!(e.len(), 2);
        assert_eq!(
            e[0].name, "hooks.example.com/registry",
            "derived without the query"
        );
        assert_eq!(e[0].patterns, vec![Pattern::any()]);
        assert_eq!(e[0].timeout, DEFAULT_TIMEOUT);
        assert_eq!(e[0].content_type, ContentType::V1);
        assert_eq!(e[0].max_backoff, DEFAULT_MAX_BACKOFF);
        let a = &e[1];
        assert_eq!(a.name, "audit");
        assert_eq!(a.patterns.len(), 2);
        assert_eq!(a.headers["Authorization"], "Bearer t0k3n");
        assert_eq!(a.timeout, Duration::from_secs(10));
        assert_eq!(a.content_type.as_str(), EVENTS_V2);
        assert_eq!(a.max_backoff, Duration::from_secs(60));
        let shown = format!("{a:?}");
        assert!(
            !shown.contains("t0k3n") && shown.contains("Authorization"),
            "{shown}"
        );
        assert!(!format!("{:?}", e[0]).contains("secret"));
        assert!(parse(None).unwrap().is_empty());
    }

    #[test]
    fn refuses_bad_values_naming_the_key() {
        for (entry, named) in [
            ("name = \"a\"", "notifications.url"),
            ("url = \"ftp://h/x\"", "notifications.url"),
            ("url = \"not a url\"", "notifications.url"),
            (
                "url = \"http://h\"\npatterns = []",
                "notifications.patterns",
            ),
            (
                "url = \"http://h\"\npatterns = [\"app:pull\"]",
                "notifications.patterns",
            ),
            (
                "url = \"http://h\"\ntimeout = \"soon\"",
                "notifications.timeout",
            ),
            (
                "url = \"http://h\"\ntimeout = \"PT1H\"",
                "notifications.timeout",
            ),
            (
                "url = \"http://h\"\nmax_backoff = \"PT0S\"",
                "notifications.max_backoff",
            ),
            (
                "url = \"http://h\"\ncontent_type = \"application/json\"",
                "notifications.content_type",
            ),
            (
                "url = \"http://h\"\nheaders = { \"Bad Name\" = \"x\" }",
                "notifications.headers",
            ),
            (
                "url = \"http://h\"\nheaders = { Content-Type = \"x\" }",
                "notifications.headers",
            ),
            (
                "url = \"http://h\"\nheaders = { X-A = \"line\\nbreak\" }",
                "notifications.headers",
            ),
            ("url = \"http://h\"\nname = \"\"", "notifications.name"),
            ("url = \"http://h\"\nurls = \"x\"", "notifications"),
        ] {
            let e = parse_text(&format!("[[notifications]]\n{entry}\n"))
                .unwrap_err()
                .to_string();
            assert!(e.contains(named) && e.contains("entry 1"), "{entry}: {e}");
        }
        let twice = "[[notifications]]\nurl = \"http://h/a\"\n[[notifications]]\nurl = \"http://h/a?x=1\"\n";
        let e = parse_text(twice).unwrap_err().to_string();
        assert!(
            e.contains("notifications.name") && e.contains("entry 2"),
            "{e}"
        );
        let e = parse_text("notifications = \"http://h\"")
            .unwrap_err()
            .to_string();
        assert!(e.contains("array of tables"), "{e}");
    }
}
