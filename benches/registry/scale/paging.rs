//! Catalog and tags-list pagination: every page is walked by its `Link` header (and the names
//! checked against what was pushed), then the first and the last page are timed.

use std::net::SocketAddr;

use serde_json::Value;

use super::build::Layout;
use crate::http::{location_path, Conn};
use crate::scenarios::median;
use crate::servers::Kind;

/// What a walk through every page found.
struct Walk {
    /// Every name, in the order the pages gave them.
    items: Vec<String>,
    /// Pages requested.
    pages: usize,
    /// Path and query of the last page.
    last_page: String,
    /// Whether the server honoured `n` (the last page is then not the first).
    paged: bool,
}

/// The `next` target of a `Link` header (`<path?query>; rel="next"`), as a path.
fn next_link(link: Option<&str>) -> Option<String> {
    let link = link?;
    let start = link.find('<')? + 1;
    let end = start + link[start..].find('>')?;
    Some(location_path(&link[start..end]))
}

/// GETs `path` and returns its JSON body and `Link` target; panics on anything but 200 JSON.
fn get_page(c: &mut Conn, path: &str) -> (Value, Option<String>) {
    let r = c
        .request("GET", path, &[], &[])
        .unwrap_or_else(|e| panic!("GET {path}: {e}"));
    assert_eq!(r.status(), 200, "GET {path}: {}", r.text());
    let v: Value = serde_json::from_slice(&r.body)
        .unwrap_or_else(|e| panic!("GET {path}: not JSON ({e}): {}", r.text()));
    (v, next_link(r.header("link")))
}

/// Follows `Link` from `first` to the end, collecting the `key` array of every page; panics if a
/// page holds more than `n` names while another page follows, or the walk does not end.
fn walk(c: &mut Conn, first: &str, key: &str, n: usize) -> Walk {
    let mut w = Walk {
        items: Vec::new(),
        pages: 0,
        last_page: first.to_owned(),
        paged: true,
    };
    let mut path = first.to_owned();
    loop {
        let (v, next) = get_page(c, &path);
        let names: Vec<String> = serde_json::from_value(v[key].clone())
            .unwrap_or_else(|e| panic!("GET {path}: no {key} list ({e}): {v}"));
        w.pages += 1;
        w.paged &= names.len() <= n;
        w.items.extend(names);
        w.last_page = path;
        match next {
            Some(p) => path = p,
            None => return w,
        }
        assert!(
            w.pages < 1_000_000,
            "GET {first}: the Link chain does not end"
        );
    }
}

/// The median time in ms of `samples` sequential GETs of `path` (each a 200).
fn time_page(c: &mut Conn, path: &str, samples: usize) -> f64 {
    let mut ms = Vec::with_capacity(samples);
    for _ in 0..samples.max(1) {
        let t = std::time::Instant::now();
        let r = c
            .request("GET", path, &[], &[])
            .unwrap_or_else(|e| panic!("GET {path}: {e}"));
        ms.push(t.elapsed().as_secs_f64() * 1000.0);
        assert_eq!(r.status(), 200, "GET {path}: {}", r.text());
    }
    median(ms)
}

/// First and last page times of the catalog and of one repository's tags list.
#[derive(Debug, Default, Clone, Copy)]
pub struct Pages {
    /// Catalog pages walked.
    pub catalog_pages: usize,
    /// Catalog, first page (ms).
    pub catalog_first: f64,
    /// Catalog, last page (ms).
    pub catalog_last: f64,
    /// Whether the tags list honoured `n` (the reference 2.8 does not).
    pub tags_paged: bool,
    /// Tags list, first page (ms).
    pub tags_first: f64,
    /// Tags list, last page (ms).
    pub tags_last: f64,
}

/// Walks the catalog and the first repository's tags list page by page (checking every name
/// against `layout`), then times their first and last pages.
pub fn measure(
    addr: SocketAddr,
    layout: &Layout,
    n: (usize, usize),
    samples: usize,
    kind: Kind,
) -> Pages {
    let mut c = Conn::new(addr);
    let mut p = Pages::default();
    let first = format!("/v2/_catalog?n={}", n.0);
    let w = walk(&mut c, &first, "repositories", n.0);
    assert_eq!(w.items, layout.sorted_repos(), "{kind:?}: catalog");
    assert!(w.paged, "{kind:?}: the catalog ignores n");
    p.catalog_pages = w.pages;
    p.catalog_first = time_page(&mut c, &first, samples);
    p.catalog_last = time_page(&mut c, &w.last_page, samples);
    let repo = layout.repo(0);
    let first = format!("/v2/{repo}/tags/list?n={}", n.1);
    let mut w = walk(&mut c, &first, "tags", n.1);
    p.tags_paged = w.paged && w.pages > 1;
    if !p.tags_paged {
        // The reference (2.8) ignores n and last here, and lists in directory order.
        w.items.sort();
    }
    assert_eq!(w.items, layout.sorted_tags(), "{kind:?}: tags of {repo}");
    assert!(
        p.tags_paged || kind != Kind::Ours,
        "ours: the tags list ignores n"
    );
    p.tags_first = time_page(&mut c, &first, samples);
    p.tags_last = time_page(&mut c, &w.last_page, samples);
    println!(
        "    {kind:?}: catalog {} pages, first {:.3} ms, last {:.3} ms; tags/list {} pages, \
         first {:.3} ms, last {:.3} ms",
        p.catalog_pages, p.catalog_first, p.catalog_last, w.pages, p.tags_first, p.tags_last
    );
    p
}
