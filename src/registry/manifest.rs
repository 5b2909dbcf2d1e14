//! Manifest validation: what a pushed manifest, index or manifest list must satisfy.
//!
//! Bodies are stored byte-exact; parsing only extracts what the registry needs (descriptors,
//! subject, artifact type) and rejects what the distribution spec says to reject.

use std::collections::{BTreeMap, HashMap};

use oci_spec::image::{Descriptor as OciDescriptor, ImageIndex, ImageManifest};
use serde::de::IgnoredAny;
use serde::Deserialize;

use super::digest::Digest;
use super::error::RegistryError;
use super::media_types::{self as mt, essence};

/// Whether a manifest lists blobs or other manifests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ManifestKind {
    /// OCI image manifest or Docker schema 2 manifest.
    Image,
    /// OCI image index or Docker manifest list.
    Index,
}

/// The platform an index entry is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Platform {
    /// Operating system, e.g. `linux`.
    pub os: String,
    /// CPU architecture, e.g. `arm64`.
    pub architecture: String,
    /// Architecture variant, e.g. `v8`.
    pub variant: Option<String>,
}

/// A content descriptor as the registry uses it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Descriptor {
    /// Media type of the referenced content.
    pub media_type: String,
    /// Digest of the referenced content.
    pub digest: Digest,
    /// Size in bytes.
    pub size: u64,
    /// Artifact type (index entries of artifacts).
    pub artifact_type: Option<String>,
    /// Annotations, sorted.
    pub annotations: Option<BTreeMap<String, String>>,
    /// Platform (index entries).
    pub platform: Option<Platform>,
    /// Whether the content may be fetched from elsewhere (`urls`): not required here.
    pub has_urls: bool,
}

/// What the registry keeps from a validated manifest.
#[derive(Debug, Clone)]
pub struct ParsedManifest {
    /// The effective media type (body field, header, or inferred).
    pub media_type: String,
    /// Image or index.
    pub kind: ManifestKind,
    /// Config descriptor (images).
    pub config: Option<Descriptor>,
    /// Layers (images).
    pub layers: Vec<Descriptor>,
    /// Child manifests (indexes).
    pub manifests: Vec<Descriptor>,
    /// The manifest this one refers to (referrers API).
    pub subject: Option<Descriptor>,
    /// Declared artifact type.
    pub artifact_type: Option<String>,
    /// Top-level annotations.
    pub annotations: Option<BTreeMap<String, String>>,
}

impl ParsedManifest {
    /// The artifact type the referrers API reports: `artifactType`, else the config media type.
    pub fn effective_artifact_type(&self) -> Option<&str> {
        self.artifact_type
            .as_deref()
            .or_else(|| self.config.as_ref().map(|c| c.media_type.as_str()))
    }

    /// Blobs that must already be in the repository before this manifest is accepted.
    pub fn required_blobs(&self) -> impl Iterator<Item = &Descriptor> {
        self.config
            .iter()
            .chain(self.layers.iter().filter(|l| !l.has_urls))
    }

    /// Manifests an index points at (may be missing: sparse indexes are allowed).
    pub fn child_manifests(&self) -> impl Iterator<Item = &Descriptor> {
        self.manifests.iter()
    }
}

/// Just enough of the body to pick a schema before the strict parse.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Probe {
    schema_version: Option<serde_json::Value>,
    media_type: Option<String>,
    manifests: Option<IgnoredAny>,
    config: Option<IgnoredAny>,
}

/// Validates a manifest body against the `Content-Type` it was pushed with.
pub fn parse(body: &[u8], content_type: Option<&str>) -> Result<ParsedManifest, RegistryError> {
    let probe: Probe = serde_json::from_slice(body)
        .map_err(|e| RegistryError::manifest(format!("not a JSON object: {e}")))?;
    let header = content_type.map(essence).filter(|h| {
        !h.is_empty() && !matches!(*h, "application/json" | "application/octet-stream")
    });
    let media_type = resolve_media_type(&probe, header)?;
    match probe.schema_version.as_ref().and_then(|v| v.as_u64()) {
        Some(2) => {}
        Some(1) => {
            return Err(RegistryError::manifest(
                "schema 1 manifests are not supported",
            ))
        }
        _ => return Err(RegistryError::manifest("schemaVersion must be 2")),
    }
    if mt::is_index(&media_type) {
        let index: ImageIndex = serde_json::from_slice(body)
            .map_err(|e| RegistryError::manifest(format!("invalid index: {e}")))?;
        parse_index(index, media_type)
    } else {
        let m: ImageManifest = serde_json::from_slice(body)
            .map_err(|e| RegistryError::manifest(format!("invalid manifest: {e}")))?;
        parse_image(m, media_type)
    }
}

