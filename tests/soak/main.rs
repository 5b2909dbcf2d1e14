//! Long fault soaks, run by scripts/soak.sh and only with `--features soak` (not in CI's normal
//! run): `kill -9` during pushes, pulls, sync and GC; link cuts and parent restarts during a
//! ReadWrite sync; a disk that fills and empties during sync. Each is bounded in count and time
//! by environment knobs (see scripts/soak.sh).

#[path = "../common/mod.rs"]
mod common;

mod disk;
mod kill;
mod link;
mod support;
