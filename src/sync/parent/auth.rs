//! Authentication against the parent: `WWW-Authenticate` challenges, the Docker token service
//! and a cache of bearer tokens per scope set.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::error::{clip, ParentError};

/// Lifetime assumed when the token service gives no `expires_in`.
const DEFAULT_LIFETIME: Duration = Duration::from_secs(60);
/// Largest token response read.
const TOKEN_BODY_MAX: usize = 1024 * 1024;
/// Most scope sets remembered.
const CACHE_MAX: usize = 1024;

/// One challenge of a `WWW-Authenticate` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge {
    /// The scheme, lowercased (`basic`, `bearer`).
    pub scheme: String,
    /// Parameters in order, names lowercased, values unquoted.
    pub params: Vec<(String, String)>,
}

impl Challenge {
    /// The value of parameter `name` (case-insensitive).
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Splits at commas outside quoted strings (honouring `\"` escapes).
fn split_outside_quotes(s: &str) -> Vec<&str> {
    let (mut parts, mut start, mut quoted, mut escaped) = (Vec::new(), 0, false, false);
    for (i, c) in s.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            ',' if !quoted => {
                parts.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&s[start..]);
    parts
}

/// `name=value` or `name="quoted value"`.
fn param(item: &str) -> Option<(String, String)> {
    let (k, v) = item.split_once('=')?;
    let k = k.trim();
    if k.is_empty() || k.contains(char::is_whitespace) {
        return None;
    }
    let v = v.trim();
    let v = match v.strip_prefix('"') {
        Some(inner) => {
            let mut out = String::new();
            let mut chars = inner.chars();
            while let Some(c) = chars.next() {
                match c {
                    '\\' => out.extend(chars.next()),
                    '"' => break,
                    c => out.push(c),
                }
            }
            out
        }
        None => v.to_owned(),
    };
    Some((k.to_ascii_lowercase(), v))
}

/// Parses every challenge of a `WWW-Authenticate` value; malformed pieces are skipped.
pub fn parse_challenges(header: &str) -> Vec<Challenge> {
    let mut out: Vec<Challenge> = Vec::new();
    for item in split_outside_quotes(header) {
        let item = item.trim();
        if item.is_empty() {
            continue;
        }
        // A new challenge starts with a scheme token not followed by '='.
        let word_end = item
            .find(|c: char| c.is_whitespace() || c == '=')
            .unwrap_or(item.len());
        let after = item[word_end..].trim_start();
        if !after.starts_with('=') {
            let scheme = item[..word_end].to_ascii_lowercase();
            let params = param(after).into_iter().collect();
            out.push(Challenge { scheme, params });
        } else if let (Some(c), Some(p)) = (out.last_mut(), param(item)) {
            c.params.push(p);
        }
    }
    out
}

/// The scopes a repository read needs.
pub fn pull_scope(repo: &str) -> Vec<String> {
    vec![format!("repository:{repo}:pull")]
}

/// The cache key of a scope set: sorted, deduplicated, space-joined.
pub fn scope_key(scopes: &[String]) -> String {
    let mut s: Vec<&str> = scopes.iter().flat_map(|s| s.split_whitespace()).collect();
    s.sort_unstable();
    s.dedup();
    s.join(" ")
}

/// Bearer tokens by scope key, each usable until shortly before it expires.
#[derive(Debug, Default)]
pub struct TokenCache {
    entries: HashMap<String, (String, Instant)>,
}

impl TokenCache {
    /// A token for `key` that is still usable at `now`.
    pub fn get(&self, key: &str, now: Instant) -> Option<String> {
        self.entries
            .get(key)
            .filter(|(_, until)| now < *until)
            .map(|(t, _)| t.clone())
    }

    /// Remembers a token valid for `lifetime` from `now`, minus a safety margin.
    pub fn insert(&mut self, key: &str, token: String, lifetime: Duration, now: Instant) {
        let margin = (lifetime / 5).min(Duration::from_secs(30));
        let usable = lifetime.saturating_sub(margin);
        if usable.is_zero() {
            return;
        }
        if self.entries.len() >= CACHE_MAX {
            self.entries.retain(|_, (_, until)| now < *until);
            if self.entries.len() >= CACHE_MAX {
                self.entries.clear();
            }
        }
        self.entries.insert(key.to_owned(), (token, now + usable));
    }

    /// Drops `token` for `key` (the parent refused it).
    pub fn forget(&mut self, key: &str, token: &str) {
        if self.entries.get(key).is_some_and(|(t, _)| t == token) {
            self.entries.remove(key);
        }
    }
}

/// Where bearer tokens come from, as the parent's challenge said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Realm {
    /// The token service URL.
    pub url: reqwest::Url,
    /// The `service` parameter, when given.
    pub service: Option<String>,
}

