//! Parses `/v2/...` paths into endpoints. Repository names contain slashes, so the endpoint is
//! recognised from the end of the path; every part is validated by the spec's grammar.

use super::error::{ApiError, ApiResult};
use super::query::percent_decode;
use crate::registry::{Digest, ErrorCode, Reference, RegistryError, RepoName};

/// A distribution-API endpoint with its validated parts.
#[derive(Debug)]
pub enum Route {
    /// `/v2/`
    Base,
    /// `/v2/_catalog`
    Catalog,
    /// `/v2/<name>/tags/list`
    Tags(RepoName),
    /// `/v2/<name>/manifests/<reference>`; a reference that is neither a tag nor a digest is
    /// kept as its error, because reads answer it with 404 and only PUT with 400.
    Manifest(RepoName, Result<Reference, RegistryError>),
    /// `/v2/<name>/blobs/<digest>`
    Blob(RepoName, Digest),
    /// `/v2/<name>/blobs/uploads/`
    UploadStart(RepoName),
    /// `/v2/<name>/blobs/uploads/<id>`
    Upload(RepoName, String),
    /// `/v2/<name>/referrers/<digest>`
    Referrers(RepoName, Digest),
}

/// Parses a raw (still percent-encoded) request path.
pub fn parse(raw_path: &str) -> ApiResult<Route> {
    let Some(rest) = raw_path.strip_prefix("/v2") else {
        return Err(ApiError::unsupported("not a registry API path"));
    };
    if rest.is_empty() || rest == "/" {
        return Ok(Route::Base);
    }
    let rest = rest
        .strip_prefix('/')
        .ok_or_else(|| ApiError::unsupported("not a registry API path"))?;
    if rest == "_catalog" {
        return Ok(Route::Catalog);
    }
    let segs: Vec<String> = rest.split('/').map(|s| percent_decode(s, false)).collect();
    let n = segs.len();
    let at = |i: usize, s: &str| n > i && segs[n - 1 - i] == s;
    let name = |tail: usize| -> ApiResult<RepoName> {
        if n <= tail {
            return Err(ApiError::bad_request(
                ErrorCode::NameInvalid,
                "repository name is missing",
            ));
        }
        Ok(RepoName::parse(&segs[..n - tail].join("/"))?)
    };
    let last = &segs[n - 1];
    if at(1, "tags") && at(0, "list") {
        return Ok(Route::Tags(name(2)?));
    }
    if at(2, "blobs") && at(1, "uploads") {
        return Ok(if last.is_empty() {
            Route::UploadStart(name(3)?)
        } else {
            Route::Upload(name(3)?, last.clone())
        });
    }
    if at(1, "blobs") && at(0, "uploads") {
        return Ok(Route::UploadStart(name(2)?));
    }
    if at(1, "manifests") {
        return Ok(Route::Manifest(name(2)?, Reference::parse(last)));
    }
    if at(1, "blobs") {
        let digest = last.parse::<Digest>()?;
        return Ok(Route::Blob(name(2)?, digest));
    }
    if at(1, "referrers") {
        let digest = last.parse::<Digest>()?;
        return Ok(Route::Referrers(name(2)?, digest));
    }
    Err(ApiError::unsupported("no such registry API endpoint"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    #[test]
    fn endpoints() {
        assert!(matches!(parse("/v2/").unwrap(), Route::Base));
        assert!(matches!(parse("/v2").unwrap(), Route::Base));
        assert!(matches!(parse("/v2/_catalog").unwrap(), Route::Catalog));
        assert!(
            matches!(parse("/v2/a/b/tags/list").unwrap(), Route::Tags(n) if n.as_str() == "a/b")
        );
        assert!(matches!(
            parse("/v2/a/blobs/uploads/").unwrap(),
            Route::UploadStart(_)
        ));
        assert!(matches!(
            parse("/v2/a/blobs/uploads").unwrap(),
            Route::UploadStart(_)
        ));
        assert!(
            matches!(parse("/v2/a/blobs/uploads/xyz").unwrap(), Route::Upload(_, id) if id == "xyz")
        );
        assert!(matches!(
            parse(&format!("/v2/a/blobs/{D}")).unwrap(),
            Route::Blob(..)
        ));
        assert!(matches!(
            parse(&format!("/v2/a/referrers/{D}")).unwrap(),
            Route::Referrers(..)
        ));
        assert!(matches!(
            parse("/v2/a/manifests/latest").unwrap(),
            Route::Manifest(..)
        ));
        // A name may itself contain endpoint words.
        match parse("/v2/x/manifests/y/manifests/v1").unwrap() {
            Route::Manifest(n, _) => assert_eq!(n.as_str(), "x/manifests/y"),
            r => panic!("{r:?}"),
        }
        // Colons may arrive encoded.
        assert!(matches!(
            parse(&format!("/v2/a/blobs/{}", D.replace(':', "%3A"))).unwrap(),
            Route::Blob(..)
        ));
    }

    #[test]
    fn hostile_paths() {
        for p in [
            "/v2/../etc/manifests/latest",
            "/v2/%2e%2e/manifests/latest",
            "/v2/a/%2e%2e/b/manifests/latest",
            "/v2/a%2F..%2Fb/manifests/latest",
            "/v2//manifests/latest",
            "/v2/manifests/latest",
            "/v2/a/blobs/sha256:..%2F..%2Fetc",
            "/v2/a/blobs/../../x",
            "/v2/A/tags/list",
            "/v3/a/tags/list",
            "/v2/a/nothing",
        ] {
            assert!(parse(p).is_err(), "{p} must be rejected");
        }
        let long = format!("/v2/{}/tags/list", "a".repeat(300));
        assert!(parse(&long).is_err());
    }

    #[test]
    fn invalid_manifest_references_are_kept_as_errors() {
        for r in ["..", "%2e%2e", ".INVALID", "sha256:zz", "a:b"] {
            match parse(&format!("/v2/a/manifests/{r}")) {
                Ok(Route::Manifest(n, Err(_))) => assert_eq!(n.as_str(), "a"),
                other => panic!("{r}: {other:?}"),
            }
        }
        // The name is still checked first.
        assert!(parse("/v2/A/manifests/.INVALID").is_err());
    }
}