fn resolve_media_type(probe: &Probe, header: Option<&str>) -> Result<String, RegistryError> {
    let body = probe.media_type.as_deref();
    if let (Some(b), Some(h)) = (body, header) {
        if b != h {
            return Err(RegistryError::manifest(format!(
                "mediaType {} does not match Content-Type {}",
                super::error::echo(b),
                super::error::echo(h)
            )));
        }
    }
    let chosen = match body.or(header) {
        Some(t) => t.to_owned(),
        None if probe.manifests.is_some() => mt::OCI_INDEX.to_owned(),
        None if probe.config.is_some() => mt::OCI_MANIFEST.to_owned(),
        None => return Err(RegistryError::manifest("cannot tell the manifest type")),
    };
    if chosen == mt::DOCKER_SCHEMA1 || chosen == mt::DOCKER_SCHEMA1_SIGNED {
        return Err(RegistryError::manifest(
            "schema 1 manifests are not supported",
        ));
    }
    if !mt::is_manifest(&chosen) {
        return Err(RegistryError::manifest(format!(
            "unsupported manifest media type {}",
            super::error::echo(&chosen)
        )));
    }
    Ok(chosen)
}

fn parse_image(m: ImageManifest, media_type: String) -> Result<ParsedManifest, RegistryError> {
    if mt::is_index(&media_type) {
        return Err(RegistryError::manifest("an index cannot carry a config"));
    }
    Ok(ParsedManifest {
        media_type,
        kind: ManifestKind::Image,
        config: Some(descriptor(m.config())?),
        layers: m
            .layers()
            .iter()
            .map(descriptor)
            .collect::<Result<_, _>>()?,
        manifests: Vec::new(),
        subject: m.subject().as_ref().map(descriptor).transpose()?,
        artifact_type: m.artifact_type().as_ref().map(|t| t.to_string()),
        annotations: sorted(m.annotations()),
    })
}

fn parse_index(i: ImageIndex, media_type: String) -> Result<ParsedManifest, RegistryError> {
    Ok(ParsedManifest {
        media_type,
        kind: ManifestKind::Index,
        config: None,
        layers: Vec::new(),
        manifests: i
            .manifests()
            .iter()
            .map(descriptor)
            .collect::<Result<_, _>>()?,
        subject: i.subject().as_ref().map(descriptor).transpose()?,
        artifact_type: i.artifact_type().as_ref().map(|t| t.to_string()),
        annotations: sorted(i.annotations()),
    })
}

fn sorted(a: &Option<HashMap<String, String>>) -> Option<BTreeMap<String, String>> {
    a.as_ref().map(|m| m.clone().into_iter().collect())
}

fn descriptor(d: &OciDescriptor) -> Result<Descriptor, RegistryError> {
    let digest: Digest = d
        .digest()
        .to_string()
        .parse()
        .map_err(|_| RegistryError::manifest(format!("unsupported digest {}", d.digest())))?;
    Ok(Descriptor {
        media_type: d.media_type().to_string(),
        digest,
        size: d.size(),
        artifact_type: d.artifact_type().as_ref().map(|t| t.to_string()),
        annotations: sorted(d.annotations()),
        platform: d.platform().as_ref().map(|p| Platform {
            os: p.os().to_string(),
            architecture: p.architecture().to_string(),
            variant: p.variant().clone(),
        }),
        has_urls: d.urls().as_ref().is_some_and(|u| !u.is_empty()),
    })
}

#[cfg(test)]
mod tests;
