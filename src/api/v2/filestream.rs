//! Streams part of a stored file to a client, reading on the blocking pool one piece ahead, so
//! the disk read of the next piece overlaps the network write of this one.

use std::fs::File;
use std::future::Future;
use std::os::unix::fs::FileExt;
use std::pin::Pin;

use actix_web::web;
use bytes::Bytes;

/// Bytes read per step: large enough to be cheap, small for a gateway's memory.
const READ_CHUNK: u64 = 256 * 1024;

type Read = Pin<Box<dyn Future<Output = std::io::Result<(File, Vec<u8>)>>>>;

/// Starts reading `want` bytes at `pos` on the blocking pool now (not when first polled).
fn read(file: File, pos: u64, want: u64) -> Read {
    let call = web::block(move || {
        let mut buf = vec![0u8; want as usize];
        file.read_exact_at(&mut buf, pos)?;
        Ok::<_, std::io::Error>((file, buf))
    });
    Box::pin(async move {
        call.await
            .map_err(|e| std::io::Error::other(e.to_string()))?
    })
}

/// `len` bytes of `file` from `start`.
pub fn file_stream(
    file: File,
    start: u64,
    len: u64,
) -> impl futures_util::Stream<Item = Result<Bytes, std::io::Error>> {
    let first = (len > 0).then(|| read(file, start, len.min(READ_CHUNK)));
    let state = (first, start, len);
    futures_util::stream::unfold(state, |(pending, pos, left)| async move {
        let (file, buf) = match pending?.await {
            Ok(r) => r,
            Err(e) => return Some((Err(e), (None, pos, 0))),
        };
        let n = buf.len() as u64;
        let (pos, left) = (pos + n, left - n);
        // The next read runs while this piece goes out.
        let next = (left > 0).then(|| read(file, pos, left.min(READ_CHUNK)));
        Some((Ok(Bytes::from(buf)), (next, pos, left)))
    })
}
