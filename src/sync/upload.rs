//! Request bodies that stream a piece of a stored blob to the parent, within the bandwidth
//! limit, without holding more than one read buffer in memory.

use std::sync::Arc;

use tokio::sync::{oneshot, OwnedSemaphorePermit};

use super::transfer::Transfers;
use crate::storage::BlobReader;

/// Bytes read from the file per step.
const READ: u64 = 256 * 1024;

/// What a body stream carries between steps.
struct State {
    blob: BlobReader,
    pos: u64,
    left: u64,
    transfers: Arc<Transfers>,
    /// Held until the last byte is handed to the connection (not until the parent answers), so
    /// the next bytes follow at once while this request waits for its answer.
    permits: [Option<OwnedSemaphorePermit>; 2],
    /// Told when the last byte has been handed over; dropped unsent when reading failed.
    last_byte: Option<oneshot::Sender<()>>,
}

/// `len` bytes of `blob` from `offset`, as a streaming request body; `permits` (the
/// push-up's blob turn) are released and `last_byte` told once the last byte has been handed
/// over.
pub fn blob_body(
    blob: BlobReader,
    offset: u64,
    len: u64,
    transfers: Arc<Transfers>,
    permits: [Option<OwnedSemaphorePermit>; 2],
    last_byte: Option<oneshot::Sender<()>>,
) -> reqwest::Body {
    let state = State {
        blob,
        pos: offset,
        left: len,
        transfers,
        permits,
        last_byte,
    };
    let stream = futures_util::stream::unfold(state, |mut s| async move {
        if s.left == 0 {
            return None;
        }
        let want = s.left.min(READ);
        let (pos, want) = (s.pos, want as usize);
        let read = match s.blob.read_cached(pos, want) {
            Some(b) => Ok(b),
            None => super::local(|| s.blob.read_exact_at(pos, want)),
        };
        match read {
            Ok(buf) => {
                let got = buf.len() as u64;
                s.transfers.limiter.take(got).await;
                s.pos += got;
                s.left -= got;
                if s.left == 0 {
                    s.permits = [None, None];
                    if let Some(tx) = s.last_byte.take() {
                        let _ = tx.send(());
                    }
                }
                Some((Ok(buf), s))
            }
            Err(e) => {
                s.left = 0;
                s.permits = [None, None];
                s.last_byte = None;
                Some((Err(e), s))
            }
        }
    });
    reqwest::Body::wrap_stream(stream)
}
