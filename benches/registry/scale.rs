//! The "scale" scenario: 1,000 repositories × 100 tags (a distinct small manifest per tag),
//! pushed through the API to both servers from 16 clients. On each server: manifest GET by tag
//! while it holds one repository (the small registry), then, with everything pushed, startup
//! on the populated directory (a fresh process, to its first 200 on `GET /v2/`), idle RSS after
//! that start, manifest GET by tag on random repositories and tags, the catalog and tags-list
//! first and last pages, and peak RSS. Then a child of ours mirrors it all, from ours and from
//! the reference, and a sync pass that finds nothing new is counted. A smoke run shrinks it to
//! 10 × 5.
//!
//! The full part takes long: the reference takes 4–7 minutes to take 100,000 tags on a 2-core
//! machine, a child's first sync of them several more, and removing the reference's
//! directory (about a million files) a few more.

mod build;
mod gets;
mod paging;
mod restart;
mod sync;

use std::path::Path;

use build::Layout;
use gets::{get_load, say};
use paging::Pages;
use restart::Restarted;

use crate::http::Conn;
use crate::proc;
use crate::report::{Better, Report};
use crate::scenarios::{median, CONCURRENCY};
use crate::servers::Server;
use crate::Config;

/// Sizes of the scale scenario.
struct Size {
    /// Repositories.
    repos: usize,
    /// Tags per repository.
    tags: usize,
    /// `n` of the catalog pages.
    catalog_n: usize,
    /// `n` of the tags-list pages.
    tags_n: usize,
    /// Requests per page timing (the median is reported).
    samples: usize,
}

impl Size {
    /// The sizes, or a smoke run's (every page walk still has several pages).
    fn of(cfg: &Config) -> Size {
        if cfg.smoke {
            Size {
                repos: 10,
                tags: 5,
                catalog_n: 3,
                tags_n: 2,
                samples: 3,
            }
        } else {
            Size {
                repos: 1000,
                tags: 100,
                catalog_n: 100,
                tags_n: 10,
                samples: 50,
            }
        }
    }
}

/// One server's figures (times in seconds or ms as the rows say, memory in MiB).
#[derive(Default)]
struct Figures {
    populate_s: f64,
    populate_peak: f64,
    small_rps: f64,
    small_p99: f64,
    startup_s: f64,
    idle_rss: f64,
    big_rps: f64,
    big_p50: f64,
    big_p99: f64,
    pages: Pages,
    peak: f64,
}

/// A server after its measurements: the restarted process and the stopped one, held only for
/// the directory it serves (declared in this order, so the process stops before it goes).
struct Measured {
    figures: Figures,
    process: Restarted,
    _server: Server,
}

/// Builds the scale registry on both servers, measures them, then the no-change sync of a child
/// of ours mirroring each.
pub fn scale(bin: &Path, run: &Path, cfg: &Config, report: &mut Report) {
    let size = Size::of(cfg);
    let layout = Layout::new(size.repos, size.tags);
    let reference = measure(bin, Server::reference(run), &layout, &size, cfg);
    let ours = measure(bin, Server::ours(bin, run, None), &layout, &size, cfg);
    rows(report, &size, [&reference.figures, &ours.figures]);
    let parent = ours.process.addr;
    sync::no_change_sync(bin, run, parent, "ours", &layout, report);
    drop(ours);
    let parent = reference.process.addr;
    sync::no_change_sync(bin, run, parent, "the reference", &layout, report);
    drop(reference);
}

