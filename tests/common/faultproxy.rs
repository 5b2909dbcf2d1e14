//! A loopback TCP proxy that can cut, kill or slow the link to a target (std threads only).

use std::collections::HashMap;
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// Most connections served at once; more are accepted and closed immediately.
pub const MAX_CONNECTIONS: usize = 256;
/// Forwarding buffer size per direction.
const BUF: usize = 64 * 1024;
/// How long connecting to the target may take before the client is dropped.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// One proxied connection: both sockets, so anyone can cut it.
struct Conn {
    client: TcpStream,
    upstream: TcpStream,
}

impl Conn {
    fn cut(&self) {
        let _ = self.client.shutdown(Shutdown::Both);
        let _ = self.upstream.shutdown(Shutdown::Both);
    }
}

#[derive(Default)]
struct Shared {
    stop: AtomicBool,
    down: AtomicBool,
    /// 0: never cut; otherwise downstream bytes per connection before it is cut.
    cut_every: AtomicU64,
    /// 0: never cut; otherwise upstream bytes per connection before it is cut.
    cut_every_up: AtomicU64,
    /// 0: no delay; otherwise microseconds slept before forwarding each chunk.
    delay_us: AtomicU64,
    bytes_down: AtomicU64,
    bytes_up: AtomicU64,
    connections: AtomicU64,
    cuts: AtomicU64,
    next_id: AtomicU64,
    live: Mutex<HashMap<u64, Arc<Conn>>>,
    /// Request lines (`GET /v2/… HTTP/1.1`) clients sent, in order.
    requests: Mutex<Vec<String>>,
}

impl Shared {
    fn live(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Arc<Conn>>> {
        self.live.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn cut_all(&self) {
        for c in self.live().values() {
            c.cut();
        }
    }
}

/// A TCP proxy on 127.0.0.1:<free port> forwarding to a target; stops promptly on drop.
pub struct FaultProxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    accept: Option<JoinHandle<()>>,
}

impl FaultProxy {
    /// Starts forwarding to `target`.
    pub fn start(target: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .unwrap_or_else(|e| panic!("fault proxy: bind 127.0.0.1:0: {e}"));
        listener
            .set_nonblocking(true)
            .unwrap_or_else(|e| panic!("fault proxy: nonblocking: {e}"));
        let addr = listener
            .local_addr()
            .unwrap_or_else(|e| panic!("fault proxy: local_addr: {e}"));
        let shared = Arc::new(Shared::default());
        let sh = shared.clone();
        let accept = std::thread::Builder::new()
            .name(format!("faultproxy-{}", addr.port()))
            .spawn(move || accept_loop(listener, target, sh))
            .unwrap_or_else(|e| panic!("fault proxy: spawn: {e}"));
        FaultProxy {
            addr,
            shared,
            accept: Some(accept),
        }
    }

    /// Port the proxy listens on.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Address the proxy listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `host:port` as clients write it in URLs and image references.
    pub fn host(&self) -> String {
        self.addr.to_string()
    }

    /// Cuts each connection once it has carried `bytes` downstream (target→client); None: never.
    pub fn set_cut_every(&self, bytes: Option<u64>) {
        // 0 encodes "never", so a cut after 0 bytes is stored as "after 1 byte at most".
        let v = bytes.map(|b| b.max(1)).unwrap_or(0);
        self.shared.cut_every.store(v, SeqCst);
    }

    /// Cuts each connection after it carried `bytes` upstream (client to target): uploads.
    pub fn set_cut_every_up(&self, bytes: Option<u64>) {
        self.shared.cut_every_up.store(bytes.unwrap_or(0), SeqCst);
    }

    /// Connections cut by `set_cut_every` or `set_cut_every_up` so far.
    pub fn cuts(&self) -> u64 {
        self.shared.cuts.load(SeqCst)
    }

    /// While down, new connections are closed at once and existing ones are cut.
    pub fn set_down(&self, down: bool) {
        self.shared.down.store(down, SeqCst);
        if down {
            self.shared.cut_all();
        }
    }

    /// Sleeps `d` before forwarding each chunk (either direction); None: no delay.
    pub fn set_delay(&self, d: Option<Duration>) {
        let us = d.map(|d| (d.as_micros() as u64).max(1)).unwrap_or(0);
        self.shared.delay_us.store(us, SeqCst);
    }

    /// Bytes forwarded target→client.
    pub fn bytes_down(&self) -> u64 {
        self.shared.bytes_down.load(SeqCst)
    }

    /// Bytes forwarded client→target.
    pub fn bytes_up(&self) -> u64 {
        self.shared.bytes_up.load(SeqCst)
    }

    /// Connections accepted (including ones closed at once while down or full).
    pub fn connections(&self) -> u64 {
        self.shared.connections.load(SeqCst)
    }

    /// Connections being forwarded right now.
    pub fn live_connections(&self) -> usize {
        self.shared.live().len()
    }

    /// Zeroes bytes, connections and cuts counters and forgets recorded requests.
    pub fn reset_counters(&self) {
        let s = &self.shared;
        for c in [&s.bytes_down, &s.bytes_up, &s.connections, &s.cuts] {
            c.store(0, SeqCst);
        }
        s.requests.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }

