//! A minimal keep-alive HTTP/1.1 client over `std::net::TcpStream`, cheap enough that load
//! generation is not what a measurement measures: one connection per worker, `TCP_NODELAY`,
//! bodies by `Content-Length` (or chunked), streamed into a sink without copying them twice.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// Read buffer size: one `read(2)` moves up to this much of a large body.
const BUFFER: usize = 256 * 1024;

/// The `Accept` header manifest requests send (the reference server hides OCI manifests from
/// clients that do not list the OCI type).
pub const ACCEPT_MANIFESTS: &str = "application/vnd.oci.image.manifest.v1+json, \
     application/vnd.oci.image.index.v1+json, \
     application/vnd.docker.distribution.manifest.v2+json, \
     application/vnd.docker.distribution.manifest.list.v2+json";

/// Status and headers of a response; the body went to the caller's sink.
#[derive(Debug, Clone)]
pub struct Head {
    /// HTTP status code.
    pub status: u16,
    /// Header names (lower-cased) and values, in order.
    pub headers: Vec<(String, String)>,
}

impl Head {
    /// The first value of header `name` (lower-case), if any.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// A whole response: head plus body bytes.
#[derive(Debug, Clone)]
pub struct Response {
    /// Status and headers.
    pub head: Head,
    /// The body (empty for HEAD).
    pub body: Vec<u8>,
}

impl Response {
    /// HTTP status code.
    pub fn status(&self) -> u16 {
        self.head.status
    }

    /// The first value of header `name` (lower-case), if any.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.head.header(name)
    }

    /// The body as text, for error messages.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// One keep-alive connection to a server; reconnects when the server closed it.
pub struct Conn {
    addr: SocketAddr,
    host: String,
    stream: Option<BufReader<TcpStream>>,
}

impl Conn {
    /// A connection to `addr` (opened lazily, on the first request).
    pub fn new(addr: SocketAddr) -> Self {
        Conn {
            addr,
            host: addr.to_string(),
            stream: None,
        }
    }

    /// Opens the connection now (so a timed run does not include the TCP handshake).
    pub fn open(&mut self) -> io::Result<()> {
        self.connect().map(|_| ())
    }

    /// The open connection, connecting first when there is none.
    fn connect(&mut self) -> io::Result<&mut BufReader<TcpStream>> {
        if self.stream.is_none() {
            let s = TcpStream::connect_timeout(&self.addr, Duration::from_secs(10))?;
            s.set_nodelay(true)?;
            s.set_read_timeout(Some(Duration::from_secs(300)))?;
            s.set_write_timeout(Some(Duration::from_secs(300)))?;
            self.stream = Some(BufReader::with_capacity(BUFFER, s));
        }
        Ok(self.stream.as_mut().expect("connection just opened"))
    }

    /// Sends a request and collects the whole response body.
    pub fn request(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> io::Result<Response> {
        let mut out = Vec::new();
        let head = self.send(method, path, headers, body, &mut |b| {
            out.extend_from_slice(b)
        })?;
        Ok(Response { head, body: out })
    }

    /// Sends a request and hands the response body to `sink` piece by piece. A request on a
    /// reused connection the server had closed meanwhile is sent once more on a new one.
    pub fn send(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
        sink: &mut dyn FnMut(&[u8]),
    ) -> io::Result<Head> {
        let reused = self.stream.is_some();
        match self.exchange(method, path, headers, body, sink) {
            Err(e) if reused && is_stale(&e) => {
                self.stream = None;
                self.exchange(method, path, headers, body, sink)
            }
            other => other,
        }
    }

    /// Builds the request head and runs one round trip; forgets the connection on error.
    fn exchange(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
        sink: &mut dyn FnMut(&[u8]),
    ) -> io::Result<Head> {
        let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {}\r\n", self.host);
        for (n, v) in headers {
            req.push_str(&format!("{n}: {v}\r\n"));
        }
        if !body.is_empty() || matches!(method, "POST" | "PUT" | "PATCH") {
            req.push_str(&format!("Content-Length: {}\r\n", body.len()));
        }
        req.push_str("\r\n");
        let res = self.round_trip(req.as_bytes(), method == "HEAD", body, sink);
        if res.is_err() {
            self.stream = None;
        }
        res
    }

    /// Writes head and body, reads the response head, moves the body into `sink`.
    fn round_trip(
        &mut self,
        req: &[u8],
        head_only: bool,
        body: &[u8],
        sink: &mut dyn FnMut(&[u8]),
    ) -> io::Result<Head> {
        let s = self.connect()?;
        if body.len() <= 64 * 1024 {
            let mut all = Vec::with_capacity(req.len() + body.len());
            all.extend_from_slice(req);
            all.extend_from_slice(body);
            s.get_mut().write_all(&all)?;
        } else {
            s.get_mut().write_all(req)?;
            s.get_mut().write_all(body)?;
        }
        let (head, close) = read_head(s)?;
        let no_body = head_only || head.status == 204 || head.status == 304 || head.status < 200;
        let mut close = close;
        if !no_body {
            if head
                .header("transfer-encoding")
                .is_some_and(|t| t.eq_ignore_ascii_case("chunked"))
            {
                read_chunked(s, sink)?;
            } else if let Some(len) = head.header("content-length") {
                let len: u64 = len.trim().parse().map_err(|_| bad("bad Content-Length"))?;
                read_exact_into(s, len, sink)?;
            } else {
                read_to_end_into(s, sink)?;
                close = true;
            }
        }
        if close {
            self.stream = None;
        }
        Ok(head)
    }
}

/// True for the errors a server's idle-connection close produces on the next request.
fn is_stale(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::UnexpectedEof
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::BrokenPipe
            | io::ErrorKind::ConnectionAborted
    )
}

/// An `InvalidData` error saying `what`.
fn bad(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.to_owned())
}

