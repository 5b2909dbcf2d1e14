//! Changes made while the server runs, throttling, anonymous pull and the other switches.

use crate::common::{self, oci};
use crate::{bearer, token_with, wait_status, Cred};

fn get(c: &reqwest::blocking::Client, reg: &common::Registry, cred: &Cred, path: &str) -> u16 {
    cred.apply(c.get(format!("{}{path}", reg.url())))
        .send()
        .map(|r| r.status().as_u16())
        .unwrap_or(0)
}

fn wait_get(
    c: &reqwest::blocking::Client,
    reg: &common::Registry,
    cred: &Cred,
    path: &str,
    want: u16,
) {
    for _ in 0..75 {
        if get(c, reg, cred, path) == want {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    panic!("{path} with {cred:?} never became {want}");
}

#[test]
fn revocation_and_scope_changes_apply_within_seconds() {
    let reg = common::Registry::start_authenticated(&[]);
    let c = common::http();
    let admin = Cred::Basic("admin".into(), reg.admin_password());
    let img = oci::image("amd64", b"live");
    for b in &img.blobs {
        admin
            .apply(c.post(format!(
                "{}/v2/live/app/blobs/uploads/?digest={}",
                reg.url(),
                b.digest
            )))
            .body(b.bytes.clone())
            .send()
            .unwrap_or_else(|e| panic!("{e}"));
    }
    let r = admin
        .apply(c.put(format!("{}/v2/live/app/manifests/v1", reg.url())))
        .header("Content-Type", oci::OCI_MANIFEST)
        .body(img.bytes.clone())
        .send()
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(r.status().as_u16(), 201);

    let pw = token_with(
        &reg,
        "client1",
        &[&["live/*", "content/read", "metadata/read"]],
    );
    let basic = Cred::Basic("client1".into(), pw.clone());
    let bear = Cred::Bearer(bearer(
        &c,
        &reg,
        "client1",
        &pw,
        &["repository:live/app:pull"],
    ));
    assert_eq!(get(&c, &reg, &bear, "/v2/live/app/tags/list"), 200);

    // Narrowing the scope map takes effect for bearer tokens already issued.
    reg.admin(&[
        "scope-map",
        "update",
        "-n",
        "client1",
        "--remove-repository",
        "live/*",
        "metadata/read",
    ]);
    wait_get(&c, &reg, &bear, "/v2/live/app/tags/list", 403);
    assert_eq!(get(&c, &reg, &bear, "/v2/live/app/manifests/v1"), 200);

    // Deleting the token revokes Basic and bearer alike.
    reg.admin(&["token", "delete", "-n", "client1"]);
    wait_status(&reg, &basic, 401);
    wait_get(&c, &reg, &bear, "/v2/live/app/manifests/v1", 401);
    let log = reg.log();
    assert!(!log.contains(&pw), "a password reached the log");
    assert!(
        log.contains("client1"),
        "auth failures are logged with the token name"
    );
}

#[test]
fn rotation_keeps_the_other_password_working() {
    let reg = common::Registry::start_authenticated(&[]);
    let t = token_with(&reg, "rot", &[&["*", "content/read"]]);
    let shown = reg.admin(&["token", "show", "-n", "rot"]);
    assert!(
        shown["credentials"]["passwords"][0]["value"].is_null(),
        "show never prints passwords"
    );
    let created = reg.admin(&[
        "token",
        "credential",
        "generate",
        "-n",
        "rot",
        "--password2",
        "--expiration-in-days",
        "1",
    ]);
    let p2 = created["credentials"]["passwords"][1]["value"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(created["credentials"]["passwords"][1]["expiry"].is_string());
    wait_status(&reg, &Cred::Basic("rot".into(), p2), 200);
    wait_status(&reg, &Cred::Basic("rot".into(), t), 200);
}

#[test]
fn failed_logins_are_throttled_without_locking_out_the_owner() {
    let reg = common::Registry::start_authenticated(&[]);
    let c = common::http();
    let good = Cred::Basic("admin".into(), reg.admin_password());
    assert_eq!(get(&c, &reg, &good, "/v2/"), 200);
    let bad = Cred::Basic("admin".into(), "guess".into());
    let mut statuses = Vec::new();
    for _ in 0..12 {
        statuses.push(get(&c, &reg, &bad, "/v2/"));
    }
    assert!(statuses.contains(&429), "never throttled: {statuses:?}");
    let r = bad
        .apply(c.get(format!("{}/v2/", reg.url())))
        .send()
        .unwrap_or_else(|e| panic!("{e}"));
    if r.status().as_u16() == 429 {
        assert!(r.headers().contains_key("retry-after"));
        let v: serde_json::Value = r.json().unwrap_or_default();
        assert_eq!(v["errors"][0]["code"], "TOOMANYREQUESTS");
    }
    assert_eq!(get(&c, &reg, &good, "/v2/"), 200, "the owner is locked out");
}

#[test]
fn anonymous_pull_refresh_tokens_and_forwarded_realm() {
    let reg = common::Registry::start_authenticated(&["--anonymous-pull"]);
    let c = common::http();
    let admin = reg.admin_password();
    let img = oci::image("amd64", b"anon");
    for b in &img.blobs {
        c.post(format!(
            "{}/v2/pub/app/blobs/uploads/?digest={}",
            reg.url(),
            b.digest
        ))
        .basic_auth("admin", Some(&admin))
        .body(b.bytes.clone())
        .send()
        .unwrap_or_else(|e| panic!("{e}"));
    }
    let put = c
        .put(format!("{}/v2/pub/app/manifests/v1", reg.url()))
        .basic_auth("admin", Some(&admin))
        .header("Content-Type", oci::OCI_MANIFEST)
        .body(img.bytes.clone())
        .send()
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(put.status().as_u16(), 201);
    assert_eq!(
        get(&c, &reg, &Cred::Anonymous, "/v2/pub/app/manifests/v1"),
        200
    );
    let r = c
        .post(format!("{}/v2/pub/app/blobs/uploads/", reg.url()))
        .header("X-Forwarded-Host", "edge.example:8443")
        .header("X-Forwarded-Proto", "https")
        .send()
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(r.status().as_u16(), 401);
    let challenge = r.headers()["www-authenticate"]
        .to_str()
        .unwrap_or_default()
        .to_owned();
    assert!(
        challenge.starts_with("Bearer realm=\"https://edge.example:8443/acr/oauth2/token\",service=\"edge.example:8443\""),
        "{challenge}"
    );
    assert!(
        challenge.contains("scope=\"repository:pub/app:pull,push\""),
        "{challenge}"
    );

    // OAuth2 POST with a refresh token, on the alias path too.
    let form = format!("grant_type=password&username=admin&password={admin}&service={}&scope=repository:pub/app:pull&access_type=offline", reg.host());
    let v: serde_json::Value = c
        .post(format!("{}/oauth2/token", reg.url()))
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body(form)
        .send()
        .and_then(|r| r.json())
        .unwrap_or_else(|e| panic!("{e}"));
    let refresh = v["refresh_token"].as_str().unwrap_or_default().to_owned();
    assert!(!refresh.is_empty(), "{v}");
    let form = format!("grant_type=refresh_token&refresh_token={refresh}&service={}&scope=repository:pub/app:pull,push", reg.host());
    let v: serde_json::Value = c
        .post(format!("{}/acr/oauth2/token", reg.url()))
        .body(form)
        .send()
        .and_then(|r| r.json())
        .unwrap_or_else(|e| panic!("{e}"));
    let token = v["access_token"].as_str().unwrap_or_default().to_owned();
    let r = c
        .post(format!("{}/v2/pub/app/blobs/uploads/", reg.url()))
        .bearer_auth(&token)
        .send()
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(r.status().as_u16(), 202);
}

#[test]
fn login_server_and_no_auth_switches() {
    let reg = common::Registry::start_authenticated_env(
        &[],
        &[("ACR_REGISTRY_LOGIN_SERVER", "registry.example:5000")],
    );
    let c = common::http();
    let admin = Cred::Basic("admin".into(), reg.admin_password());
    let r = admin
        .apply(c.get(format!("{}/v2/", reg.url())))
        .send()
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(r.status().as_u16(), 403);
    assert!(r
        .text()
        .unwrap_or_default()
        .contains("registry.example:5000"));
    let r = admin
        .apply(c.get(format!("{}/v2/", reg.url())))
        .header("X-Forwarded-Host", "registry.example:5000")
        .send()
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(r.status().as_u16(), 200);

    let open = common::Registry::start();
    assert_eq!(get(&c, &open, &Cred::Anonymous, "/v2/_catalog"), 200);
    assert!(open.log().contains("authentication is OFF"));
    assert!(!open.data.join("admin-password").exists());
}

#[test]
fn audit_lines_name_refused_logins_and_denials_without_secrets() {
    let reg = common::Registry::start_authenticated(&[]);
    let pw = token_with(&reg, "puller", &[&["app", "content/read", "metadata/read"]]);
    let c = common::http();
    let wrong = Cred::Basic("puller".into(), "not-the-password-4711".into());
    assert_eq!(get(&c, &reg, &wrong, "/v2/"), 401);
    let puller = Cred::Basic("puller".into(), pw.clone());
    let push = puller
        .apply(c.post(format!("{}/v2/app/blobs/uploads/", reg.url())))
        .send()
        .map(|r| r.status().as_u16())
        .unwrap_or(0);
    assert_eq!(push, 403, "a pull-only token cannot push");
    let forged = Cred::Bearer("eyJhbGciOiJFUzI1NiJ9.e30.c2ln".into());
    assert_eq!(get(&c, &reg, &forged, "/v2/"), 401);

    let log = reg.log();
    let audit: Vec<&str> = log
        .lines()
        .filter(|l| l.contains(" WARN audit event="))
        .collect();
    let has = |event: &str, more: &[&str]| {
        audit.iter().any(|l| {
            l.contains(&format!("event=\"{event}\"")) && more.iter().all(|m| l.contains(m))
        })
    };
    assert!(
        has(
            "authentication_failed",
            &["token=puller", "client=127.0.0.1", "path=/v2/"]
        ),
        "{audit:#?}"
    );
    assert!(
        has(
            "access_denied",
            &["token=puller", "method=POST", "path=/v2/app/blobs/uploads/"]
        ),
        "{audit:#?}"
    );
    assert!(
        has(
            "authentication_failed",
            &["reason=invalid or expired token"]
        ),
        "{audit:#?}"
    );
    assert!(!log.contains("not-the-password-4711") && !log.contains(&pw));
}
