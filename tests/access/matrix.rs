//! Every endpoint class × every permission set × both modes × every kind of credential.

use reqwest::Method;

use crate::common::{self, oci};
use crate::{bearer, token_with, Cred};

/// What an endpoint needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Need {
    Read,
    Write,
    Delete,
    Meta,
    Catalog,
}

/// Permission sets, as scope-map lines.
const SETS: [(&str, &[&[&str]]); 6] = [
    ("reader", &[&["t/app", "content/read"]]),
    ("meta", &[&["t/app", "metadata/read"]]),
    ("writer", &[&["t/*", "content/read", "content/write"]]),
    ("deleter", &[&["t/app", "content/delete"]]),
    (
        "everything",
        &[&[
            "*",
            "content/read",
            "content/write",
            "content/delete",
            "metadata/read",
            "metadata/write",
        ]],
    ),
    (
        "elsewhere",
        &[&[
            "other/*",
            "content/read",
            "content/write",
            "content/delete",
            "metadata/read",
        ]],
    ),
];

fn allows(set: &str, need: Need) -> bool {
    match set {
        "reader" => need == Need::Read,
        "meta" => matches!(need, Need::Meta | Need::Catalog),
        "writer" => matches!(need, Need::Read | Need::Write),
        "deleter" => need == Need::Delete,
        "everything" => true,
        "elsewhere" => need == Need::Catalog,
        _ => false,
    }
}

struct Endpoint {
    need: Need,
    method: Method,
    path: String,
    body: Option<(String, Vec<u8>)>,
    ok: u16,
}

fn endpoints(img: &oci::Manifest) -> Vec<Endpoint> {
    let e = |need, method, path: String, ok| Endpoint {
        need,
        method,
        path,
        body: None,
        ok,
    };
    vec![
        e(
            Need::Read,
            Method::GET,
            "/v2/t/app/manifests/v1".into(),
            200,
        ),
        e(
            Need::Read,
            Method::HEAD,
            format!("/v2/t/app/blobs/{}", img.blobs[1].digest),
            200,
        ),
        e(
            Need::Write,
            Method::POST,
            "/v2/t/app/blobs/uploads/".into(),
            202,
        ),
        Endpoint {
            need: Need::Write,
            method: Method::PUT,
            path: "/v2/t/app/manifests/pushed".into(),
            body: Some((img.media_type.clone(), img.bytes.clone())),
            ok: 201,
        },
        e(
            Need::Delete,
            Method::DELETE,
            "/v2/t/app/manifests/no-such-tag".into(),
            404,
        ),
        e(Need::Meta, Method::GET, "/v2/t/app/tags/list".into(), 200),
        e(
            Need::Meta,
            Method::GET,
            format!("/v2/t/app/referrers/{}", img.digest),
            200,
        ),
        e(Need::Catalog, Method::GET, "/v2/_catalog".into(), 200),
    ]
}

/// Credential kinds for one permission set: (label, credential, whether it is valid).
fn creds(reg: &common::Registry, set: &str, pw: &str) -> Vec<(String, Cred, bool)> {
    let c = common::http();
    let scopes = ["repository:t/app:pull,push,delete", "registry:catalog:*"];
    vec![
        ("basic".into(), Cred::Basic(set.into(), pw.into()), true),
        (
            "bearer".into(),
            Cred::Bearer(bearer(&c, reg, set, pw, &scopes)),
            true,
        ),
        (
            "wrong-password".into(),
            Cred::Basic(set.into(), "x".repeat(43)),
            false,
        ),
    ]
}

fn expected(read_only: bool, valid: bool, set: &str, ep: &Endpoint) -> u16 {
    if read_only && matches!(ep.need, Need::Write | Need::Delete) {
        return 405;
    }
    if !valid {
        return 401;
    }
    if allows(set, ep.need) {
        ep.ok
    } else {
        403
    }
}