    /// Request lines clients sent through the proxy (`METHOD PATH HTTP/1.x`), in order.
    pub fn requests(&self) -> Vec<String> {
        self.shared
            .requests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// How many recorded requests start with `prefix` (e.g. `GET /v2/a/blobs/sha256:…`).
    pub fn count_requests(&self, prefix: &str) -> usize {
        self.requests()
            .iter()
            .filter(|r| r.starts_with(prefix))
            .count()
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.shared.stop.store(true, SeqCst);
        self.shared.cut_all();
        if let Some(h) = self.accept.take() {
            let _ = h.join();
        }
    }
}

fn accept_loop(listener: TcpListener, target: SocketAddr, sh: Arc<Shared>) {
    let mut workers: Vec<JoinHandle<()>> = Vec::new();
    while !sh.stop.load(SeqCst) {
        let client = match listener.accept() {
            Ok((s, _)) => s,
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(20));
                continue;
            }
            Err(_) => {
                std::thread::sleep(Duration::from_millis(20));
                continue;
            }
        };
        sh.connections.fetch_add(1, SeqCst);
        workers.retain(|h| !h.is_finished());
        if sh.down.load(SeqCst) || workers.len() >= MAX_CONNECTIONS {
            let _ = client.shutdown(Shutdown::Both);
            continue;
        }
        let sh2 = sh.clone();
        match std::thread::Builder::new()
            .name("faultproxy-conn".into())
            .spawn(move || serve(client, target, sh2))
        {
            Ok(h) => workers.push(h),
            Err(_) => continue,
        }
    }
    sh.cut_all();
    for h in workers {
        let _ = h.join();
    }
}

/// Connects to the target, forwards upstream here and downstream on a second thread.
fn serve(client: TcpStream, target: SocketAddr, sh: Arc<Shared>) {
    let _ = client.set_nonblocking(false);
    let Ok(upstream) = TcpStream::connect_timeout(&target, CONNECT_TIMEOUT) else {
        let _ = client.shutdown(Shutdown::Both);
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = upstream.set_nodelay(true);
    let clones = (client.try_clone(), upstream.try_clone());
    let (Ok(client2), Ok(upstream2)) = clones else {
        let _ = client.shutdown(Shutdown::Both);
        return;
    };
    let conn = Arc::new(Conn { client, upstream });
    let id = sh.next_id.fetch_add(1, SeqCst);
    sh.live().insert(id, conn.clone());
    // Registered first, then checked: `set_down`/drop either sees it or it sees them.
    if sh.stop.load(SeqCst) || sh.down.load(SeqCst) {
        conn.cut();
    }
    let (sh_down, conn_down) = (sh.clone(), conn.clone());
    let down = std::thread::Builder::new()
        .name("faultproxy-down".into())
        .spawn(move || pump(upstream2, &conn_down.client, true, &conn_down, &sh_down));
    match down {
        Ok(h) => {
            pump(client2, &conn.upstream, false, &conn, &sh);
            let _ = h.join();
        }
        Err(_) => conn.cut(),
    }
    sh.live().remove(&id);
}

/// Copies `from` into `to` until EOF, an error, a cut or the byte budget runs out.
fn pump(mut from: TcpStream, mut to: &TcpStream, downstream: bool, conn: &Conn, sh: &Shared) {
    let mut buf = vec![0u8; BUF];
    let mut carried = 0u64;
    let mut line = Vec::new();
    let counter = if downstream {
        &sh.bytes_down
    } else {
        &sh.bytes_up
    };
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) => {
                // Orderly EOF: pass the half-close on; the other direction may still run.
                let _ = to.shutdown(Shutdown::Write);
                return;
            }
            Ok(n) => n,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(_) => break,
        };
        let delay = sh.delay_us.load(SeqCst);
        if delay > 0 {
            std::thread::sleep(Duration::from_micros(delay));
        }
        if sh.stop.load(SeqCst) || sh.down.load(SeqCst) {
            break;
        }
        let budget = if downstream {
            &sh.cut_every
        } else {
            &sh.cut_every_up
        };
        let limit = Some(budget.load(SeqCst)).filter(|l| *l > 0);
        let n = limit.map_or(n, |l| n.min(l.saturating_sub(carried) as usize));
        if !downstream {
            record_requests(&mut line, &buf[..n], sh);
        }
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
        counter.fetch_add(n as u64, SeqCst);
        carried += n as u64;
        if limit.is_some_and(|l| carried >= l) {
            sh.cuts.fetch_add(1, SeqCst);
            break;
        }
    }
    conn.cut();
}

/// Methods whose request lines are recorded.
const METHODS: [&str; 6] = ["GET ", "HEAD ", "POST ", "PUT ", "PATCH ", "DELETE "];

/// Finds request lines in client bytes (bodies rarely look like one; tests send no such bodies).
/// A request right after a body without a final newline shares its line with the body's end,
/// so the request line is looked for at the end of each line.
fn record_requests(line: &mut Vec<u8>, data: &[u8], sh: &Shared) {
    for &b in data {
        if b == b'\n' {
            let text = String::from_utf8_lossy(line);
            if let Some(request) = request_line(text.trim_end()) {
                let mut r = sh.requests.lock().unwrap_or_else(|e| e.into_inner());
                r.push(request.to_owned());
            }
            line.clear();
        } else if line.len() < 8192 {
            line.push(b);
        }
    }
}

/// The request line `METHOD PATH HTTP/1.x` that ends `text`, if any.
fn request_line(text: &str) -> Option<&str> {
    METHODS.iter().find_map(|m| {
        let at = text.rfind(m)?;
        let rest = &text[at..];
        let shaped = rest.split(' ').count() == 3 && rest.contains(" HTTP/1.");
        shaped.then_some(rest)
    })
}
