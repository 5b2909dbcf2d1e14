//! Fuzzing entry points: one function per target in `fuzz/fuzz_targets/`, each feeding raw bytes
//! to a parser of outside input and asserting only what must hold for every input (no panic,
//! and a parsed value that re-renders parses back to itself).
//!
//! Inputs that carry two parts (a blob size and a `Range`, a content type and a body) put the
//! first on the first line, so the seeds stay readable text.

use std::path::Path;
use std::sync::OnceLock;

use actix_web::http::header::HeaderValue;
use base64::Engine;

use crate::api::auth::basic_credentials;
use crate::api::query::{percent_decode, Query};
use crate::api::route;
use crate::api::v2::{blobs, listing, uploads};
use crate::auth::scope;
use crate::config::connection::ConnectionString;
use crate::edge::twin::config::DesiredConfig;
use crate::edge::twin::desired::{topic_param, Desired, Step};
use crate::hierarchy::wire::{ExchangeRequest, ExchangeResponse};
use crate::registry::manifest::{self, Descriptor};
use crate::registry::{Digest, Reference, RepoName, Tag};
use crate::sync::parent::auth::{parse_challenges, parse_token, realm_of};
use crate::sync::parent::tag_list::{after, parse_page, valid_entry};
use crate::sync::parent::ParentClient;
use crate::sync::policy::hub::Flags;
use crate::sync::policy::{parse_bandwidth, FilePolicy, PolicyHub, SyncPolicy};

/// Splits at the first newline: (first line, rest); no newline gives an empty first line.
fn split_line(data: &[u8]) -> (&[u8], &[u8]) {
    match data.iter().position(|&b| b == b'\n') {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (&[], data),
    }
}

/// The bytes as text, invalid UTF-8 replaced, so every input reaches the parser.
fn text(data: &[u8]) -> String {
    String::from_utf8_lossy(data).into_owned()
}

/// Repository names, tags, references and digests: accepted text re-renders to itself.
pub fn names(data: &[u8]) {
    let s = text(data);
    if let Ok(n) = RepoName::parse(&s) {
        assert_eq!(n.as_str(), s);
        assert!(!s.contains("..") && !s.starts_with('/') && !s.ends_with('/'));
        assert_eq!(RepoName::parse(&n.to_string()).ok(), Some(n));
    }
    if let Ok(t) = Tag::parse(&s) {
        assert_eq!(t.as_str(), s);
        assert!(s.len() <= crate::registry::name::TAG_MAX);
    }
    if let Ok(d) = s.parse::<Digest>() {
        assert_eq!(d.as_str(), s);
        assert_eq!(d.to_string().parse::<Digest>().ok(), Some(d));
    }
    if let Ok(r) = Reference::parse(&s) {
        assert_eq!(r.as_str(), s);
        assert_eq!(Reference::parse(&r.to_string()).ok(), Some(r));
    }
}

/// `/v2/...` request paths.
pub fn route(data: &[u8]) {
    let _ = route::parse(&text(data));
}

/// Query strings and the `n`/`last` pagination read from them.
pub fn query(data: &[u8]) {
    let s = text(data);
    let q = Query::parse(&s);
    if let Ok((n, _last)) = listing::page(&q) {
        assert!(
            n.is_none_or(|n| n <= 10_000),
            "page size {n:?} above the cap"
        );
    }
    // Text without escapes decodes to itself.
    if !s.contains(['%', '+']) {
        assert_eq!(percent_decode(&s, true), s);
    }
}

/// A blob size (first line) and a `Range` header (the rest): a range served lies inside the blob.
pub fn range(data: &[u8]) {
    let (first, rest) = split_line(data);
    let total = text(first)
        .trim()
        .parse::<u64>()
        .unwrap_or(first.len() as u64);
    if let Ok(Some((start, len))) = blobs::parse_range(&text(rest), total) {
        assert!(len >= 1, "empty range {start}+{len} of {total}");
        assert!(
            start.checked_add(len).is_some_and(|end| end <= total),
            "range {start}+{len} outside {total} bytes"
        );
    }
}

