//! A counting TCP relay between a child registry and its parent: bytes both ways, connections,
//! and HTTP request lines (`GET /… HTTP/1.1`) in the child-to-parent stream.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

/// Longest line looked at for a request line; longer ones are body data.
const MAX_LINE: usize = 16 * 1024;

/// What went through the relay since the last reset.
#[derive(Debug, Default)]
pub struct Counters {
    /// HTTP requests (request lines) sent to the parent.
    pub requests: AtomicU64,
    /// Bytes from the child to the parent.
    pub up: AtomicU64,
    /// Bytes from the parent to the child.
    pub down: AtomicU64,
    /// TCP connections opened.
    pub connections: AtomicU64,
}

/// A snapshot of the counters.
#[derive(Debug, Clone, Copy)]
pub struct Counted {
    /// HTTP requests.
    pub requests: u64,
    /// Bytes child → parent.
    pub up: u64,
    /// Bytes parent → child.
    pub down: u64,
    /// TCP connections opened.
    pub connections: u64,
}

/// A relay listening on a loopback port; stops accepting when dropped.
pub struct Relay {
    /// Where the child connects.
    pub addr: SocketAddr,
    counters: Arc<Counters>,
    stop: Arc<AtomicBool>,
}

impl Relay {
    /// Starts relaying connections to `upstream`.
    pub fn start(upstream: SocketAddr) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0")
            .unwrap_or_else(|e| panic!("relay: cannot listen on loopback: {e}"));
        let addr = listener
            .local_addr()
            .unwrap_or_else(|e| panic!("relay: local address: {e}"));
        let counters = Arc::new(Counters::default());
        let stop = Arc::new(AtomicBool::new(false));
        let (c, st) = (counters.clone(), stop.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if st.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(down) = conn else { continue };
                let Ok(up) = TcpStream::connect(upstream) else {
                    continue; // the child sees a closed connection, as with a dead parent
                };
                c.connections.fetch_add(1, Ordering::Relaxed);
                let _ = (down.set_nodelay(true), up.set_nodelay(true));
                let (Ok(down2), Ok(up2)) = (down.try_clone(), up.try_clone()) else {
                    continue;
                };
                let (c1, c2) = (c.clone(), c.clone());
                std::thread::spawn(move || pump(down, up, &c1.up, Some(&c1.requests)));
                std::thread::spawn(move || pump(up2, down2, &c2.down, None));
            }
        });
        Relay {
            addr,
            counters,
            stop,
        }
    }

    /// Sets every counter to zero.
    pub fn reset(&self) {
        let c = &self.counters;
        for a in [&c.requests, &c.up, &c.down, &c.connections] {
            a.store(0, Ordering::SeqCst);
        }
    }

    /// The counters now.
    pub fn counted(&self) -> Counted {
        let c = &self.counters;
        Counted {
            requests: c.requests.load(Ordering::SeqCst),
            up: c.up.load(Ordering::SeqCst),
            down: c.down.load(Ordering::SeqCst),
            connections: c.connections.load(Ordering::SeqCst),
        }
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.addr); // wakes the accept loop so it sees the flag
    }
}

/// Copies `from` to `to` until either side ends, counting bytes (and request lines).
fn pump(mut from: TcpStream, mut to: TcpStream, bytes: &AtomicU64, requests: Option<&AtomicU64>) {
    let mut buf = vec![0u8; 256 * 1024];
    let mut lines = LineScan::default();
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        bytes.fetch_add(n as u64, Ordering::Relaxed);
        if let Some(r) = requests {
            r.fetch_add(lines.feed(&buf[..n]), Ordering::Relaxed);
        }
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    let _ = to.shutdown(Shutdown::Write);
    let _ = from.shutdown(Shutdown::Read);
}

/// Finds HTTP request lines in a byte stream that arrives in arbitrary pieces.
#[derive(Default)]
struct LineScan {
    line: Vec<u8>,
    too_long: bool,
}

impl LineScan {
    /// Feeds the next piece; returns how many request lines it completed.
    fn feed(&mut self, mut data: &[u8]) -> u64 {
        let mut found = 0;
        while let Some(i) = data.iter().position(|b| *b == b'\n') {
            if !self.too_long {
                self.line.extend_from_slice(&data[..i]);
                found += u64::from(is_request_line(&self.line));
            }
            self.line.clear();
            self.too_long = false;
            data = &data[i + 1..];
        }
        if !self.too_long && self.line.len() + data.len() <= MAX_LINE {
            self.line.extend_from_slice(data);
        } else {
            self.too_long = true;
            self.line.clear();
        }
        found
    }
}

/// `METHOD /target HTTP/1.x` (with or without the trailing CR).
fn is_request_line(line: &[u8]) -> bool {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let methods: [&[u8]; 7] = [
        b"GET /",
        b"HEAD /",
        b"POST /",
        b"PUT /",
        b"PATCH /",
        b"DELETE /",
        b"OPTIONS /",
    ];
    (line.ends_with(b" HTTP/1.1") || line.ends_with(b" HTTP/1.0"))
        && methods.iter().any(|m| line.starts_with(m))
}
