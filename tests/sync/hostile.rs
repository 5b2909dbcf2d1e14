//! A hostile or broken parent (stand-ins speaking just enough HTTP): what it cannot make a
//! child do.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::{child, policy_for, status, tail, wait_for};

/// The sync password the child holds; it must reach no one but the parent itself.
const PASSWORD: &str = "hostile-Parent-pa55word";

/// Request heads (request line and headers, lowercased) one stand-in received.
type Heads = Arc<Mutex<Vec<String>>>;

/// A stand-in on `ip` answering every request with `answer`, one thread per connection;
/// returns its port and the heads it received.
fn stand_in(ip: &str, answer: impl Fn() -> String + Send + Sync + 'static) -> (u16, Heads) {
    let listener = TcpListener::bind(format!("{ip}:0")).unwrap_or_else(|e| panic!("{ip}: {e}"));
    let port = listener
        .local_addr()
        .unwrap_or_else(|e| panic!("{e}"))
        .port();
    let heads: Heads = Arc::default();
    let (seen, answer) = (heads.clone(), Arc::new(answer));
    std::thread::spawn(move || {
        for mut s in listener.incoming().flatten() {
            let (seen, answer) = (seen.clone(), answer.clone());
            std::thread::spawn(move || {
                let mut buf = Vec::new();
                let mut b = [0u8; 4096];
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut b) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&b[..n]),
                    }
                }
                let head = String::from_utf8_lossy(&buf).to_ascii_lowercase();
                seen.lock().unwrap_or_else(|p| p.into_inner()).push(head);
                let _ = s.write_all(answer().as_bytes());
            });
        }
    });
    (port, heads)
}

/// A plain-HTTP parent whose 401 sends the child to a plain-HTTP token service on another
/// host: the child reports the refusal and never hands that service its password.
#[test]
fn a_plain_http_token_realm_on_another_host_never_gets_the_password() {
    let (realm_port, realm_heads) = stand_in("127.0.0.2", || {
        let body = r#"{"token":"stolen","expires_in":300}"#;
        format!(
            "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
    });
    let (parent_port, _) = stand_in("127.0.0.1", move || {
        let body = r#"{"errors":[{"code":"UNAUTHORIZED","message":"authenticate"}]}"#;
        format!(
            "HTTP/1.1 401 Unauthorized\r\nConnection: close\r\nContent-Length: {}\r\n\
             WWW-Authenticate: Bearer realm=\"http://127.0.0.2:{realm_port}/token\",\
             service=\"evil\"\r\n\r\n{body}",
            body.len()
        )
    });
    let reg = child(
        &format!("127.0.0.1:{parent_port}"),
        PASSWORD,
        &policy_for(&["hostile/app"], ""),
        &[],
    );
    wait_for(&reg, "a status detail", Duration::from_secs(30), || {
        let s = status(&reg);
        s["statusDetails"].as_array().is_some_and(|d| !d.is_empty())
    });
    let heads = realm_heads
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    assert!(
        heads.iter().all(|h| !h.contains("\r\nauthorization:")),
        "the realm received credentials: {heads:?}"
    );
    let s = status(&reg);
    let realm = format!("127.0.0.2:{realm_port}/token");
    let named = s["statusDetails"].as_array().is_some_and(|d| {
        d.iter().any(|x| {
            x["code"] == "ParentProtocolError"
                && x["message"].as_str().is_some_and(|m| m.contains(&realm))
        })
    });
    assert!(named, "no detail names the refused realm: {s}");
    let log = reg.log();
    assert!(
        !log.contains(PASSWORD),
        "the log shows the password:\n{}",
        tail(&log, 40)
    );
    assert!(
        !status(&reg).to_string().contains(PASSWORD),
        "the status shows the password"
    );
}
