//! Manifest GET by tag on random tags, every body checked against the manifest pushed.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use super::build::Layout;
use crate::content;
use crate::http::ACCEPT_MANIFESTS;
use crate::load::{self, Load, Until};
use crate::scenarios::CONCURRENCY;
use crate::servers::Kind;

/// A well-mixed 64-bit number from a counter (splitmix64), for picking tags at random.
fn mix(i: u64) -> u64 {
    let mut z = i.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Manifest GET by tag from `CONCURRENCY` clients for `time`, each request a random tag of the
/// first `repos` repositories; every body must be the manifest pushed under that tag.
pub fn get_load(addr: SocketAddr, layout: &Layout, repos: usize, time: Duration) -> Load {
    let counter = AtomicU64::new(0);
    let span = (repos * layout.tags) as u64;
    load::run(addr, CONCURRENCY, Until::Time(time), |c| {
        let i = (mix(counter.fetch_add(1, Ordering::Relaxed)) % span) as usize;
        let (r, t) = (i / layout.tags, i % layout.tags);
        let path = format!("/v2/{}/manifests/{}", layout.repo(r), layout.tag(t));
        let res = c
            .request("GET", &path, &[("Accept", ACCEPT_MANIFESTS)], &[])
            .map_err(|e| format!("GET {path}: {e}"))?;
        let want = layout.digest(r, t);
        if res.status() != 200 || content::sha256(&res.body) != want {
            let (status, text) = (res.status(), res.text());
            return Err(format!("GET {path}: {status}, not {want}: {text}"));
        }
        Ok(res.body.len() as u64)
    })
}

/// Prints one load's figures.
pub fn say(kind: Kind, what: &str, l: &Load) {
    println!(
        "    {kind:?}: {what}: {:.0} req/s, p50 {:.3} ms, p99 {:.3} ms",
        l.rps(),
        l.percentile_ms(0.5),
        l.percentile_ms(0.99)
    );
}