/// What the client has learned about the parent's authentication.
#[derive(Debug, Default)]
pub struct State {
    /// The parent asked for Basic: send it pre-emptively.
    pub basic: bool,
    /// The parent's token service, once a Bearer challenge named it.
    pub realm: Option<Realm>,
    /// Tokens by scope key.
    pub tokens: TokenCache,
    /// A request without credentials was answered without a challenge: a body needs no probe
    /// first (a later challenge sets `basic` or `realm`, which take precedence).
    pub open: bool,
}

/// Shared authentication state; `fetching` serialises token requests so that parallel
/// downloads share one token.
#[derive(Debug, Default)]
pub struct AuthState {
    state: Mutex<State>,
    /// Held while a token is requested.
    pub fetching: tokio::sync::Mutex<()>,
}

impl AuthState {
    /// The state (a poisoned lock is still usable: the data is a cache).
    pub fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The bearer realm a challenge names, validated as an http(s) URL.
pub fn realm_of(c: &Challenge) -> Result<Realm, ParentError> {
    let raw = c
        .param("realm")
        .ok_or_else(|| ParentError::Protocol("Bearer challenge without realm".into()))?;
    let url = reqwest::Url::parse(raw)
        .map_err(|e| ParentError::Protocol(format!("bad token realm {:?}: {e}", clip(raw))))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err(ParentError::Protocol(format!(
            "token realm {:?} is not an http(s) URL",
            clip(raw)
        )));
    }
    Ok(Realm {
        url,
        service: c.param("service").map(str::to_owned),
    })
}

/// Whether the sync credentials may go to the token service at `realm` of the parent at `base`:
/// over https, or to the parent's own scheme, host and port (which receives them anyway). A
/// hostile parent could otherwise name a plain-http realm elsewhere and read them off the wire.
pub fn may_send_credentials(base: &reqwest::Url, realm: &reqwest::Url) -> bool {
    realm.scheme() == "https"
        || (realm.scheme() == base.scheme()
            && realm.host_str() == base.host_str()
            && realm.port_or_known_default() == base.port_or_known_default())
}

/// A token and how long it lives, from a token service response body.
pub fn parse_token(body: &[u8], now_unix: i64) -> Result<(String, Duration), ParentError> {
    let v: serde_json::Value = serde_json::from_slice(body)
        .map_err(|e| ParentError::Protocol(format!("token response is not JSON: {e}")))?;
    let token = [&v["token"], &v["access_token"]]
        .into_iter()
        .filter_map(|t| t.as_str())
        .find(|t| !t.is_empty())
        .ok_or_else(|| ParentError::Protocol("token response has no token".into()))?;
    let lifetime = v["expires_in"]
        .as_u64()
        .or_else(|| v["expires_in"].as_f64().map(|f| f.max(0.0) as u64))
        .map(Duration::from_secs)
        .unwrap_or(DEFAULT_LIFETIME);
    // A token issued a while ago (slow link) has less left; ignore ages that look like skew.
    let age = v["issued_at"]
        .as_str()
        .and_then(|s| chrono::DateTime::parse_from_rfc3339(s).ok())
        .map(|t| now_unix.saturating_sub(t.timestamp()))
        .filter(|a| *a > 0 && (*a as u64) < lifetime.as_secs())
        .map(|a| Duration::from_secs(a as u64))
        .unwrap_or_default();
    Ok((token.to_owned(), lifetime.saturating_sub(age)))
}

/// Asks the token service for `scopes`, with Basic credentials when given.
pub async fn fetch_token(
    http: &reqwest::Client,
    realm: &Realm,
    scopes: &[String],
    basic: Option<(&str, &str)>,
) -> Result<(String, Duration), ParentError> {
    let mut url = realm.url.clone();
    {
        let mut q = url.query_pairs_mut();
        if let Some(s) = &realm.service {
            q.append_pair("service", s);
        }
        for s in scopes.iter().flat_map(|s| s.split_whitespace()) {
            q.append_pair("scope", s);
        }
    }
    let mut req = http.get(url);
    if let Some((user, password)) = basic {
        req = req.basic_auth(user, Some(password));
    }
    let resp = req.send().await.map_err(|e| ParentError::transport(&e))?;
    let status = resp.status().as_u16();
    let body = super::request::read_limited(resp, TOKEN_BODY_MAX).await?;
    if status != 200 {
        return Err(match ParentError::from_status(status, &body) {
            ParentError::Unauthorized(m) => {
                ParentError::Unauthorized(format!("token service: {m}"))
            }
            ParentError::NotFound => ParentError::Protocol("token service answered 404".into()),
            e => e,
        });
    }
    parse_token(&body, chrono::Utc::now().timestamp())
}
