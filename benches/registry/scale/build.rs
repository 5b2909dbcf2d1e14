//! The scale content and how it is pushed: each repository holds one small image (a config and
//! a 64-byte layer of its own) and every tag is a distinct manifest of it, the image's manifest
//! with an annotation naming repository and tag, so a GET by tag reads a manifest of its own.
//! Everything goes through the registry API, for both servers alike.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::content::{self, Image};
use crate::http::Conn;
use crate::load::{self, Until};
use crate::scenarios::CONCURRENCY;

/// The repositories and tags of the scale registry, with every manifest's digest.
pub struct Layout {
    /// Repositories.
    pub repos: usize,
    /// Tags per repository.
    pub tags: usize,
    /// One image per repository.
    images: Vec<Image>,
    /// `digests[r * tags + t]`: the manifest of tag `t` in repository `r`.
    digests: Vec<String>,
}

impl Layout {
    /// The content of `repos` repositories of `tags` tags each (digests computed up front).
    pub fn new(repos: usize, tags: usize) -> Layout {
        let images = (0..repos)
            .map(|r| Image::new(1, 64, 7_000_000 + 10 * r as u64))
            .collect();
        let mut layout = Layout {
            repos,
            tags,
            images,
            digests: Vec::with_capacity(repos * tags),
        };
        for r in 0..repos {
            for t in 0..tags {
                let d = content::sha256(&layout.manifest(r, t));
                layout.digests.push(d);
            }
        }
        layout
    }

    /// Name of repository `r` (fixed width, so lexical order is numeric order).
    pub fn repo(&self, r: usize) -> String {
        format!("scale/r{r:04}")
    }

    /// Name of tag `t`.
    pub fn tag(&self, t: usize) -> String {
        format!("t{t:03}")
    }

    /// The manifest of tag `t` in repository `r`: the image's manifest plus one annotation.
    pub fn manifest(&self, r: usize, t: usize) -> Vec<u8> {
        let base = &self.images[r].manifest;
        // The image manifest is a JSON object: its closing brace makes room for one more key.
        let mut m = base[..base.len() - 1].to_vec();
        let note = format!(
            ",\"annotations\":{{\"bench.ref\":\"{}:{}\"}}}}",
            self.repo(r),
            self.tag(t)
        );
        m.extend_from_slice(note.as_bytes());
        m
    }

    /// Digest of the manifest of tag `t` in repository `r`.
    pub fn digest(&self, r: usize, t: usize) -> &str {
        &self.digests[r * self.tags + t]
    }

    /// Pushes repository `r` over one connection: its two blobs, then every tag.
    pub fn push_repo(&self, c: &mut Conn, r: usize) {
        let repo = self.repo(r);
        self.images[r].push_blobs(c, &repo);
        for t in 0..self.tags {
            content::put_manifest(c, &repo, &self.tag(t), &self.manifest(r, t));
        }
    }

    /// Repository names in the order a catalog lists them.
    pub fn sorted_repos(&self) -> Vec<String> {
        let mut v: Vec<String> = (0..self.repos).map(|r| self.repo(r)).collect();
        v.sort();
        v
    }

    /// Tag names in the order a tags list gives them.
    pub fn sorted_tags(&self) -> Vec<String> {
        let mut v: Vec<String> = (0..self.tags).map(|t| self.tag(t)).collect();
        v.sort();
        v
    }
}

/// Pushes repositories `from..` of `layout` to `addr` from `CONCURRENCY` clients, each taking
/// the next repository as it finishes one; returns the time it took.
pub fn populate(addr: SocketAddr, layout: &Layout, from: usize) -> Duration {
    let next = AtomicUsize::new(from);
    let left = layout.repos.saturating_sub(from);
    let per_worker = left.div_ceil(CONCURRENCY) as u64;
    let started = Instant::now();
    load::run(addr, CONCURRENCY, Until::Count(per_worker), |c| {
        let r = next.fetch_add(1, Ordering::Relaxed);
        if r < layout.repos {
            layout.push_repo(c, r);
        }
        Ok(0)
    });
    started.elapsed()
}
