//! ACR's `GET /acr/v1/<name>/_tags`: tags with digests in name order, paged by `n`/`last` with
//! a `Link` header, authorised like `/v2/<name>/tags/list`, and read by the sync client; and
//! ACR's repository attributes `GET /acr/v1/<name>`, whose `ETag` moves with every change.

use serde_json::Value;

use crate::common::{client_as, http, oci, Registry};
use crate::{error_code, header, Env};
use connected_registry::sync::parent::ParentClient;

/// `(name, digest)` of every entry of a listing page, checking each entry's ACR fields.
fn entries(v: &Value) -> Vec<(String, String)> {
    let tags = v["tags"].as_array().cloned().unwrap_or_default();
    tags.iter()
        .map(|t| {
            for time in ["createdTime", "lastUpdateTime"] {
                let s = t[time].as_str().unwrap_or("");
                assert!(chrono::DateTime::parse_from_rfc3339(s).is_ok(), "{t}");
            }
            assert_eq!(t["signed"], false, "{t}");
            assert_eq!(t["changeableAttributes"]["readEnabled"], true, "{t}");
            let s = |k: &str| t[k].as_str().unwrap_or("").to_owned();
            (s("name"), s("digest"))
        })
        .collect()
}

/// The target of a `rel="next"` Link header, asserting its shape.
fn next_of(link: &str) -> Option<String> {
    if link.is_empty() {
        return None;
    }
    assert!(link.ends_with("; rel=\"next\""), "{link}");
    let (start, end) = (link.find('<')? + 1, link.find('>')?);
    Some(link[start..end].to_owned())
}

#[test]
fn acr_tags_lists_digests_in_pages() {
    let e = Env::start();
    let (one, two) = (oci::image("amd64", b"one"), oci::image("arm64", b"two"));
    oci::push(&e.c, &e.reg.url(), "t/app", "b", &one);
    oci::push(&e.c, &e.reg.url(), "t/app", "a", &two);
    for t in ["c", "d", "e"] {
        let r = oci::put_manifest(&e.c, &e.reg.url(), "t/app", t, &one);
        assert_eq!(r.status().as_u16(), 201);
    }
    let tagged = [
        ("a", &two),
        ("b", &one),
        ("c", &one),
        ("d", &one),
        ("e", &one),
    ];
    let want: Vec<(String, String)> = tagged
        .iter()
        .map(|(t, m)| (t.to_string(), m.digest.clone()))
        .collect();

    let r = e.get("/acr/v1/t/app/_tags");
    assert_eq!(
        (r.status().as_u16(), header(&r, "link")),
        (200, String::new())
    );
    let v: Value = r.json().unwrap_or_default();
    assert_eq!(
        (v["imageName"].as_str(), v["registry"].as_str()),
        (Some("t/app"), Some(e.reg.host().as_str()))
    );
    assert_eq!(entries(&v), want);

    let (mut seen, mut next, mut pages) =
        (Vec::new(), Some("/acr/v1/t/app/_tags?n=2".to_owned()), 0);
    while let Some(path) = next.take() {
        pages += 1;
        assert!(pages <= 3, "paging does not end");
        let r = e.get(&path);
        next = next_of(&header(&r, "link"));
        let page = entries(&r.json().unwrap_or_default());
        assert!(page.len() <= 2);
        seen.extend(page);
    }
    assert_eq!((seen, pages), (want.clone(), 3));
    let r = e.get("/acr/v1/t/app/_tags?n=2&last=b&orderby=timedesc");
    assert_eq!(
        next_of(&header(&r, "link")).as_deref(),
        Some("/acr/v1/t/app/_tags?last=d&n=2")
    );
    assert_eq!(entries(&r.json().unwrap_or_default()), want[2..4].to_vec());

    assert_eq!(e.head("/acr/v1/t/app/_tags").status().as_u16(), 200);
    let bad_n = e.get("/acr/v1/t/app/_tags?n=x");
    assert_eq!(bad_n.status().as_u16(), 400);
    assert_eq!(error_code(bad_n), "PAGINATION_NUMBER_INVALID");
    let unknown = e.get("/acr/v1/none/_tags");
    assert_eq!(unknown.status().as_u16(), 404);
    assert_eq!(error_code(unknown), "NAME_UNKNOWN");
    assert_eq!(error_code(e.get("/acr/v1/A/_tags")), "NAME_INVALID");
    let post =
        e.c.post(e.u("/acr/v1/t/app/_tags"))
            .send()
            .map(|r| r.status().as_u16());
    assert_eq!(post.ok(), Some(405));
}

