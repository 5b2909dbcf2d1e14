//! Manifest GET/HEAD/PUT/DELETE by tag or digest; bytes are stored and served exactly as pushed.

use actix_web::body::{BodySize, MessageBody};
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};

use super::super::error::{ApiError, ApiResult};
use super::super::payload::read_limited;
use super::super::query::Query;
use super::super::urls::absolute;
use super::super::{blocking, AppState};
use crate::registry::{
    manifest, Algorithm, Digest, ErrorCode, Reference, RegistryError, RepoName, Tag,
};
use crate::storage::StorageError;

/// Largest manifest accepted (the spec's recommended minimum a registry must take).
pub const MAX_MANIFEST_BYTES: usize = 4 << 20;

/// A body of known length that is never sent: HEAD responses report the real size.
pub struct HeadBody(pub u64);

impl MessageBody for HeadBody {
    type Error = std::convert::Infallible;

    fn size(&self) -> BodySize {
        BodySize::Sized(self.0)
    }

    fn poll_next(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<bytes::Bytes, Self::Error>>> {
        std::task::Poll::Ready(None)
    }
}

/// 404 `MANIFEST_UNKNOWN` for a reference that is neither a tag nor a digest.
pub fn unknown(e: RegistryError) -> ApiError {
    let reference = match &e {
        RegistryError::TagInvalid(r) | RegistryError::DigestInvalid(r) => r.clone(),
        other => other.to_string(),
    };
    StorageError::ManifestUnknown(reference).into()
}

/// `GET`/`HEAD /v2/<name>/manifests/<reference>`
pub async fn get(
    state: &web::Data<AppState>,
    name: RepoName,
    reference: Reference,
    with_body: bool,
) -> ApiResult<HttpResponse> {
    let (r, n) = (reference.clone(), name.clone());
    let found = blocking(&state.store, move |s| s.meta.manifest(&n, &r, with_body)).await?;
    let Some(m) = found else {
        if let Some(resp) = super::fetch::manifest(state, &name, &reference, with_body).await? {
            return Ok(resp);
        }
        return Err(StorageError::ManifestUnknown(reference.to_string()).into());
    };
    let mut resp = HttpResponse::Ok();
    resp.insert_header(("Content-Type", m.media_type.as_str()))
        .insert_header(("Docker-Content-Digest", m.digest.as_str()))
        .insert_header(("ETag", format!("\"{}\"", m.digest)));
    Ok(match m.body {
        Some(b) => resp.body(b),
        None => resp.body(HeadBody(m.size)),
    })
}

/// `PUT /v2/<name>/manifests/<reference>[?tag=a&tag=b]`
pub async fn put(
    req: &HttpRequest,
    payload: &mut web::Payload,
    state: &web::Data<AppState>,
    name: RepoName,
    reference: Reference,
    q: &Query,
) -> ApiResult<HttpResponse> {
    let body = read_limited(payload, MAX_MANIFEST_BYTES, state.body.idle).await?;
    let content_type = req
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok());
    let parsed = manifest::parse(&body, content_type)?;
    let mut tags = Vec::new();
    let digest = match &reference {
        Reference::Digest(d) => {
            let actual = Digest::of(d.algorithm(), &body);
            if &actual != d {
                return Err(ApiError::bad_request(
                    ErrorCode::DigestInvalid,
                    format!("the manifest hashes to {actual}, not {d}"),
                ));
            }
            actual
        }
        Reference::Tag(t) => {
            tags.push(t.clone());
            Digest::of(Algorithm::Sha256, &body)
        }
    };
    for t in q.all("tag") {
        let t = Tag::parse(t)?;
        if !tags.contains(&t) {
            tags.push(t);
        }
    }
    let subject = parsed.subject.as_ref().map(|s| s.digest.to_string());
    let (repo, dg, applied) = (name.clone(), digest.clone(), tags.clone());
    blocking(&state.store, move |s| {
        s.meta.put_manifest(&repo, &dg, &parsed, &body, &applied)
    })
    .await?;
    tracing::info!(repository = %name, digest = %digest, "manifest pushed");
    let mut resp = HttpResponse::Created();
    resp.insert_header((
        "Location",
        absolute(req, &format!("/v2/{name}/manifests/{digest}")),
    ))
    .insert_header(("Docker-Content-Digest", digest.as_str()));
    if let Some(s) = subject {
        resp.insert_header(("OCI-Subject", s));
    }
    // One `OCI-Tag` per tag applied tells the client this registry honours `?tag=`.
    for t in &tags {
        resp.append_header(("OCI-Tag", t.as_str()));
    }
    Ok(resp.finish())
}

/// `DELETE /v2/<name>/manifests/<reference>`: a digest removes the manifest and its tags, a tag
/// removes only the tag.
pub async fn delete(
    state: &web::Data<AppState>,
    name: RepoName,
    reference: Reference,
) -> ApiResult<HttpResponse> {
    let r = reference.clone();
    let repo = name.clone();
    blocking(&state.store, move |s| match &r {
        Reference::Digest(d) => s.meta.delete_manifest(&repo, d),
        Reference::Tag(t) => s.meta.delete_tag(&repo, t),
    })
    .await?;
    tracing::info!(repository = %name, reference = %reference, "manifest deleted");
    Ok(HttpResponse::build(StatusCode::ACCEPTED).finish())
}
