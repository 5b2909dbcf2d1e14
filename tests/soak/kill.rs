//! `kill -9` soak (the long form of tests/crash.rs): a ReadWrite child with a GC pass every
//! second (grace 1 s) syncs with a parent while clients push, delete and pull; it is killed at
//! random moments and restarted on the same data. After every restart each acknowledged image
//! is served whole, every blob a client ever tried is absent or whole, and every tag the child
//! lists points at whole content.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};

use crate::common::{self, oci, Registry};
use crate::support::{self, check_image, get_hashed, tags};

/// Repositories the clients push to at the child (synced up).
const UP: [&str; 2] = ["soak/p0", "soak/p1"];
/// Repository fed at the parent (synced down).
const DOWN: &str = "soak/down";
/// GC as often as the schedule allows, with a short grace, so passes overlap every trial.
const GC: &str = "[gc]\nenabled = true\nschedule = \"* * * * * *\"\ngrace = \"PT1S\"\n";

/// An acknowledged push.
#[derive(Clone)]
struct Acked {
    repo: String,
    tag: String,
    digest: String,
    blobs: Vec<String>,
}

/// What clients saw acknowledged, every blob they tried, and what broke while running.
#[derive(Default)]
struct Ledger {
    acked: Vec<Acked>,
    attempted: Vec<(String, String)>,
    violations: Vec<String>,
    deleted: u64,
}

fn lock(l: &Mutex<Ledger>) -> std::sync::MutexGuard<'_, Ledger> {
    l.lock().unwrap_or_else(|p| p.into_inner())
}

/// Counters of the background work, for the summary.
#[derive(Default)]
struct Counts {
    pulls: AtomicU64,
    fed: AtomicU64,
}

/// One trial's view of the child and the shared state.
#[derive(Clone)]
struct Work {
    base: String,
    trial: u64,
    seed: u64,
    ledger: Arc<Mutex<Ledger>>,
    counts: Arc<Counts>,
    stop: Arc<AtomicBool>,
}

/// Pushes unique images to `UP[id]` until the child stops answering, deleting every third one
/// it got acknowledged; records only what got a 201 (and was not deleted).
fn pusher(w: Work, id: usize) {
    let c = common::http();
    let repo = UP[id];
    // Bounded per trial so the ledger (verified after every kill) grows by tens, not hundreds.
    for n in 0..25u64 {
        if w.stop.load(Relaxed) {
            return;
        }
        std::thread::sleep(Duration::from_millis(w.seed.wrapping_add(n) % 80));
        let s = w.seed ^ (w.trial << 32 | (id as u64) << 24 | n);
        let img = oci::image_with_layers(vec![
            oci::pseudo_random(1 + (s % 5000) as usize, s),
            oci::pseudo_random(100_000 + (s % 500_000) as usize, s ^ 1),
        ]);
        let tag = format!("t{}-{n}", w.trial);
        {
            let mut l = lock(&w.ledger);
            for b in &img.blobs {
                l.attempted.push((repo.to_owned(), b.digest.clone()));
            }
        }
        for b in &img.blobs {
            let url = format!("{}/v2/{repo}/blobs/uploads/?digest={}", w.base, b.digest);
            match c.post(url).body(b.bytes.clone()).send() {
                Ok(r) if r.status().as_u16() == 201 => {}
                _ => return,
            }
        }
        let r = c
            .put(format!("{}/v2/{repo}/manifests/{tag}", w.base))
            .header("Content-Type", oci::OCI_MANIFEST)
            .body(img.bytes.clone())
            .send();
        match r.map(|r| r.status().as_u16()) {
            Ok(201) => {}
            // Its blobs lapsed (grace 1 s) before the manifest came: never acknowledged.
            Ok(400) => continue,
            _ => return,
        }
        if n % 3 == 2 {
            let url = format!("{}/v2/{repo}/manifests/{}", w.base, img.digest);
            match c.delete(url).send().map(|r| r.status().as_u16()) {
                Ok(202) => lock(&w.ledger).deleted += 1,
                _ => return,
            }
            continue;
        }
        lock(&w.ledger).acked.push(Acked {
            repo: repo.to_owned(),
            tag,
            digest: img.digest.clone(),
            blobs: img.blobs.iter().map(|b| b.digest.clone()).collect(),
        });
    }
}