/// Every measurement on one server, from an empty directory. Both manifest loads run on a
/// freshly restarted process after the same idle wait, so that the number of repositories is
/// the only difference between them.
fn measure(bin: &Path, mut s: Server, layout: &Layout, size: &Size, cfg: &Config) -> Measured {
    let mut f = Figures::default();
    let kind = s.kind;
    layout.push_repo(&mut Conn::new(s.addr), 0);
    proc::settle_disk();
    let (p, _) = restart::restart(bin, &mut s, 1);
    std::thread::sleep(cfg.idle_wait);
    let l = get_load(p.addr, layout, 1, cfg.load);
    say(kind, "manifest GET, one repository", &l);
    (f.small_rps, f.small_p99) = (l.rps(), l.percentile_ms(0.99));
    f.populate_s = build::populate(p.addr, layout, 1).as_secs_f64();
    f.populate_peak = proc::peak_rss(p.pid()) as f64 / proc::MIB;
    let tags = layout.repos * layout.tags;
    let rate = tags as f64 / f.populate_s;
    println!(
        "    {kind:?}: {tags} tags pushed in {:.1} s ({rate:.0}/s)",
        f.populate_s
    );
    proc::settle_disk();
    let (mut p, startups) = restart::restart_again(bin, &s, p, cfg.rounds);
    f.startup_s = median(startups);
    std::thread::sleep(cfg.idle_wait);
    f.idle_rss = proc::rss(p.pid()) as f64 / proc::MIB;
    let l = get_load(p.addr, layout, layout.repos, cfg.load);
    say(kind, "manifest GET, all repositories", &l);
    (f.big_rps, f.big_p50, f.big_p99) = (l.rps(), l.percentile_ms(0.5), l.percentile_ms(0.99));
    let n = (size.catalog_n, size.tags_n);
    f.pages = paging::measure(p.addr, layout, n, size.samples, kind);
    p.check_alive(s.root());
    f.peak = proc::peak_rss(p.pid()) as f64 / proc::MIB;
    Measured {
        figures: f,
        process: p,
        _server: s,
    }
}

/// A row's name, unit, figure and direction.
type Row = (String, &'static str, fn(&Figures) -> f64, Better);

/// Adds the rows both servers have figures for.
fn rows(report: &mut Report, size: &Size, [r, o]: [&Figures; 2]) {
    use Better::{Higher, Lower};
    let all = format!("{} repos × {} tags", size.repos, size.tags);
    let one = format!("1 repo × {} tags", size.tags);
    let c = CONCURRENCY;
    let (cn, pages) = (size.catalog_n, r.pages.catalog_pages);
    let tn = size.tags_n;
    let whole = if r.pages.tags_paged {
        ""
    } else {
        " (reference: whole list, it ignores n)"
    };
    let table: Vec<Row> = vec![
        (
            format!("scale: push {all} through the API, {c} clients"),
            "s",
            |f| f.populate_s,
            Lower,
        ),
        (
            format!("scale: peak RSS while pushing {all} (and the 1-repo load)"),
            "MiB",
            |f| f.populate_peak,
            Lower,
        ),
        (
            format!("scale: manifest GET by tag, {one}, {c} clients"),
            "req/s",
            |f| f.small_rps,
            Higher,
        ),
        (
            format!("scale: manifest GET by tag, {one}, p99"),
            "ms",
            |f| f.small_p99,
            Lower,
        ),
        (
            format!("scale: startup with {all} on disk, to the first 200"),
            "s",
            |f| f.startup_s,
            Lower,
        ),
        (
            "scale: idle RSS after that startup".to_owned(),
            "MiB",
            |f| f.idle_rss,
            Lower,
        ),
        (
            format!("scale: manifest GET by tag, random of {all}, {c} clients"),
            "req/s",
            |f| f.big_rps,
            Higher,
        ),
        (
            format!("scale: manifest GET by tag, random of {all}, p50"),
            "ms",
            |f| f.big_p50,
            Lower,
        ),
        (
            format!("scale: manifest GET by tag, random of {all}, p99"),
            "ms",
            |f| f.big_p99,
            Lower,
        ),
        (
            format!("scale: catalog ?n={cn}, first page"),
            "ms",
            |f| f.pages.catalog_first,
            Lower,
        ),
        (
            format!("scale: catalog ?n={cn}, last page ({pages} of {pages})"),
            "ms",
            |f| f.pages.catalog_last,
            Lower,
        ),
        (
            format!(
                "scale: tags/list ?n={tn} of {} tags, first page{whole}",
                size.tags
            ),
            "ms",
            |f| f.pages.tags_first,
            Lower,
        ),
        (
            format!(
                "scale: tags/list ?n={tn} of {} tags, last page{whole}",
                size.tags
            ),
            "ms",
            |f| f.pages.tags_last,
            Lower,
        ),
        (
            "scale: peak RSS of the restarted server (load and paging)".to_owned(),
            "MiB",
            |f| f.peak,
            Lower,
        ),
    ];
    for (what, unit, get, better) in table {
        report.add(what, unit, Some(get(r)), Some(get(o)), better);
    }
}
