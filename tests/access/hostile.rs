//! Malformed and forged credentials: always a clean 401, never a crash or a grant.

use base64::Engine as _;

use crate::common;
use crate::{bearer, Cred};

#[test]
fn malformed_headers_and_forged_tokens_are_refused() {
    let reg = common::Registry::start_authenticated(&[]);
    let c = common::http();
    let admin = reg.admin_password();
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let real = bearer(&c, &reg, "admin", &admin, &["repository:x/y:pull"]);
    let parts: Vec<&str> = real.split('.').collect();
    let payload: serde_json::Value =
        serde_json::from_slice(&b64.decode(parts[1]).unwrap_or_default()).unwrap_or_default();
    let mut escalated = payload.clone();
    escalated["access"] =
        serde_json::json!([{"type":"repository","name":"x/y","actions":["pull","push","delete"]}]);
    let forged = format!(
        "{}.{}.{}",
        parts[0],
        b64.encode(escalated.to_string()),
        parts[2]
    );
    let none = format!(
        "{}.{}.",
        b64.encode(r#"{"alg":"none","typ":"JWT"}"#),
        parts[1]
    );
    let hs512 = format!(
        "{}.{}.{}",
        b64.encode(r#"{"alg":"HS512","typ":"JWT"}"#),
        parts[1],
        parts[2]
    );
    let std64 = base64::engine::general_purpose::STANDARD;
    let headers = [
        "Basic".to_string(),
        "Basic !!!!".into(),
        format!("Basic {}", std64.encode("no-colon")),
        format!("Basic {}", std64.encode("admin:")),
        format!("Basic {}", std64.encode(format!("admin:{admin}x"))),
        format!(
            "Basic {}",
            std64.encode(format!("{}:{admin}", "a".repeat(5000)))
        ),
        format!("Bearer {forged}"),
        format!("Bearer {none}"),
        format!("Bearer {hs512}"),
        "Bearer ".into(),
        "Bearer a.b.c".into(),
        format!("Bearer {}", "x".repeat(7000)),
        "Digest username=admin".into(),
        format!("Basic {}", "A".repeat(20_000)),
    ];
    for h in headers {
        let r = c
            .post(format!("{}/v2/x/y/blobs/uploads/", reg.url()))
            .header("Authorization", h.clone())
            .send()
            .unwrap_or_else(|e| panic!("{e}"));
        let s = r.status().as_u16();
        assert!(
            s == 401 || s == 400 || s == 431,
            "{}…: {s}",
            &h[..h.len().min(40)]
        );
        if s == 401 {
            assert!(r.headers().contains_key("www-authenticate"));
        }
    }
    // Scope strings with injection attempts grant nothing beyond the scope map.
    let pw = crate::token_with(&reg, "narrow", &[&["x/y", "content/read"]]);
    for scope in [
        "repository:x/y:pull,push,delete",
        "repository:x/y:pull\",\"push",
        "repository:x/*:push",
        "repository:../x/y:push",
        "registry:catalog:*",
        "repository:x/y:*",
    ] {
        let t = bearer(&c, &reg, "narrow", &pw, &[scope]);
        let r = Cred::Bearer(t)
            .apply(c.post(format!("{}/v2/x/y/blobs/uploads/", reg.url())))
            .send()
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(r.status().as_u16(), 403, "scope {scope} escalated");
    }
    assert_eq!(
        c.get(format!("{}/acr/v1/_health", reg.url()))
            .send()
            .map(|r| r.status().as_u16())
            .unwrap_or(0),
        200
    );
}