fn run_table(
    reg: &common::Registry,
    read_only: bool,
    passwords: &[(String, String)],
    extra: &[(String, Cred)],
) {
    let c = common::http();
    let img = oci::image("amd64", b"matrix");
    let mut failures = Vec::new();
    let mut rows: Vec<(String, String, Cred, bool)> = Vec::new();
    for (set, pw) in passwords {
        for (label, cred, valid) in creds(reg, set, pw) {
            rows.push((set.clone(), label, cred, valid));
        }
    }
    for (label, cred) in extra {
        rows.push(("everything".into(), label.clone(), cred.clone(), false));
    }
    for (set, label, cred, valid) in &rows {
        for ep in endpoints(&img) {
            let mut rq =
                cred.apply(c.request(ep.method.clone(), format!("{}{}", reg.url(), ep.path)));
            if let Some((ct, body)) = &ep.body {
                rq = rq.header("Content-Type", ct.clone()).body(body.clone());
            }
            let r = rq.send().unwrap_or_else(|e| panic!("{e}"));
            let got = r.status().as_u16();
            let want = expected(read_only, *valid, set, &ep);
            if got == 401 && !r.headers().contains_key("www-authenticate") {
                failures.push(format!(
                    "{set}/{label} {} {}: 401 without a challenge",
                    ep.method, ep.path
                ));
            }
            // Repeated bad passwords from this one client are paused (429): also a refusal.
            let throttled = got == 429 && want == 401 && matches!(cred, Cred::Basic(..));
            if got != want && !throttled {
                failures.push(format!(
                    "{set}/{label} {} {}: got {got}, want {want}",
                    ep.method, ep.path
                ));
            } else if ep.need == Need::Catalog && got == 200 {
                let v: serde_json::Value = r.json().unwrap_or_default();
                let listed = v["repositories"]
                    .as_array()
                    .is_some_and(|a| a.iter().any(|x| x == "t/app"));
                let may = set != "elsewhere";
                if listed != may {
                    failures.push(format!("{set}/{label}: catalog lists t/app = {listed}"));
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} mismatches:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

fn seed(reg: &common::Registry) -> Vec<(String, String)> {
    let c = common::http();
    let admin = reg.admin_password();
    let img = oci::image("amd64", b"matrix");
    for b in &img.blobs {
        let r = c
            .post(format!(
                "{}/v2/t/app/blobs/uploads/?digest={}",
                reg.url(),
                b.digest
            ))
            .basic_auth("admin", Some(&admin))
            .body(b.bytes.clone())
            .send()
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(r.status().as_u16(), 201);
    }
    let r = c
        .put(format!("{}/v2/t/app/manifests/v1", reg.url()))
        .basic_auth("admin", Some(&admin))
        .header("Content-Type", oci::OCI_MANIFEST)
        .body(img.bytes.clone())
        .send()
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(r.status().as_u16(), 201);
    SETS.iter()
        .map(|(name, grants)| (name.to_string(), token_with(reg, name, grants)))
        .collect()
}

/// Tokens that must not work: disabled, rotated-away password, expired bearer.
fn dead_credentials(reg: &common::Registry) -> Vec<(String, Cred)> {
    let c = common::http();
    let grants: &[&[&str]] = &[&["*", "content/read", "metadata/read"]];
    let pw = token_with(reg, "disabled1", grants);
    let stale_bearer = bearer(&c, reg, "disabled1", &pw, &["repository:t/app:pull"]);
    reg.admin(&["token", "update", "-n", "disabled1", "--status", "disabled"]);
    let old = token_with(reg, "rotated1", grants);
    let old_bearer = bearer(&c, reg, "rotated1", &old, &["repository:t/app:pull"]);
    let new = reg.admin(&[
        "token",
        "credential",
        "generate",
        "-n",
        "rotated1",
        "--password1",
    ]);
    let new_pw = new["credentials"]["passwords"][0]["value"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    crate::wait_status(reg, &Cred::Basic("disabled1".into(), pw.clone()), 401);
    crate::wait_status(reg, &Cred::Basic("rotated1".into(), old.clone()), 401);
    crate::wait_status(reg, &Cred::Basic("rotated1".into(), new_pw), 200);
    vec![
        ("disabled-basic".into(), Cred::Basic("disabled1".into(), pw)),
        ("disabled-bearer".into(), Cred::Bearer(stale_bearer)),
        ("rotated-basic".into(), Cred::Basic("rotated1".into(), old)),
        ("rotated-bearer".into(), Cred::Bearer(old_bearer)),
        ("expired-bearer".into(), Cred::Bearer(expired_bearer(reg))),
        ("anonymous".into(), Cred::Anonymous),
    ]
}

/// A correctly signed token that expired a while ago.
fn expired_bearer(reg: &common::Registry) -> String {
    use connected_registry::auth::bearer::{Claims, Keys};
    let meta = connected_registry::storage::SqliteMetadata::open(&reg.data)
        .unwrap_or_else(|e| panic!("{e}"));
    let keys =
        Keys::load_or_create(&meta, &reg.data.join("auth")).unwrap_or_else(|e| panic!("{e}"));
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let token = reg.admin(&["token", "show", "-n", "admin"]);
    let created = token["credentials"]["passwords"][0]["creationTime"]
        .as_str()
        .unwrap_or_default();
    let secs = humantime::parse_rfc3339(created)
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| d.as_secs())
        .unwrap_or(0);
    keys.sign(&Claims {
        iss: "connected-registry".into(),
        sub: "admin".into(),
        aud: reg.host(),
        exp: now - 3600,
        nbf: now - 7200,
        iat: now - 7200,
        jti: "expired".into(),
        typ: "access".into(),
        pwd: format!("password1@{secs}"),
        access: serde_json::from_value(serde_json::json!([
            {"type": "repository", "name": "t/app", "actions": ["pull", "push", "delete"]},
            {"type": "registry", "name": "catalog", "actions": ["*"]}
        ]))
        .unwrap_or_default(),
    })
    .unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn every_endpoint_permission_mode_and_credential() {
    let mut reg = common::Registry::start_authenticated(&[]);
    let passwords = seed(&reg);
    let dead = dead_credentials(&reg);
    run_table(&reg, false, &passwords, &dead);

    // The same data as a ReadOnly child: writes are refused whatever the token says.
    reg.env.push((
        "ACR_REGISTRY_CONNECTION_STRING".into(),
        "ConnectedRegistryName=edge;SyncTokenName=sync;SyncTokenPassword=pw;\
         ParentGatewayEndpoint=127.0.0.1:9;ParentEndpointProtocol=http"
            .into(),
    ));
    reg.args
        .extend(["--mode".to_string(), "ReadOnly".to_string()]);
    reg.restart();
    run_table(&reg, true, &passwords, &dead);

    // A ReadWrite child behaves like a root.
    let n = reg.args.len();
    reg.args[n - 1] = "ReadWrite".into();
    reg.restart();
    run_table(&reg, false, &passwords, &dead);
}
