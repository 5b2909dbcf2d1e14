//! A TCP relay that delays every byte by a fixed time in each direction: the round trip of a
//! far link (this kernel has no netem). Data is timestamped as it arrives and written out once
//! its delay has passed, so the relay adds latency without limiting throughput; the queue per
//! direction is bounded, so a fast sender is held back as TCP would hold it back.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Bytes read at once.
const PIECE: usize = 64 << 10;
/// Pieces queued per direction (8 MiB): more than rate × delay for every link setting here.
const QUEUE: usize = 128;

/// A running relay; stopped (listener closed, connections cut) when dropped.
pub struct DelayRelay {
    /// Where clients connect.
    pub addr: SocketAddr,
    stop: Arc<AtomicBool>,
    open: Arc<Mutex<Vec<TcpStream>>>,
    /// When the first bytes from a client arrived since `watch_first_request`.
    first_request: FirstSeen,
}

/// The first time something happened, once armed.
type FirstSeen = Arc<Mutex<Option<Instant>>>;

impl DelayRelay {
    /// Relays `127.0.0.1:<free port>` to `upstream`, delaying each direction by `one_way`.
    pub fn start(upstream: SocketAddr, one_way: Duration) -> DelayRelay {
        let listener = TcpListener::bind("127.0.0.1:0")
            .unwrap_or_else(|e| panic!("delay relay: binding: {e}"));
        let addr = listener
            .local_addr()
            .unwrap_or_else(|e| panic!("delay relay: {e}"));
        listener
            .set_nonblocking(true)
            .unwrap_or_else(|e| panic!("delay relay: {e}"));
        let stop = Arc::new(AtomicBool::new(false));
        let open = Arc::new(Mutex::new(Vec::new()));
        let first_request = FirstSeen::default();
        let (s, o, f) = (stop.clone(), open.clone(), first_request.clone());
        std::thread::spawn(move || accept_loop(&listener, upstream, one_way, &s, &o, &f));
        DelayRelay {
            addr,
            stop,
            open,
            first_request,
        }
    }

    /// Forgets the first request seen so far: the next client bytes to arrive are the first.
    pub fn watch_first_request(&self) {
        if let Ok(mut f) = self.first_request.lock() {
            *f = None;
        }
    }

    /// When the first client bytes arrived since `watch_first_request` (before their delay).
    pub fn first_request(&self) -> Option<Instant> {
        self.first_request.lock().ok().and_then(|f| *f)
    }

    /// Cuts every open connection (a link drop); new ones are accepted as before.
    pub fn cut(&self) {
        cut_all(&self.open);
    }

    /// Cuts every open connection every `every` until the returned guard is dropped.
    pub fn cut_every(&self, every: Duration) -> Cutter {
        let (open, stop) = (self.open.clone(), Arc::new(AtomicBool::new(false)));
        let s = stop.clone();
        std::thread::spawn(move || {
            let mut next = Instant::now() + every;
            while !s.load(Ordering::Relaxed) {
                if Instant::now() >= next {
                    cut_all(&open);
                    next += every;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        });
        Cutter { stop }
    }
}

/// Periodic link cuts; they stop when this is dropped.
pub struct Cutter {
    stop: Arc<AtomicBool>,
}

impl Drop for Cutter {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn cut_all(open: &Mutex<Vec<TcpStream>>) {
    if let Ok(mut open) = open.lock() {
        for s in open.drain(..) {
            let _ = s.shutdown(Shutdown::Both);
        }
    }
}

impl Drop for DelayRelay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        self.cut();
    }
}

fn accept_loop(
    listener: &TcpListener,
    upstream: SocketAddr,
    one_way: Duration,
    stop: &AtomicBool,
    open: &Mutex<Vec<TcpStream>>,
    first_request: &FirstSeen,
) {
    while !stop.load(Ordering::Relaxed) {
        let client = match listener.accept() {
            Ok((c, _)) => c,
            Err(_) => {
                std::thread::sleep(Duration::from_millis(5));
                continue;
            }
        };
        let _ = client.set_nonblocking(false);
        let Ok(server) = TcpStream::connect_timeout(&upstream, Duration::from_secs(10)) else {
            continue; // the client sees its connection closed, as on a dead link
        };
        for s in [&client, &server] {
            let _ = s.set_nodelay(true);
            if let (Ok(mut open), Ok(c)) = (open.lock(), s.try_clone()) {
                open.push(c);
            }
        }
        pump(&client, &server, one_way, Some(first_request.clone()));
        pump(&server, &client, one_way, None);
        // Forget connections that ended, so the list stays small.
        if let Ok(mut open) = open.lock() {
            open.retain(|s| s.peer_addr().is_ok());
        }
    }
}

/// One direction: a reader that timestamps pieces (noting the first one in `first`) and a
/// writer that sends each once its delay has passed.
fn pump(from: &TcpStream, to: &TcpStream, one_way: Duration, first: Option<FirstSeen>) {
    let (Ok(mut from), Ok(mut to)) = (from.try_clone(), to.try_clone()) else {
        return;
    };
    let (tx, rx) = sync_channel::<(Instant, Vec<u8>)>(QUEUE);
    std::thread::spawn(move || read_side(&mut from, &tx, first));
    std::thread::spawn(move || write_side(&mut to, &rx, one_way));
}

fn read_side(from: &mut TcpStream, tx: &SyncSender<(Instant, Vec<u8>)>, first: Option<FirstSeen>) {
    let mut buf = vec![0u8; PIECE];
    loop {
        match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                let now = Instant::now();
                if let Some(Ok(mut f)) = first.as_ref().map(|f| f.lock()) {
                    f.get_or_insert(now);
                }
                if tx.send((now, buf[..n].to_vec())).is_err() {
                    break;
                }
            }
        }
    }
    // Dropping the sender tells the writer the stream ended (after what is queued).
}

fn write_side(to: &mut TcpStream, rx: &Receiver<(Instant, Vec<u8>)>, one_way: Duration) {
    while let Ok((at, piece)) = rx.recv() {
        let due = at + one_way;
        let now = Instant::now();
        if due > now {
            std::thread::sleep(due - now);
        }
        if to.write_all(&piece).is_err() {
            let _ = to.shutdown(Shutdown::Both);
            return;
        }
    }
    let _ = to.shutdown(Shutdown::Write);
}
