//! Manifest validation tests, hostile inputs included.

use super::*;
use crate::registry::ErrorCode;

fn d(n: u8) -> String {
    format!("sha256:{}", format!("{n:02x}").repeat(32))
}

fn image(media_type: Option<&str>) -> String {
    let mt = media_type
        .map(|m| format!(r#""mediaType":"{m}","#))
        .unwrap_or_default();
    format!(
        r#"{{"schemaVersion":2,{mt}"config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{}","size":2}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"{}","size":10}}]}}"#,
        d(1),
        d(2)
    )
}

#[test]
fn parses_oci_image_manifest() {
    let m = parse(
        image(Some(mt::OCI_MANIFEST)).as_bytes(),
        Some(mt::OCI_MANIFEST),
    )
    .unwrap();
    assert_eq!(m.kind, ManifestKind::Image);
    assert_eq!(m.required_blobs().count(), 2);
    assert_eq!(
        m.effective_artifact_type(),
        Some("application/vnd.oci.image.config.v1+json")
    );
}

#[test]
fn infers_type_when_absent_and_ignores_generic_headers() {
    let m = parse(image(None).as_bytes(), None).unwrap();
    assert_eq!(m.media_type, mt::OCI_MANIFEST);
    let m = parse(
        image(None).as_bytes(),
        Some("application/json; charset=utf-8"),
    )
    .unwrap();
    assert_eq!(m.media_type, mt::OCI_MANIFEST);
    let m = parse(image(None).as_bytes(), Some(mt::DOCKER_MANIFEST)).unwrap();
    assert_eq!(m.media_type, mt::DOCKER_MANIFEST);
}

#[test]
fn rejects_mismatched_media_type() {
    let e = parse(
        image(Some(mt::OCI_MANIFEST)).as_bytes(),
        Some(mt::DOCKER_MANIFEST),
    );
    assert_eq!(e.unwrap_err().code(), ErrorCode::ManifestInvalid);
    let e = parse(image(Some(mt::OCI_INDEX)).as_bytes(), None);
    assert!(e.is_err(), "an image body under an index media type");
}

#[test]
fn parses_index_with_platforms_and_subject() {
    let body = format!(
        r#"{{"schemaVersion":2,"mediaType":"{}","manifests":[{{"mediaType":"{}","digest":"{}","size":5,"platform":{{"os":"linux","architecture":"arm64","variant":"v8"}}}}],"subject":{{"mediaType":"{}","digest":"{}","size":7}},"artifactType":"application/x.sig"}}"#,
        mt::OCI_INDEX,
        mt::OCI_MANIFEST,
        d(3),
        mt::OCI_MANIFEST,
        d(4)
    );
    let m = parse(body.as_bytes(), Some(mt::OCI_INDEX)).unwrap();
    assert_eq!(m.kind, ManifestKind::Index);
    assert_eq!(m.required_blobs().count(), 0);
    let child = m.child_manifests().next().unwrap();
    let p = child.platform.as_ref().unwrap();
    assert_eq!((p.os.as_str(), p.architecture.as_str()), ("linux", "arm64"));
    assert_eq!(p.variant.as_deref(), Some("v8"));
    assert_eq!(m.subject.unwrap().digest.as_str(), d(4));
    assert_eq!(m.artifact_type.as_deref(), Some("application/x.sig"));
}

#[test]
fn foreign_layers_are_not_required() {
    let body = format!(
        r#"{{"schemaVersion":2,"mediaType":"{}","config":{{"mediaType":"application/vnd.docker.container.image.v1+json","digest":"{}","size":2}},"layers":[{{"mediaType":"{}","digest":"{}","size":10,"urls":["https://example.invalid/l"]}}]}}"#,
        mt::DOCKER_MANIFEST,
        d(1),
        mt::DOCKER_FOREIGN_LAYER,
        d(2)
    );
    let m = parse(body.as_bytes(), Some(mt::DOCKER_MANIFEST)).unwrap();
    assert_eq!(m.required_blobs().count(), 1);
}

#[test]
fn rejects_hostile_manifests() {
    let nested = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
    let bad_digest = image(None).replace(&d(2), "sha256:../../etc/passwd");
    let neg_size = image(None).replace("\"size\":10", "\"size\":-1");
    let cases: Vec<(String, Option<&str>)> = vec![
        (String::new(), None),
        ("null".into(), None),
        ("[]".into(), None),
        ("{".into(), None),
        (nested, None),
        ("{}".into(), None),
        (r#"{"schemaVersion":1}"#.into(), None),
        (
            image(None).replace("\"schemaVersion\":2", "\"schemaVersion\":3"),
            None,
        ),
        (image(None), Some(mt::DOCKER_SCHEMA1_SIGNED)),
        (image(None), Some("application/vnd.example+json")),
        (bad_digest, None),
        (neg_size, None),
        (
            image(None).replace("\"config\"", "\"konfig\""),
            Some(mt::OCI_MANIFEST),
        ),
        ("\u{0}".into(), None),
    ];
    for (body, ct) in cases {
        let r = parse(body.as_bytes(), ct);
        assert!(r.is_err(), "accepted {:?}", &body[..body.len().min(60)]);
        assert_eq!(r.unwrap_err().code(), ErrorCode::ManifestInvalid);
    }
}
