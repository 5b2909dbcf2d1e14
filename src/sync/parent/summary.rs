//! A repository's change marker from ACR's repository attributes (`GET /acr/v1/<name>`): a
//! child compares it with the one it saw at its last complete pass to tell whether anything
//! arrived that the tag listing does not show (a signature or SBOM on an unchanged image).

use reqwest::header::{HeaderMap, ETAG};
use reqwest::Method;
use serde_json::Value;

use super::error::ParentError;
use super::request::{checked_repo, read_limited};
use super::tag_list::listing_scope;
use super::ParentClient;

/// Largest attributes body read: ACR's is a few hundred bytes.
const SUMMARY_MAX: usize = 64 * 1024;

impl ParentClient {
    /// An opaque value that changes whenever `repo` changes at the parent: its `ETag` (a
    /// connected-registry parent's is exact), else ACR's last update time with the manifest and
    /// tag counts. `None` when the parent has no such API or does not know the repository.
    pub async fn repository_marker(&self, repo: &str) -> Result<Option<String>, ParentError> {
        let repo = checked_repo(repo)?;
        let url = format!("{}/acr/v1/{repo}", self.inner.base);
        let resp = self
            .send(Method::GET, &url, &listing_scope(repo), HeaderMap::new())
            .await?;
        if resp.status().as_u16() != 200 {
            return Ok(None);
        }
        let etag = resp.headers().get(ETAG).and_then(|v| v.to_str().ok());
        // A weak validator may stay the same across changes; only a strong one is trusted.
        if let Some(tag) = etag.filter(|t| !t.starts_with("W/")) {
            return Ok(Some(format!("etag {tag}")));
        }
        let body = read_limited(resp, SUMMARY_MAX).await?;
        Ok(marker_of(&body))
    }
}

/// The marker in an attributes body, `None` when the body is not one.
fn marker_of(body: &[u8]) -> Option<String> {
    let v: Value = serde_json::from_slice(body).ok()?;
    v.get("imageName")?;
    let (time, manifests, tags) = (
        v.get("lastUpdateTime")?.as_str()?,
        v.get("manifestCount")?.as_u64()?,
        v.get("tagCount")?.as_u64()?,
    );
    Some(format!("{time} {manifests} {tags}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markers_come_from_acrs_attributes_only() {
        let acr =
            br#"{"registry":"r.azurecr.io","imageName":"a","createdTime":"2026-01-01T00:00:00.1Z",
            "lastUpdateTime":"2026-01-02T00:00:00.1234567Z","manifestCount":3,"tagCount":2}"#;
        let m = marker_of(acr);
        assert_eq!(m.as_deref(), Some("2026-01-02T00:00:00.1234567Z 3 2"));
        for not in [
            &br#"{"lastUpdateTime":"x","manifestCount":1,"tagCount":1}"#[..],
            br#"{"imageName":"a","manifestCount":1}"#,
            b"<html>",
        ] {
            assert_eq!(marker_of(not), None);
        }
    }
}
