//! Mounts under token auth: the challenge asks for the source too, the token service grants both
//! scopes in one token, and automatic mounts link only what the caller may read.

use base64::Engine as _;
use reqwest::blocking::{Client, Response};

use crate::common::{self, oci};
use crate::{token_with, Cred};

/// The `key="value"` parameters of a `WWW-Authenticate: Bearer …` challenge.
fn challenge(r: &Response) -> Vec<(String, String)> {
    let h = r.headers().get("www-authenticate");
    let h = h.and_then(|v| v.to_str().ok()).unwrap_or_default();
    let rest = h
        .strip_prefix("Bearer ")
        .unwrap_or_else(|| panic!("not a challenge: {h}"));
    rest.split("\",")
        .filter_map(|kv| kv.split_once("=\""))
        .map(|(k, v)| (k.to_owned(), v.trim_end_matches('"').to_owned()))
        .collect()
}

fn param<'a>(params: &'a [(String, String)], key: &str) -> &'a str {
    let found = params.iter().find(|(k, _)| k == key);
    found.map(|(_, v)| v.as_str()).unwrap_or_default()
}

/// The `access` claim of a bearer token, as `name:actions` strings.
fn access(jwt: &str) -> Vec<String> {
    let payload = jwt.split('.').nth(1).unwrap_or_default();
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload);
    let v: serde_json::Value = serde_json::from_slice(&raw.unwrap_or_default()).unwrap_or_default();
    let entries = v["access"].as_array().cloned().unwrap_or_default();
    entries
        .iter()
        .map(|e| {
            let actions: Vec<&str> = e["actions"]
                .as_array()
                .map(|a| a.iter().filter_map(|x| x.as_str()).collect())
                .unwrap_or_default();
            format!("{}:{}", e["name"].as_str().unwrap_or(""), actions.join(","))
        })
        .collect()
}

/// Follows a challenge as a client does: the realm with its service and scope, Basic creds.
fn follow(c: &Client, r: &Response, user: &str, pw: &str) -> String {
    let p = challenge(r);
    let got = c
        .get(param(&p, "realm"))
        .query(&[
            ("service", param(&p, "service")),
            ("scope", param(&p, "scope")),
        ])
        .basic_auth(user, Some(pw))
        .send()
        .unwrap_or_else(|e| panic!("token: {e}"));
    assert_eq!(got.status().as_u16(), 200);
    let v: serde_json::Value = got.json().unwrap_or_default();
    v["token"].as_str().unwrap_or_default().to_owned()
}

fn post(c: &Client, reg: &common::Registry, cred: &Cred, path: &str) -> Response {
    cred.apply(c.post(format!("{}{path}", reg.url())))
        .send()
        .unwrap_or_else(|e| panic!("POST {path}: {e}"))
}

fn head_status(c: &Client, reg: &common::Registry, cred: &Cred, path: &str) -> u16 {
    let r = cred.apply(c.head(format!("{}{path}", reg.url()))).send();
    r.map(|r| r.status().as_u16()).unwrap_or(0)
}