/// Reads the status line and headers; also says whether the server will close the connection.
fn read_head(s: &mut BufReader<TcpStream>) -> io::Result<(Head, bool)> {
    let mut line = String::new();
    if s.read_line(&mut line)? == 0 {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "connection closed before a response",
        ));
    }
    let status = line
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse::<u16>().ok())
        .ok_or_else(|| bad(&format!("bad status line {line:?}")))?;
    let mut headers = Vec::new();
    let mut close = line.starts_with("HTTP/1.0");
    loop {
        line.clear();
        if s.read_line(&mut line)? == 0 {
            return Err(bad("connection closed inside the headers"));
        }
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        if let Some((n, v)) = l.split_once(':') {
            let n = n.trim().to_ascii_lowercase();
            let v = v.trim().to_owned();
            if n == "connection" && v.eq_ignore_ascii_case("close") {
                close = true;
            }
            headers.push((n, v));
        }
    }
    Ok((Head { status, headers }, close))
}

/// Moves exactly `len` body bytes from the connection to `sink`.
fn read_exact_into(
    s: &mut BufReader<TcpStream>,
    mut len: u64,
    sink: &mut dyn FnMut(&[u8]),
) -> io::Result<()> {
    while len > 0 {
        let buf = s.fill_buf()?;
        if buf.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("body cut short with {len} bytes missing"),
            ));
        }
        let n = buf.len().min(len as usize);
        sink(&buf[..n]);
        s.consume(n);
        len -= n as u64;
    }
    Ok(())
}

/// Moves the body up to end of stream (a response with neither length nor chunking).
fn read_to_end_into(s: &mut BufReader<TcpStream>, sink: &mut dyn FnMut(&[u8])) -> io::Result<()> {
    loop {
        let buf = s.fill_buf()?;
        if buf.is_empty() {
            return Ok(());
        }
        let n = buf.len();
        sink(buf);
        s.consume(n);
    }
}

/// Decodes a chunked body into `sink` (trailers are read and dropped).
fn read_chunked(s: &mut BufReader<TcpStream>, sink: &mut dyn FnMut(&[u8])) -> io::Result<()> {
    let mut line = String::new();
    loop {
        line.clear();
        s.read_line(&mut line)?;
        let size = line.trim().split(';').next().unwrap_or("");
        let size = u64::from_str_radix(size, 16).map_err(|_| bad("bad chunk size"))?;
        if size == 0 {
            loop {
                line.clear();
                if s.read_line(&mut line)? == 0 || line.trim().is_empty() {
                    return Ok(());
                }
            }
        }
        read_exact_into(s, size, sink)?;
        let mut crlf = [0u8; 2];
        s.read_exact(&mut crlf)?;
    }
}

/// The path and query of an upload `Location` (absolute or relative).
pub fn location_path(location: &str) -> String {
    match location.split_once("://") {
        Some((_, rest)) => match rest.find('/') {
            Some(i) => rest[i..].to_owned(),
            None => "/".to_owned(),
        },
        None => location.to_owned(),
    }
}