/// Pulls random acknowledged images while the child runs: whatever arrives whole must match
/// its digest, and an acknowledged image must never be missing.
fn puller(w: Work, seed: u64) {
    let c = common::http();
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    for _ in 0..10_000 {
        if w.stop.load(Relaxed) {
            return;
        }
        let pick = {
            let l = lock(&w.ledger);
            (!l.acked.is_empty()).then(|| l.acked[rng.random_range(0..l.acked.len())].clone())
        };
        let Some(a) = pick else {
            std::thread::sleep(Duration::from_millis(50));
            continue;
        };
        let mut urls = vec![(
            format!("{}/v2/{}/manifests/{}", w.base, a.repo, a.tag),
            a.digest.clone(),
        )];
        for b in &a.blobs {
            urls.push((format!("{}/v2/{}/blobs/{b}", w.base, a.repo), b.clone()));
        }
        for (url, want) in urls {
            match get_hashed(&c, &url) {
                None => return, // the child went away: not served
                Some((200, d)) if d == want => {}
                Some((s, d)) if s >= 500 => {
                    // An error while running is no loss, but bytes with a 200 must be right.
                    let _ = d;
                }
                got => lock(&w.ledger)
                    .violations
                    .push(format!("while running, {url} served {got:?}, want {want}")),
            }
        }
        w.counts.pulls.fetch_add(1, Relaxed);
    }
}

