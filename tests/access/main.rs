//! Access control against the real binary: the endpoint × permission × mode × credential table,
//! live revocation, throttling and hostile credentials.

#[path = "../common/mod.rs"]
mod common;

mod changes;
mod hostile;
mod live;
mod matrix;
mod mount;

use std::time::{Duration, Instant};

use reqwest::blocking::{Client, RequestBuilder};

/// Credentials a request carries.
#[derive(Debug, Clone)]
pub enum Cred {
    /// None.
    Anonymous,
    /// Basic user:password.
    Basic(String, String),
    /// A bearer token.
    Bearer(String),
}

impl Cred {
    /// Adds the header.
    pub fn apply(&self, rq: RequestBuilder) -> RequestBuilder {
        match self {
            Cred::Anonymous => rq,
            Cred::Basic(u, p) => rq.basic_auth(u, Some(p)),
            Cred::Bearer(t) => rq.bearer_auth(t),
        }
    }
}

/// Creates a scope map and a token using it; returns the token's password1 once the running
/// server accepts it.
pub fn token_with(reg: &common::Registry, name: &str, grants: &[&[&str]]) -> String {
    let mut args = vec!["scope-map", "create", "-n", name];
    for g in grants {
        args.push("--repository");
        args.extend_from_slice(g);
    }
    reg.admin(&args);
    let t = reg.admin(&["token", "create", "-n", name, "--scope-map", name]);
    let pw = t["credentials"]["passwords"][0]["value"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert_eq!(pw.len(), 43, "{t}");
    wait_status(reg, &Cred::Basic(name.into(), pw.clone()), 200);
    pw
}

/// Polls `GET /v2/` with `cred` until it answers `status` (bounded: 15 s).
pub fn wait_status(reg: &common::Registry, cred: &Cred, status: u16) {
    let c = common::http();
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut last = 0;
    while Instant::now() < deadline {
        last = cred
            .apply(c.get(format!("{}/v2/", reg.url())))
            .send()
            .map(|r| r.status().as_u16())
            .unwrap_or(0);
        if last == status {
            return;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    panic!("GET /v2/ with {cred:?} stayed {last}, expected {status}");
}

/// A bearer token from the token service for `scopes`.
pub fn bearer(c: &Client, reg: &common::Registry, user: &str, pw: &str, scopes: &[&str]) -> String {
    let mut url = format!("{}/acr/oauth2/token?service={}", reg.url(), reg.host());
    for s in scopes {
        url.push_str(&format!("&scope={s}"));
    }
    let r = c
        .get(url)
        .basic_auth(user, Some(pw))
        .send()
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(r.status().as_u16(), 200, "token request for {user}");
    let v: serde_json::Value = r.json().unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(v["token"], v["access_token"]);
    assert!(v["expires_in"].as_i64().unwrap_or(0) > 0);
    assert!(v["issued_at"].is_string());
    v["token"].as_str().unwrap_or_default().to_owned()
}