/// The upload `Content-Range` header: an accepted range never ends before it starts.
pub fn content_range(data: &[u8]) {
    let Ok(value) = HeaderValue::from_bytes(data) else {
        return;
    };
    let req = actix_web::test::TestRequest::default()
        .insert_header(("content-range", value))
        .to_http_request();
    if let Ok(Some((start, end))) = uploads::content_range(&req) {
        assert!(start <= end, "content range {start}-{end}");
    }
}

/// A content type (first line, empty for none) and a manifest or index body.
pub fn manifest(data: &[u8]) {
    let (first, body) = split_line(data);
    let content_type = text(first);
    let header = Some(content_type.as_str()).filter(|c| !c.is_empty());
    let Ok(m) = manifest::parse(body, header) else {
        return;
    };
    let descriptors = m.config.iter().chain(&m.layers).chain(&m.manifests);
    descriptors
        .chain(&m.subject)
        .for_each(descriptor_round_trips);
    let _ = m.effective_artifact_type();
    assert!(m.required_blobs().count() <= m.layers.len() + 1);
    let _ = m.child_manifests().count();
}

/// A descriptor's digest, extracted from a manifest, is a valid digest in its own right.
fn descriptor_round_trips(d: &Descriptor) {
    assert_eq!(
        d.digest.as_str().parse::<Digest>().ok().as_ref(),
        Some(&d.digest)
    );
}

/// A `WWW-Authenticate` header from the parent: schemes and parameter names come out lowercased.
pub fn www_authenticate(data: &[u8]) {
    for c in parse_challenges(&text(data)) {
        assert_eq!(c.scheme, c.scheme.to_ascii_lowercase());
        for (k, _) in &c.params {
            assert_eq!(*k, k.to_ascii_lowercase());
        }
        if let Ok(realm) = realm_of(&c) {
            assert!(matches!(realm.url.scheme(), "http" | "https"));
        }
    }
}

/// The parent's token service answer: a token taken is never empty.
pub fn parent_token(data: &[u8]) {
    if let Ok((token, _lifetime)) = parse_token(data, 1_700_000_000) {
        assert!(!token.is_empty());
    }
}

/// A token request as the token service reads it (form body or query string) and its scopes.
pub fn token_request(data: &[u8]) {
    let q = Query::parse(&text(data));
    for entry in q.all("scope").flat_map(scope::parse) {
        assert!(
            !entry.kind.is_empty(),
            "scope entry without a type: {entry:?}"
        );
    }
    let _ = (
        q.get("grant_type"),
        q.get("username"),
        q.get("refresh_token"),
    );
}

/// `Authorization: Basic` credentials: what decodes re-encodes to the same pair.
pub fn basic_credentials_header(data: &[u8]) {
    let Some((user, pass)) = basic_credentials(&text(data)) else {
        return;
    };
    assert!(!user.contains(':'));
    let again = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"));
    assert_eq!(
        basic_credentials(&format!("Basic {again}")),
        Some((user, pass))
    );
}

/// The connection string: an accepted one names an http(s) parent with its hostname expanded.
pub fn connection_string(data: &[u8]) {
    let Ok(c) = ConnectionString::parse(&text(data), Some("parent.example"), None) else {
        return;
    };
    assert!(matches!(c.protocol.as_str(), "http" | "https"));
    assert!(!c.parent_endpoint.contains("$IOTEDGE_PARENTHOSTNAME"));
    assert!(c.parent_url().starts_with(&format!("{}://", c.protocol)));
}