/// Pushes small images to the parent's `DOWN` and asks the child to sync, a few a second.
fn feeder(w: Work, parent: String) {
    let c = common::http();
    for n in 0..200u64 {
        if w.stop.load(Relaxed) {
            return;
        }
        let s = w.seed ^ (w.trial << 32 | 1 << 31 | n);
        let img = oci::image_with_layers(vec![oci::pseudo_random(1000 + (s % 60_000) as usize, s)]);
        let tag = format!("t{}-{n}", w.trial);
        oci::push(&c, &parent, DOWN, &tag, &img);
        w.counts.fed.fetch_add(1, Relaxed);
        let _ = c.post(format!("{}/acr/v1/sync", w.base)).send();
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// What is verified after each restart, and from where (older entries were verified in full
/// after an earlier kill; blobs are immutable, so a HEAD shows they are still there).
struct Checked {
    acked: usize,
    attempted: usize,
    listed: BTreeSet<(String, String)>,
}

/// Verifies the restarted child; the problems found.
fn verify(reg: &Registry, l: &Ledger, done: &mut Checked) -> Vec<String> {
    let base = reg.url();
    let c = common::http();
    let mut bad = Vec::new();
    for (i, a) in l.acked.iter().enumerate() {
        if i >= done.acked {
            bad.extend(check_image(&base, &a.repo, &a.tag, &a.digest, &a.blobs));
            continue;
        }
        let url = format!("{base}/v2/{}/manifests/{}", a.repo, a.tag);
        if let Some((st, d)) = get_hashed(&c, &url).filter(|(_, d)| d != &a.digest) {
            bad.push(format!(
                "{}:{} served {st} {d}, acknowledged {}",
                a.repo, a.tag, a.digest
            ));
        }
        for b in &a.blobs {
            let st = c.head(format!("{base}/v2/{}/blobs/{b}", a.repo)).send();
            if st.map(|r| r.status().as_u16()).unwrap_or(0) != 200 {
                bad.push(format!("acknowledged blob {b} of {} lost", a.repo));
            }
        }
    }
    for (repo, b) in &l.attempted[done.attempted..] {
        match get_hashed(&c, &format!("{base}/v2/{repo}/blobs/{b}")) {
            Some((404, _)) => {}
            Some((200, d)) if &d == b => {}
            got => bad.push(format!("attempted blob {b} of {repo} served {got:?}")),
        }
    }
    // Every tag listed at the child (pushed here or synced down) points at whole content.
    for repo in UP.iter().chain([&DOWN]) {
        for tag in tags(&base, repo) {
            let key = (repo.to_string(), tag.clone());
            if done.listed.contains(&key) {
                continue;
            }
            let (_, problems) = support::check_tag(&base, repo, &tag);
            if problems.is_empty() {
                done.listed.insert(key);
            }
            bad.extend(problems);
        }
    }
    (done.acked, done.attempted) = (l.acked.len(), l.attempted.len());
    bad
}

/// Runs one trial: clients against the child, a kill at a random moment; the kill delay.
fn trial(reg: &mut Registry, parent: &str, w: &Work, rng: &mut rand::rngs::StdRng) -> Duration {
    let mut handles = Vec::new();
    for id in 0..UP.len() {
        let w = w.clone();
        handles.push(std::thread::spawn(move || pusher(w, id)));
    }
    let (w2, p) = (w.clone(), parent.to_owned());
    handles.push(std::thread::spawn(move || feeder(w2, p)));
    let (w3, s) = (w.clone(), rng.random());
    handles.push(std::thread::spawn(move || puller(w3, s)));
    let delay = Duration::from_millis(rng.random_range(100..3000));
    std::thread::sleep(delay);
    reg.stop_hard();
    w.stop.store(true, Relaxed);
    for h in handles {
        if h.join().is_err() {
            lock(&w.ledger)
                .violations
                .push("a client thread panicked".into());
        }
    }
    delay
}

/// The soak: `SOAK_TRIALS` kills (default 100) within `SOAK_MINUTES`.
#[test]
fn kill_9_soak_during_pushes_pulls_sync_and_gc() {
    let started = Instant::now();
    let (mut rng, seed) = support::rng("kill");
    let trials = support::knob("SOAK_TRIALS", 100);
    let limit = support::time_limit();
    let parent = Registry::start();
    let first = oci::image_with_layers(vec![oci::pseudo_random(10_000, seed)]);
    oci::push(&common::http(), &parent.url(), DOWN, "seed", &first);
    let mut repos: Vec<&str> = UP.to_vec();
    repos.push(DOWN);
    let mut reg = support::child(&parent.host(), &support::rw_config(&repos, GC));
    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let counts = Arc::new(Counts::default());
    let mut done = Checked {
        acked: 0,
        attempted: 0,
        listed: BTreeSet::new(),
    };
    let mut ran = 0u64;
    for t in 0..trials {
        if started.elapsed() > limit {
            eprintln!("time limit {limit:?} reached after {ran} trials");
            break;
        }
        let w = Work {
            base: reg.url(),
            trial: t,
            seed,
            ledger: ledger.clone(),
            counts: counts.clone(),
            stop: Arc::new(AtomicBool::new(false)),
        };
        let t0 = Instant::now();
        let delay = trial(&mut reg, &parent.url(), &w, &mut rng);
        let log_from = reg.log().len();
        reg.restart();
        let restarted = t0.elapsed();
        let l = lock(&ledger);
        let mut bad = verify(&reg, &l, &mut done);
        bad.extend(l.violations.iter().cloned());
        let log = reg.log();
        if log[log_from.min(log.len())..].contains("panicked") {
            bad.push("the restarted child panicked".into());
        }
        assert!(
            bad.is_empty(),
            "trial {t} (seed {seed}): {} problems:\n{}\nchild log:\n{}",
            bad.len(),
            bad.join("\n"),
            support::tail(&log, 40)
        );
        ran += 1;
        eprintln!(
            "trial {t}: killed after {delay:?}, restarted {restarted:?}, verified {:?}: {} \
             acknowledged, {} tags listed whole",
            t0.elapsed(),
            l.acked.len(),
            done.listed.len()
        );
    }
    let l = lock(&ledger);
    // Everything acknowledged (and not deleted) reaches the parent once the kills stop.
    let pending = |l: &Ledger| {
        l.acked
            .iter()
            .filter(|a| check_image(&parent.url(), &a.repo, &a.tag, &a.digest, &[]).is_some())
            .count()
    };
    let up = support::converge(&reg, Duration::from_secs(180), || pending(&l) == 0);
    assert!(
        up,
        "{} acknowledged images never reached the parent (seed {seed})\n{}",
        pending(&l),
        support::tail(&reg.log(), 40)
    );
    assert!(
        ran == 0 || l.acked.len() as u64 > ran,
        "too few pushes acknowledged ({}) for {ran} trials: the soak proved little",
        l.acked.len()
    );
    support::summary(
        "kill",
        &format!(
            "{ran}/{trials} trials, {ran} kill -9, {} images acknowledged and verified, {} \
             deleted, {} pulls while running, {} images fed at the parent, {} tags listed whole, \
             all acknowledged at the parent; seed {seed}",
            l.acked.len(),
            l.deleted,
            counts.pulls.load(Relaxed),
            counts.fed.load(Relaxed),
            done.listed.len()
        ),
        started,
    );
}
