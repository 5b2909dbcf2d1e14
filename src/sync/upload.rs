//! Request bodies that stream a piece of a stored blob to the parent, within the bandwidth
//! limit, without holding more than one read buffer in memory.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;

use super::transfer::Transfers;

/// Bytes read from the file per step.
const READ: u64 = 256 * 1024;

/// `len` bytes of the file at `path` from `offset`, as a streaming request body.
pub fn file_body(path: PathBuf, offset: u64, len: u64, transfers: Arc<Transfers>) -> reqwest::Body {
    let state = (None::<File>, path, offset, len, transfers);
    let stream = futures_util::stream::unfold(state, |(file, path, pos, left, t)| async move {
        if left == 0 {
            return None;
        }
        let want = left.min(READ);
        let read = super::local(|| -> std::io::Result<(File, Vec<u8>)> {
            let mut f = match file {
                Some(f) => f,
                None => {
                    let mut f = File::open(&path)?;
                    f.seek(SeekFrom::Start(pos))?;
                    f
                }
            };
            let mut buf = vec![0u8; want as usize];
            f.read_exact(&mut buf)?;
            Ok((f, buf))
        });
        match read {
            Ok((f, buf)) => {
                t.limiter.take(want).await;
                Some((
                    Ok(Bytes::from(buf)),
                    (Some(f), path, pos + want, left - want, t),
                ))
            }
            Err(e) => Some((Err(e), (None, path, pos, 0, t))),
        }
    });
    reqwest::Body::wrap_stream(stream)
}