/// The sync policy file (TOML) and the bandwidth text it holds.
pub fn sync_policy(data: &[u8]) {
    let s = text(data);
    if let Ok(p) = SyncPolicy::from_toml_str(&s, Path::new("fuzz-policy.toml")) {
        let _ = p.tag_selected("latest");
        let _ = p.platform_selected("linux", "arm64", Some("v8"));
        let _ = p.includes_repository("library/alpine");
    }
    let _ = parse_bandwidth(&s);
}

/// The policy's other sources: the module twin's desired properties (first line, JSON) laid over
/// a policy file (the rest). A file's policy re-validates from its document (what the hub does
/// when a twin is laid over it), and a twin the hub refuses changes nothing.
pub fn policy_layers(data: &[u8]) {
    let (first, rest) = split_line(data);
    let file = match FilePolicy::parse(&text(rest), Path::new("fuzz-policy.toml")) {
        Ok(file) => {
            let again = SyncPolicy::from_table(&file.doc, "fuzz document");
            assert_eq!(again.as_ref().ok(), Some(&file.policy), "{again:?}");
            file
        }
        Err(_) => FilePolicy::default(),
    };
    let Ok(serde_json::Value::Object(doc)) = serde_json::from_slice(first) else {
        return;
    };
    let Ok(desired) = DesiredConfig::parse(&doc) else {
        return;
    };
    let hub = PolicyHub::new(file.clone(), Flags::default());
    if hub.set_twin(Some(desired.policy)).is_err() {
        assert_eq!(
            *hub.current(),
            file.policy,
            "a refused twin changed the policy"
        );
    }
    // Without the twin, the file's policy is back in force.
    assert!(hub.set_twin(None).is_ok());
    assert_eq!(*hub.current(), file.policy);
}

/// The parent these fuzz inputs come from; `None` if the client cannot be built at all.
fn acr_parent() -> Option<&'static ParentClient> {
    static PARENT: OnceLock<Option<ParentClient>> = OnceLock::new();
    PARENT
        .get_or_init(|| ParentClient::new("parent.example:8443", "https", "u", "p", None).ok())
        .as_ref()
}

/// A page of ACR's `_tags` listing as the child reads it: a `Link` header (first line) and the
/// body (the rest). A next page stays on the parent's origin; listed entries kept are valid tags
/// and digests as written; the position after the last name re-reads as that name.
pub fn acr_tags(data: &[u8]) {
    let Some(parent) = acr_parent() else {
        return;
    };
    let origin = reqwest::Url::parse(parent.base_url()).map(|u| u.origin());
    let base = format!("{}/acr/v1/team/app/_tags", parent.base_url());
    let current = format!("{base}?n=1000");
    let (first, body) = split_line(data);
    if let Ok(link) = reqwest::header::HeaderValue::from_bytes(first) {
        let mut headers = reqwest::header::HeaderMap::new();
        headers.insert(reqwest::header::LINK, link);
        if let Ok(Some(next)) = parent.next_link(&current, &headers) {
            let url = reqwest::Url::parse(&next);
            assert_eq!(url.map(|u| u.origin()).ok(), origin.clone().ok(), "{next}");
        }
    }
    let Some(entries) = parse_page(body) else {
        return;
    };
    for e in &entries {
        if let Some((tag, digest)) = valid_entry("team/app", e) {
            assert_eq!(e["name"].as_str(), Some(tag.as_str()));
            assert_eq!(Tag::parse(&tag).ok().map(|t| t.to_string()), Some(tag));
            let d = digest.parse::<Digest>().ok();
            assert_eq!(d.map(|d| d.to_string()), Some(digest));
        }
    }
    let Some(last) = entries.last().and_then(|e| e["name"].as_str()) else {
        return;
    };
    if let Ok(next) = after(&base, last).map(|u| reqwest::Url::parse(&u)) {
        let next = next.unwrap_or_else(|e| panic!("position after {last:?}: {e}"));
        assert_eq!(Ok(next.origin()), origin);
        let read = next
            .query_pairs()
            .find(|(k, _)| k == "last")
            .map(|(_, v)| v);
        assert_eq!(read.as_deref(), Some(last));
    }
}

