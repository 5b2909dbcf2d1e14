//! end-8a/b, end-12, end-13: tags list, catalog, referrers.

use serde_json::Value;

use crate::common::oci;
use crate::{header, Env};

#[test]
fn tags_list_is_sorted_and_paginated() {
    let e = Env::start();
    let img = oci::image("amd64", b"t");
    oci::push(&e.c, &e.reg.url(), "t/app", "seed", &img);
    let mut want: Vec<String> = (0..25).map(|i| format!("v{i}")).collect();
    for t in &want {
        let r = oci::put_manifest(&e.c, &e.reg.url(), "t/app", t, &img);
        assert_eq!(r.status().as_u16(), 201);
    }
    want.push("seed".into());
    want.sort();
    let all: Value = e.get("/v2/t/app/tags/list").json().unwrap();
    assert_eq!(all["name"], "t/app");
    let got: Vec<String> = serde_json::from_value(all["tags"].clone()).unwrap();
    assert_eq!(got, want);

    let mut seen = Vec::new();
    let mut next = Some("/v2/t/app/tags/list?n=10".to_owned());
    let mut pages = 0;
    while let Some(path) = next.take() {
        pages += 1;
        assert!(pages <= 5, "pagination does not end");
        let r = e.get(&path);
        let link = header(&r, "link");
        let v: Value = r.json().unwrap();
        let page: Vec<String> = serde_json::from_value(v["tags"].clone()).unwrap();
        assert!(page.len() <= 10);
        seen.extend(page);
        if !link.is_empty() {
            let start = link.find('<').unwrap() + 1;
            let end = link.find('>').unwrap();
            next = Some(link[start..end].to_owned());
            assert!(link.ends_with("rel=\"next\""));
        }
    }
    assert_eq!(seen, want);
    let r = e.get("/v2/t/app/tags/list?n=3&last=v2");
    let v: Value = r.json().unwrap();
    assert_eq!(v["tags"], serde_json::json!(["v20", "v21", "v22"]));
    let r = e.get("/v2/t/app/tags/list?n=0");
    let v: Value = r.json().unwrap();
    assert_eq!(v["tags"], serde_json::json!([]));
    assert_eq!(e.get("/v2/none/tags/list").status().as_u16(), 404);
}

#[test]
fn catalog_lists_repositories_with_pagination() {
    let e = Env::start();
    let img = oci::image("amd64", b"c");
    let names = ["a/one", "b", "b/two", "c-3"];
    for n in names {
        oci::push(&e.c, &e.reg.url(), n, "v1", &img);
    }
    let v: Value = e.get("/v2/_catalog").json().unwrap();
    assert_eq!(v["repositories"], serde_json::json!(names));
    let r = e.get("/v2/_catalog?n=2");
    assert!(
        header(&r, "link").contains("last=b"),
        "{}",
        header(&r, "link")
    );
    let v: Value = r.json().unwrap();
    assert_eq!(v["repositories"], serde_json::json!(["a/one", "b"]));
    let v: Value = e.get("/v2/_catalog?n=2&last=b").json().unwrap();
    assert_eq!(v["repositories"], serde_json::json!(["b/two", "c-3"]));
}

#[test]
fn referrers_list_filter_and_subject_header() {
    let e = Env::start();
    let img = oci::image("amd64", b"r");
    oci::push(&e.c, &e.reg.url(), "r/app", "v1", &img);
    let empty = e.get(&format!("/v2/r/app/referrers/{}", img.digest));
    assert_eq!(empty.status().as_u16(), 200);
    assert_eq!(header(&empty, "content-type"), oci::OCI_INDEX);
    let v: Value = empty.json().unwrap();
    assert_eq!(v["manifests"], serde_json::json!([]));

    let sig = oci::referrer(&img, "application/vnd.example.sig", b"sig");
    let sbom = oci::referrer(&img, "application/vnd.example.sbom", b"sbom");
    for m in [&sig, &sbom] {
        for b in &m.blobs {
            oci::push_blob(&e.c, &e.reg.url(), "r/app", b);
        }
        let r = oci::put_manifest(&e.c, &e.reg.url(), "r/app", &m.digest, m);
        assert_eq!(r.status().as_u16(), 201);
        assert_eq!(header(&r, "oci-subject"), img.digest);
    }
    let v: Value = e
        .get(&format!("/v2/r/app/referrers/{}", img.digest))
        .json()
        .unwrap();
    let list = v["manifests"].as_array().unwrap();
    assert_eq!(list.len(), 2);
    let sig_entry = list
        .iter()
        .find(|d| d["digest"] == sig.digest.as_str())
        .unwrap();
    assert_eq!(sig_entry["artifactType"], "application/vnd.example.sig");
    assert_eq!(sig_entry["size"], sig.bytes.len());
    assert_eq!(
        sig_entry["annotations"]["org.opencontainers.image.created"],
        "2026-01-01T00:00:00Z"
    );

    let r = e.get(&format!(
        "/v2/r/app/referrers/{}?artifactType=application/vnd.example.sbom",
        img.digest
    ));
    assert_eq!(header(&r, "oci-filters-applied"), "artifactType");
    let v: Value = r.json().unwrap();
    assert_eq!(v["manifests"].as_array().unwrap().len(), 1);
    assert_eq!(v["manifests"][0]["digest"], sbom.digest.as_str());

    // A referrer may arrive before its subject.
    let later = oci::image("arm64", b"later");
    let early = oci::referrer(&later, "application/vnd.example.sig", b"early");
    oci::push(&e.c, &e.reg.url(), "r/app", &early.digest, &early);
    let v: Value = e
        .get(&format!("/v2/r/app/referrers/{}", later.digest))
        .json()
        .unwrap();
    assert_eq!(v["manifests"].as_array().unwrap().len(), 1);
}