#[test]
fn acr_tags_is_authorised_like_the_tags_list_and_read_by_the_sync_client() {
    let reg = Registry::start_authenticated(&[]);
    let read = ["content/read", "metadata/read"];
    let write = ["content/read", "metadata/read", "content/write"];
    let pusher = reg.add_token("pusher", "acl/*", &write);
    let other = reg.add_token("other", "else/*", &read);
    let img = oci::image("amd64", b"acl");
    oci::push(
        &client_as("pusher", &pusher),
        &reg.url(),
        "acl/app",
        "v1",
        &img,
    );

    for (who, c, want) in [
        ("anonymous", http(), 401),
        ("other", client_as("other", &other), 403),
        ("pusher", client_as("pusher", &pusher), 200),
    ] {
        let get = |path: &str| {
            c.get(format!("{}{path}", reg.url()))
                .send()
                .unwrap_or_else(|e| panic!("{path}: {e}"))
        };
        let acr = get("/acr/v1/acl/app/_tags");
        let v2 = get("/v2/acl/app/tags/list");
        assert_eq!(
            (acr.status().as_u16(), v2.status().as_u16()),
            (want, want),
            "{who}"
        );
        assert_eq!(
            header(&acr, "www-authenticate"),
            header(&v2, "www-authenticate"),
            "{who}"
        );
    }

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("runtime: {e}"));
    let host = reg.host();
    let client =
        ParentClient::new(&host, "http", "pusher", &pusher, None).unwrap_or_else(|e| panic!("{e}"));
    let got = rt.block_on(client.tag_digests("acl/app"));
    assert_eq!(got, Ok(Some(vec![("v1".to_owned(), img.digest.clone())])));
    assert_eq!(
        rt.block_on(client.tag_digests("acl/none")),
        Ok(Some(Vec::new()))
    );
}

#[test]
fn acr_repository_attributes_count_and_their_etag_moves_with_every_change() {
    let e = Env::start();
    let img = oci::image("amd64", b"attributes");
    oci::push(&e.c, &e.reg.url(), "t/attr", "v1", &img);
    let get = |path: &str| {
        let r = e.get(path);
        let etag = header(&r, "etag");
        (
            r.status().as_u16(),
            etag,
            r.json::<Value>().unwrap_or_default(),
        )
    };
    let (status, first, v) = get("/acr/v1/t/attr");
    assert_eq!(status, 200, "{v}");
    assert_eq!(
        (
            v["imageName"].as_str(),
            v["manifestCount"].as_u64(),
            v["tagCount"].as_u64()
        ),
        (Some("t/attr"), Some(1), Some(1))
    );
    for time in ["createdTime", "lastUpdateTime"] {
        let s = v[time].as_str().unwrap_or("");
        assert!(chrono::DateTime::parse_from_rfc3339(s).is_ok(), "{v}");
    }
    assert!(first.starts_with('"') && first.ends_with('"'), "{first}");
    assert_eq!(
        get("/acr/v1/t/attr").1,
        first,
        "unchanged, the ETag must stay"
    );

    // A signature changes no tag, yet moves the ETag and the manifest count.
    let sig = oci::referrer(&img, "application/vnd.example.sig", b"sig");
    oci::push(&e.c, &e.reg.url(), "t/attr", &sig.digest, &sig);
    let (_, second, v) = get("/acr/v1/t/attr");
    assert_ne!(second, first);
    assert_eq!(
        (v["manifestCount"].as_u64(), v["tagCount"].as_u64()),
        (Some(2), Some(1))
    );
    // So does a tag moved onto a manifest already there.
    let r = oci::put_manifest(&e.c, &e.reg.url(), "t/attr", "v2", &img);
    assert_eq!(r.status().as_u16(), 201);
    let (_, third, v) = get("/acr/v1/t/attr");
    assert!(third != second && third != first, "{third}");
    assert_eq!(v["tagCount"].as_u64(), Some(2));

    assert_eq!(e.head("/acr/v1/t/attr").status().as_u16(), 200);
    let unknown = e.get("/acr/v1/none");
    assert_eq!(unknown.status().as_u16(), 404);
    assert_eq!(error_code(unknown), "NAME_UNKNOWN");
    assert_eq!(error_code(e.get("/acr/v1/A")), "NAME_INVALID");
    // The fixed /acr/v1 paths still win over a repository of the same name.
    assert_eq!(e.get("/acr/v1/_health").status().as_u16(), 200);
    let delete =
        e.c.delete(e.u("/acr/v1/t/attr"))
            .send()
            .map(|r| r.status().as_u16());
    assert_eq!(delete.ok(), Some(405));
    assert_eq!(get("/acr/v1/t/attr").0, 200, "the repository must stay");

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("runtime: {e}"));
    let client =
        ParentClient::new(&e.reg.host(), "http", "", "", None).unwrap_or_else(|e| panic!("{e}"));
    let marker = rt.block_on(client.repository_marker("t/attr"));
    assert_eq!(marker, Ok(Some(format!("etag {third}"))));
    assert_eq!(rt.block_on(client.repository_marker("t/none")), Ok(None));
}
