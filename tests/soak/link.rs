//! Link soak (the long form of tests/sync/pushfaults.rs): a ReadWrite child pushes up through a
//! fault proxy while clients push to it; the link is cut (down for a while, or cut after a
//! random number of bytes either way) and the parent is killed with SIGKILL and restarted on
//! the same port, at random moments. Once the faults stop, child and parent hold exactly the
//! tags and manifest digests the child acknowledged, with every blob whole at the parent.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};

use crate::common::faultproxy::FaultProxy;
use crate::common::{self, oci, Registry};
use crate::support::{self, check_image, tag_digests};

/// Repositories synced both ways.
const REPOS: [&str; 3] = ["link/a", "link/b", "link/c"];

/// What the child acknowledged: `repo:tag` → (manifest digest, blob digests).
type Expected = BTreeMap<String, (String, Vec<String>)>;

/// Pushes images to the child (never faulted) until stopped: new tags, and `latest` moving.
fn pusher(base: String, seed: u64, exp: Arc<Mutex<Expected>>, stop: Arc<AtomicBool>) {
    let c = common::http();
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    for n in 0..5000u64 {
        if stop.load(Relaxed) {
            return;
        }
        let repo = REPOS[rng.random_range(0..REPOS.len())];
        let size = rng.random_range(1_000..1_500_000);
        let img = oci::image_with_layers(vec![
            oci::pseudo_random(size, seed ^ n),
            oci::pseudo_random(200, seed ^ n ^ 1 << 40),
        ]);
        let tag = if rng.random_bool(0.2) {
            "latest".to_owned()
        } else {
            format!("t{n}")
        };
        oci::push(&c, &base, repo, &tag, &img); // panics unless acknowledged
        let blobs = img.blobs.iter().map(|b| b.digest.clone()).collect();
        let mut e = exp.lock().unwrap_or_else(|p| p.into_inner());
        e.insert(format!("{repo}:{tag}"), (img.digest.clone(), blobs));
        drop(e);
        std::thread::sleep(Duration::from_millis(rng.random_range(20..400)));
    }
}

/// Counts of injected faults.
#[derive(Default, Debug)]
struct Faults {
    downs: u64,
    byte_cuts: u64,
    parent_kills: u64,
}

/// One fault cycle at a random moment: a link cut of some kind, and half the time a parent kill.
fn cycle(proxy: &FaultProxy, parent: &mut Registry, rng: &mut rand::rngs::StdRng, f: &mut Faults) {
    std::thread::sleep(Duration::from_millis(rng.random_range(100..1500)));
    if rng.random_bool(0.5) {
        f.downs += 1;
        proxy.set_down(true);
    } else {
        f.byte_cuts += 1;
        let n = rng.random_range(16_000..2_000_000);
        if rng.random_bool(0.5) {
            proxy.set_cut_every_up(Some(n));
        } else {
            proxy.set_cut_every(Some(n));
        }
    }
    std::thread::sleep(Duration::from_millis(rng.random_range(100..1500)));
    if rng.random_bool(0.5) {
        f.parent_kills += 1;
        parent.stop_hard();
        std::thread::sleep(Duration::from_millis(rng.random_range(0..800)));
        parent.restart_same_port();
    }
    proxy.set_down(false);
    proxy.set_cut_every_up(None);
    proxy.set_cut_every(None);
}

/// The soak: `SOAK_CUTS` fault cycles (default 100) within `SOAK_MINUTES`.
#[test]
fn link_cuts_and_parent_restarts_during_a_read_write_sync() {
    let started = Instant::now();
    let (mut rng, seed) = support::rng("link");
    let cuts = support::knob("SOAK_CUTS", 100);
    let limit = support::time_limit();
    let mut parent = Registry::start();
    let proxy = FaultProxy::start(parent.addr());
    let reg = support::child(&proxy.host(), &support::rw_config(&REPOS, ""));
    let exp = Arc::new(Mutex::new(Expected::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let pushing = {
        let (base, e, s, ps) = (reg.url(), exp.clone(), stop.clone(), rng.random());
        std::thread::spawn(move || pusher(base, ps, e, s))
    };
    let mut f = Faults::default();
    let mut ran = 0;
    for i in 0..cuts {
        if started.elapsed() > limit {
            eprintln!("time limit {limit:?} reached after {ran} cycles");
            break;
        }
        cycle(&proxy, &mut parent, &mut rng, &mut f);
        ran += 1;
        if i % 10 == 9 {
            let n = exp.lock().map(|e| e.len()).unwrap_or(0);
            eprintln!(
                "cycle {i}: {f:?}, {n} tags acknowledged, {:?}",
                started.elapsed()
            );
        }
    }
    stop.store(true, Relaxed);
    assert!(pushing.join().is_ok(), "a push to the child failed");
    let faults_done = started.elapsed();
    let exp = exp.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let want: BTreeMap<String, String> = exp
        .iter()
        .map(|(k, (d, _))| (k.clone(), d.clone()))
        .collect();
    let same =
        || tag_digests(&reg.url(), &REPOS) == want && tag_digests(&parent.url(), &REPOS) == want;
    let converged = support::converge(&reg, Duration::from_secs(300), same);
    let (at_child, at_parent) = (
        tag_digests(&reg.url(), &REPOS),
        tag_digests(&parent.url(), &REPOS),
    );
    assert!(
        converged,
        "not converged 300 s after the faults stopped (seed {seed}):\nacknowledged {} tags\n\
         child differs: {:?}\nparent differs: {:?}\nchild log:\n{}",
        want.len(),
        differences(&want, &at_child),
        differences(&want, &at_parent),
        support::tail(&reg.log(), 40)
    );
    let took = started.elapsed() - faults_done;
    for (key, (digest, blobs)) in &exp {
        let (repo, tag) = key.split_once(':').unwrap_or_default();
        let bad = check_image(&parent.url(), repo, tag, digest, blobs);
        assert!(bad.is_none(), "at the parent: {bad:?} (seed {seed})");
    }
    support::summary(
        "link",
        &format!(
            "{ran}/{cuts} cycles ({} link downs, {} byte-count cuts, {} parent kill -9), {} tags \
             acknowledged, child and parent identical {:.1} s after the faults stopped; seed {seed}",
            f.downs,
            f.byte_cuts,
            f.parent_kills,
            want.len(),
            took.as_secs_f64()
        ),
        started,
    );
}

/// Entries of `have` that differ from `want` (missing, extra or another digest), at most 20.
fn differences(want: &BTreeMap<String, String>, have: &BTreeMap<String, String>) -> Vec<String> {
    let keys: std::collections::BTreeSet<&String> = want.keys().chain(have.keys()).collect();
    keys.into_iter()
        .filter(|k| want.get(*k) != have.get(*k))
        .take(20)
        .map(|k| format!("{k}: want {:?} have {:?}", want.get(k), have.get(k)))
        .collect()
}
