//! Streams part of a stored blob to a client. What is in memory already is read right on the
//! worker thread ([`BlobReader::read_cached`]); anything else on the blocking pool, so a worker
//! never waits for the disk.

use actix_web::web;
use bytes::Bytes;

use crate::storage::BlobReader;

/// Bytes read and handed to the HTTP layer at a time; this bounds what one client keeps
/// resident. actix's HTTP/1 dispatcher copies each piece into its write buffer and drops that
/// buffer once it grew past 128 KiB, so a piece must stay under that; 112 KiB pieces cost 20-30 %
/// less CPU per GB than 256 KiB ones (measured on two cores, 1-16 clients, busy cores or not),
/// smaller ones (64 KiB) cost more syscalls per byte again.
const PIECE: usize = 112 * 1024;

/// Up to `want` bytes of `blob` at `pos`: from memory on this thread when they are there,
/// else exactly `want` read on the blocking pool.
pub(super) async fn read_piece(blob: &BlobReader, pos: u64, want: usize) -> std::io::Result<Bytes> {
    if let Some(b) = blob.read_cached(pos, want) {
        return Ok(b);
    }
    let blob = blob.clone();
    web::block(move || blob.read_exact_at(pos, want))
        .await
        .map_err(|e| std::io::Error::other(e.to_string()))?
}

/// Where a blob stream is.
struct Cursor {
    blob: BlobReader,
    /// File offset of the next read.
    pos: u64,
    /// Bytes not yet read.
    left: u64,
}

/// `len` bytes of `blob` from `start`.
pub fn blob_stream(
    blob: BlobReader,
    start: u64,
    len: u64,
) -> impl futures_util::Stream<Item = Result<Bytes, std::io::Error>> {
    let cursor = Cursor {
        blob,
        pos: start,
        left: len,
    };
    futures_util::stream::unfold(Some(cursor), |cursor| async move {
        let mut c = cursor?;
        if c.left == 0 {
            return None;
        }
        let want = c.left.min(PIECE as u64) as usize;
        let piece = match read_piece(&c.blob, c.pos, want).await {
            Ok(b) => b,
            Err(e) => return Some((Err(e), None)),
        };
        c.pos += piece.len() as u64;
        c.left -= piece.len() as u64;
        Some((Ok(piece), Some(c)))
    })
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use futures_util::StreamExt;

    use super::*;

    fn collect(file: std::fs::File, start: u64, len: u64) -> Vec<u8> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(async {
            let mut out = Vec::new();
            let mut s = std::pin::pin!(blob_stream(BlobReader::from_file(file), start, len));
            while let Some(piece) = s.next().await {
                let piece = piece.unwrap();
                assert!(!piece.is_empty() && piece.len() <= PIECE);
                out.extend_from_slice(&piece);
            }
            out
        })
    }

    #[test]
    fn every_range_comes_back_exactly() {
        let data: Vec<u8> = (0..(3 * PIECE + 12345))
            .map(|i| (i * 7 % 251) as u8)
            .collect();
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(&data).unwrap();
        let n = data.len() as u64;
        for (start, len) in [
            (0, n),
            (1, n - 1),
            (4095, 70_000),
            (n - 10, 10),
            (PIECE as u64, 1),
        ] {
            let got = collect(f.try_clone().unwrap(), start, len);
            assert_eq!(
                got,
                &data[start as usize..(start + len) as usize],
                "{start}+{len}"
            );
        }
        assert!(collect(f, 5, 0).is_empty());
    }

    #[test]
    fn a_short_file_is_an_error_not_a_crash() {
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(&[1u8; 1000]).unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let err = rt.block_on(async {
            let mut s = std::pin::pin!(blob_stream(BlobReader::from_file(f), 0, 2 * PIECE as u64));
            loop {
                match s.next().await {
                    Some(Ok(_)) => continue,
                    Some(Err(e)) => return Some(e),
                    None => return None,
                }
            }
        });
        assert!(err.is_some());
    }
}
