//! Unit tests of the push helpers.

use super::*;

#[test]
fn range_offsets() {
    let cases = [
        ("0-1048575", 0, Some(1 << 20)),
        (" bytes=0-9 ", 3, Some(10)),
        ("bytes 0-9", 3, Some(10)),
        ("0-0", 0, Some(0)),
        ("0-0", 1, Some(1)),
        ("0-0", 1 << 20, Some(0)),
    ];
    for (v, hint, want) in cases {
        assert_eq!(range_offset(v, hint), want, "{v}");
    }
    for bad in ",0,-1,0-,a-b,5-2,0--1,0-18446744073709551615".split(',') {
        assert_eq!(range_offset(bad, 0), None, "{bad}");
    }
}

#[test]
fn locations() {
    let (base, cur) = ("http://h:5000", "http://h:5000/v2/a/b/blobs/uploads/");
    let rel = "/v2/a/b/blobs/uploads/u1?_nouploadcache=false&_state=ab%3D%3D";
    let abs = "http://h:5000/v2/a/blobs/uploads/u2?_state=x";
    let full = format!("{base}{rel}");
    assert_eq!(join_location(base, cur, rel).as_deref(), Some(&*full));
    assert_eq!(join_location(base, cur, abs).as_deref(), Some(abs));
    let sibling = join_location("https://h", "https://h/v2/x/", "u3");
    assert_eq!(sibling.as_deref(), Some("https://h/v2/x/u3"));
    for other in [
        "http://evil:5000/v2/a/blobs/uploads/u",
        "https://h:5000/v2/a",
    ] {
        assert_eq!(join_location(base, cur, other), None, "{other}");
    }
    assert_eq!(upload_repo(&full).as_deref(), Some("a/b"));
    let odd = upload_repo("http://h/v2/x/blobs/uploads/blobs/uploads/u");
    assert_eq!(odd.as_deref(), Some("x/blobs/uploads"));
    assert_eq!(upload_repo("http://h/upload/123"), None);
    assert_eq!(upload_repo("http://h/v2/../blobs/uploads/u"), None);
}

#[test]
fn digest_query_and_serde() {
    let d: Digest = format!("sha256:{}", "a".repeat(64)).parse().unwrap();
    let cases = [
        ("/u", "?"),
        ("/u?_state=x%3D", "&"),
        ("/u?", ""),
        ("/u?a=1&", ""),
    ];
    for (loc, sep) in cases {
        assert_eq!(with_digest(loc, &d), format!("{loc}{sep}digest={d}"));
    }
    let json = r#"{"location":"http://h/v2/a/blobs/uploads/u?_state=x","offset":7}"#;
    let s: UploadSession = serde_json::from_str(json).unwrap();
    assert_eq!(
        (s.offset, serde_json::to_string(&s).unwrap().as_str()),
        (7, json)
    );
    assert_eq!(session_scopes(&s).unwrap(), ["repository:a:pull,push"]);
}
