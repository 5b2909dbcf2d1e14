//! Request bodies that stream a piece of a stored blob to the parent, within the bandwidth
//! limit, without holding more than one read buffer in memory.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::{oneshot, OwnedSemaphorePermit};

use super::transfer::Transfers;

/// Bytes read from the file per step.
const READ: u64 = 256 * 1024;

/// What a body stream carries between steps.
struct State {
    file: Option<File>,
    path: PathBuf,
    pos: u64,
    left: u64,
    transfers: Arc<Transfers>,
    /// Held until the last byte is handed to the connection (not until the parent answers), so
    /// the next bytes follow at once while this request waits for its answer.
    permits: [Option<OwnedSemaphorePermit>; 2],
    /// Told when the last byte has been handed over; dropped unsent when reading failed.
    last_byte: Option<oneshot::Sender<()>>,
}

/// `len` bytes of the file at `path` from `offset`, as a streaming request body; `permits` (the
/// push-up's blob turn) are released and `last_byte` told once the last byte has been handed
/// over.
pub fn file_body(
    path: PathBuf,
    offset: u64,
    len: u64,
    transfers: Arc<Transfers>,
    permits: [Option<OwnedSemaphorePermit>; 2],
    last_byte: Option<oneshot::Sender<()>>,
) -> reqwest::Body {
    let state = State {
        file: None,
        path,
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
        let (file, path, pos) = (s.file.take(), s.path.clone(), s.pos);
        match super::local(|| read_piece(file, &path, pos, want)) {
            Ok((f, buf)) => {
                s.transfers.limiter.take(want).await;
                s.file = Some(f);
                s.pos += want;
                s.left -= want;
                if s.left == 0 {
                    s.permits = [None, None];
                    if let Some(tx) = s.last_byte.take() {
                        let _ = tx.send(());
                    }
                }
                Some((Ok(Bytes::from(buf)), s))
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

/// Reads `want` bytes at `pos`, opening the file on the first step.
fn read_piece(
    file: Option<File>,
    path: &std::path::Path,
    pos: u64,
    want: u64,
) -> std::io::Result<(File, Vec<u8>)> {
    let mut f = match file {
        Some(f) => f,
        None => {
            let mut f = File::open(path)?;
            f.seek(SeekFrom::Start(pos))?;
            f
        }
    };
    let mut buf = vec![0u8; want as usize];
    f.read_exact(&mut buf)?;
    Ok((f, buf))
}