#[test]
fn mounts_follow_the_challenge_and_never_cross_read_rights() {
    let reg = common::Registry::start_authenticated(&[]);
    let c = common::http();
    let admin = Cred::Basic("admin".into(), reg.admin_password());
    let pw = token_with(
        &reg,
        "mover",
        &[&["mnt/*", "content/read", "content/write", "metadata/read"]],
    );
    let mover = Cred::Basic("mover".into(), pw.clone());
    let shared = oci::Blob::new(oci::OCI_LAYER, oci::pseudo_random(30_000, 21));
    let secret = oci::Blob::new(oci::OCI_LAYER, oci::pseudo_random(30_000, 22));
    let push = |repo: &str, b: &oci::Blob| {
        let path = format!("/v2/{repo}/blobs/uploads/?digest={}", b.digest);
        let r = admin
            .apply(c.post(format!("{}{path}", reg.url())))
            .body(b.bytes.clone())
            .send()
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(r.status().as_u16(), 201);
    };
    push("mnt/src", &shared);
    push("secret/x", &secret);

    // The challenge for a mount asks for the source as well, in one scope parameter.
    let path = format!(
        "/v2/mnt/dst/blobs/uploads/?mount={}&from=mnt/src",
        shared.digest
    );
    let r = post(&c, &reg, &Cred::Anonymous, &path);
    assert_eq!(r.status().as_u16(), 401);
    assert_eq!(
        param(&challenge(&r), "scope"),
        "repository:mnt/dst:pull,push repository:mnt/src:pull"
    );
    // Following it gets one token for both, and the mount links instead of uploading.
    let token = follow(&c, &r, "mover", &pw);
    let mut granted = access(&token);
    granted.sort();
    assert_eq!(granted, ["mnt/dst:pull,push", "mnt/src:pull"]);
    let r = post(&c, &reg, &Cred::Bearer(token), &path);
    assert_eq!(r.status().as_u16(), 201, "mount through the challenge flow");
    let blob = format!("/v2/mnt/dst/blobs/{}", shared.digest);
    assert_eq!(head_status(&c, &reg, &mover, &blob), 200);

    // A token issued for the target only still mounts what its scope map can read.
    let target_only = crate::bearer(&c, &reg, "mover", &pw, &["repository:mnt/one:pull,push"]);
    let narrow = Cred::Bearer(target_only);
    let path = format!(
        "/v2/mnt/one/blobs/uploads/?mount={}&from=mnt/src",
        shared.digest
    );
    assert_eq!(post(&c, &reg, &narrow, &path).status().as_u16(), 201);

    // Automatic mount (no `from`), with Basic and with a bearer token for the target only.
    let narrow_auto = Cred::Bearer(crate::bearer(
        &c,
        &reg,
        "mover",
        &pw,
        &["repository:mnt/auto2:pull,push"],
    ));
    for (cred, repo) in [(&mover, "mnt/auto"), (&narrow_auto, "mnt/auto2")] {
        let path = format!("/v2/{repo}/blobs/uploads/?mount={}", shared.digest);
        assert_eq!(post(&c, &reg, cred, &path).status().as_u16(), 201, "{repo}");
        let blob = format!("/v2/{repo}/blobs/{}", shared.digest);
        assert_eq!(head_status(&c, &reg, &mover, &blob), 200, "{repo}");
    }

    // Content the caller cannot read is never linked: with `from`, or automatically.
    let narrow_leak = Cred::Bearer(crate::bearer(
        &c,
        &reg,
        "mover",
        &pw,
        &["repository:mnt/leak:pull,push", "repository:secret/x:pull"],
    ));
    for path in [
        format!(
            "/v2/mnt/leak/blobs/uploads/?mount={}&from=secret/x",
            secret.digest
        ),
        format!("/v2/mnt/leak/blobs/uploads/?mount={}", secret.digest),
    ] {
        for cred in [&mover, &narrow_leak] {
            let r = post(&c, &reg, cred, &path);
            assert_eq!(r.status().as_u16(), 202, "{path}: an upload, not a mount");
        }
    }
    let leaked = format!("/v2/mnt/leak/blobs/{}", secret.digest);
    assert_eq!(head_status(&c, &reg, &admin, &leaked), 404);
}

#[test]
fn unknown_references_and_tags_on_push_under_auth() {
    let reg = common::Registry::start_authenticated(&[]);
    let c = common::http();
    let admin = Cred::Basic("admin".into(), reg.admin_password());
    let image = oci::image("amd64", b"pushed with auth on");
    for b in &image.blobs {
        let path = format!("/v2/ref/app/blobs/uploads/?digest={}", b.digest);
        let r = admin.apply(c.post(format!("{}{path}", reg.url())));
        let r = r
            .body(b.bytes.clone())
            .send()
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(r.status().as_u16(), 201);
    }
    let put = admin
        .apply(c.put(format!(
            "{}/v2/ref/app/manifests/{}?tag=x&tag=y",
            reg.url(),
            image.digest
        )))
        .header("Content-Type", oci::OCI_MANIFEST)
        .body(image.bytes.clone())
        .send()
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(put.status().as_u16(), 201);
    let tags: Vec<&str> = put
        .headers()
        .get_all("oci-tag")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    assert_eq!(tags, ["x", "y"]);

    // Pushed by its sha512 digest, it is served under that digest.
    let d512 = oci::sha512(&image.bytes);
    let url = format!("{}/v2/ref/app/manifests/{d512}?tag=z", reg.url());
    let put = admin
        .apply(c.put(url))
        .header("Content-Type", oci::OCI_MANIFEST);
    let put = put
        .body(image.bytes.clone())
        .send()
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(put.status().as_u16(), 201);
    let got = admin.apply(c.get(format!("{}/v2/ref/app/manifests/z", reg.url())));
    let got = got
        .header("Accept", oci::OCI_MANIFEST)
        .send()
        .unwrap_or_else(|e| panic!("{e}"));
    let served = got.headers().get("docker-content-digest").cloned();
    assert_eq!(
        served.as_ref().and_then(|v| v.to_str().ok()),
        Some(d512.as_str())
    );

    let path = "/v2/ref/app/manifests/.INVALID";
    let anon = Cred::Anonymous
        .apply(c.get(format!("{}{path}", reg.url())))
        .send();
    assert_eq!(
        anon.map(|r| r.status().as_u16()).unwrap_or(0),
        401,
        "auth comes first"
    );
    let r = admin.apply(c.get(format!("{}{path}", reg.url()))).send();
    let r = r.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(r.status().as_u16(), 404);
    let body: serde_json::Value = r.json().unwrap_or_default();
    assert_eq!(body["errors"][0]["code"], "MANIFEST_UNKNOWN");
    let r = admin.apply(c.delete(format!("{}{path}", reg.url()))).send();
    assert_eq!(r.map(|r| r.status().as_u16()).unwrap_or(0), 404);
}