/// Module twin JSON: a topic (first line) and a body read as a whole twin, then as a patch.
pub fn twin(data: &[u8]) {
    let (first, body) = split_line(data);
    let topic = text(first);
    let topic_version = topic_param(&topic, "$version").and_then(|v| v.parse().ok());
    let mut desired = Desired::default();
    if let Ok(Step::Changed) = desired.on_twin(body) {
        assert!(desired.version.is_some());
        assert!(desired.doc.keys().all(|k| !k.starts_with('$')));
    }
    let before = desired.version;
    if let Ok(step) = desired.on_patch(topic_version, body) {
        // Only a patch that applies moves the version, and only forwards.
        match step {
            Step::Changed => assert!(desired.version > before),
            Step::Same | Step::Refetch => assert_eq!(desired.version, before),
        }
    }
}

/// The control plane's exchange messages: what deserialises serialises back to the same value.
pub fn wire(data: &[u8]) {
    if let Ok(req) = serde_json::from_slice::<ExchangeRequest>(data) {
        assert_eq!(json_round_trip(&req).as_ref(), Some(&req));
    }
    if let Ok(resp) = serde_json::from_slice::<ExchangeResponse>(data) {
        assert_eq!(json_round_trip(&resp).as_ref(), Some(&resp));
    }
}

/// Serialises and reads back a value.
fn json_round_trip<T: serde::Serialize + serde::de::DeserializeOwned>(v: &T) -> Option<T> {
    let bytes = serde_json::to_vec(v).ok()?;
    serde_json::from_slice(&bytes).ok()
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    /// A fuzz target's entry point.
    type Target = fn(&[u8]);

    /// Every target by the name of its file in `fuzz/fuzz_targets/`.
    const TARGETS: &[(&str, Target)] = &[
        ("names", super::names),
        ("route", super::route),
        ("query", super::query),
        ("range", super::range),
        ("content_range", super::content_range),
        ("manifest", super::manifest),
        ("www_authenticate", super::www_authenticate),
        ("parent_token", super::parent_token),
        ("token_request", super::token_request),
        ("basic_credentials", super::basic_credentials_header),
        ("connection_string", super::connection_string),
        ("sync_policy", super::sync_policy),
        ("twin", super::twin),
        ("wire", super::wire),
        ("policy_layers", super::policy_layers),
        ("acr_tags", super::acr_tags),
    ];

    fn fuzz_dir() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fuzz")
    }

    /// The files directly in `dir` (none when it does not exist).
    fn files_in(dir: &std::path::Path) -> Vec<PathBuf> {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return Vec::new();
        };
        let mut files: Vec<PathBuf> = entries
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.is_file() && p.file_name().is_some_and(|n| n != "README.md"))
            .collect();
        files.sort();
        files
    }

    #[test]
    fn every_seed_and_past_crash_runs_clean() {
        for (name, run) in TARGETS {
            let seeds = files_in(&fuzz_dir().join("seeds").join(name));
            assert!(!seeds.is_empty(), "target {name} has no seeds");
            let crashes = files_in(&fuzz_dir().join("regressions").join(name));
            for path in seeds.iter().chain(&crashes) {
                let data = std::fs::read(path)
                    .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
                let outcome = std::panic::catch_unwind(|| run(&data));
                assert!(outcome.is_ok(), "{name} panicked on {}", path.display());
            }
        }
    }

    #[test]
    fn every_fuzz_target_file_has_a_function() {
        for path in files_in(&fuzz_dir().join("fuzz_targets")) {
            let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or("");
            assert!(
                TARGETS.iter().any(|(name, _)| *name == stem),
                "fuzz target {stem} is not run by the seed test"
            );
        }
        assert_eq!(
            files_in(&fuzz_dir().join("fuzz_targets")).len(),
            TARGETS.len(),
            "a target without a fuzz_targets file"
        );
    }
}
