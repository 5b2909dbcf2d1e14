//! Disk soak (the long form of tests/disk_full.rs): a ReadWrite child whose data directory is a
//! small tmpfs syncs both ways while clients push to it and to its parent; a filler file takes
//! all free space and is removed again, over and over. Nothing acknowledged is lost, nothing
//! listed is partial, and once space stays free the sync completes: child and parent hold the
//! same tags and digests.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};

use crate::common::tmpfs::{fill, Tmpfs};
use crate::common::{self, oci, Registry};
use crate::support::{self, check_image, check_tag, tag_digests};

/// Pushed at the child (synced up).
const UP: &str = "disk/up";
/// Pushed at the parent (synced down).
const DOWN: &str = "disk/down";

/// Acknowledged images: `repo:tag` → (manifest digest, blob digests).
type Acked = BTreeMap<String, (String, Vec<String>)>;

/// What the clients did.
#[derive(Default)]
struct Counts {
    acked_up: AtomicU64,
    refused: AtomicU64,
    fed: AtomicU64,
}

/// Pushes `img` with plain requests; whether every part got a 201 (refusals are counted).
fn try_push(c: &reqwest::blocking::Client, base: &str, tag: &str, img: &oci::Manifest) -> bool {
    for b in &img.blobs {
        let url = format!("{base}/v2/{UP}/blobs/uploads/?digest={}", b.digest);
        if !c
            .post(url)
            .body(b.bytes.clone())
            .send()
            .is_ok_and(|r| r.status().as_u16() == 201)
        {
            return false;
        }
    }
    let r = c
        .put(format!("{base}/v2/{UP}/manifests/{tag}"))
        .header("Content-Type", oci::OCI_MANIFEST)
        .body(img.bytes.clone())
        .send();
    r.is_ok_and(|r| r.status().as_u16() == 201)
}

/// A one-layer image of 20–200 kB, its layer drawn from `seed`.
fn small_image(rng: &mut rand::rngs::StdRng, seed: u64) -> oci::Manifest {
    let len = rng.random_range(20_000..200_000);
    oci::image_with_layers(vec![oci::pseudo_random(len, seed)])
}

/// Pushes `count` images to the child (a pause between); records what was acknowledged.
fn pusher(
    base: String,
    seed: u64,
    count: u64,
    acked: Arc<Mutex<Acked>>,
    n: Arc<Counts>,
    stop: Arc<AtomicBool>,
) {
    let c = common::http();
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    for i in 0..count {
        if stop.load(Relaxed) {
            return;
        }
        let img = small_image(&mut rng, seed ^ i);
        let tag = format!("t{i}");
        if try_push(&c, &base, &tag, &img) {
            let blobs = img.blobs.iter().map(|b| b.digest.clone()).collect();
            let mut a = acked.lock().unwrap_or_else(|p| p.into_inner());
            a.insert(format!("{UP}:{tag}"), (img.digest.clone(), blobs));
            n.acked_up.fetch_add(1, Relaxed);
        } else {
            n.refused.fetch_add(1, Relaxed);
        }
        std::thread::sleep(Duration::from_millis(rng.random_range(300..900)));
    }
}

/// Pushes `count` images to the parent (a normal disk) and asks the child to sync.
fn feeder(
    parent: String,
    child: String,
    seed: u64,
    count: u64,
    n: Arc<Counts>,
    stop: Arc<AtomicBool>,
) {
    let c = common::http();
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    for i in 0..count {
        if stop.load(Relaxed) {
            return;
        }
        let img = small_image(&mut rng, seed ^ i);
        oci::push(&c, &parent, DOWN, &format!("t{i}"), &img);
        n.fed.fetch_add(1, Relaxed);
        let _ = c.post(format!("{child}/acr/v1/sync")).send();
        std::thread::sleep(Duration::from_millis(rng.random_range(300..900)));
    }
}

/// Every acknowledged image whole at `base`, and every tag it lists in both repositories whole.
fn verify(base: &str, acked: &Acked) -> Vec<String> {
    let mut bad = Vec::new();
    for (key, (digest, blobs)) in acked {
        let tag = key.rsplit(':').next().unwrap_or_default();
        bad.extend(check_image(base, UP, tag, digest, blobs));
    }
    for repo in [UP, DOWN] {
        for tag in support::tags(base, repo) {
            bad.extend(check_tag(base, repo, &tag).1);
        }
    }
    bad
}

/// The soak: `SOAK_FILLS` fill-and-free cycles (default 30) within `SOAK_MINUTES`.
#[test]
fn a_disk_that_fills_and_empties_during_sync() {
    let started = Instant::now();
    let (mut rng, seed) = support::rng("disk");
    let fills = support::knob("SOAK_FILLS", 30);
    let limit = support::time_limit();
    let parent = Registry::start();
    let tmp = tempfile::TempDir::new().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let mnt = tmp.path().join("data");
    // Room for what the clients add (at most five images of 0.2 MiB a cycle each way), plus
    // the database: the filler, not the content, fills the disk.
    let disk = Tmpfs::mount(&mnt, &format!("{}m", 32 + 2 * fills));
    let mut reg = support::child_in(tmp, &parent.host(), &support::rw_config(&[UP, DOWN], ""));
    let acked = Arc::new(Mutex::new(Acked::new()));
    let counts = Arc::new(Counts::default());
    let stop = Arc::new(AtomicBool::new(false));
    let clients = [
        {
            let (b, a, n, s, ps) = (
                reg.url(),
                acked.clone(),
                counts.clone(),
                stop.clone(),
                rng.random(),
            );
            std::thread::spawn(move || pusher(b, ps, fills * 5, a, n, s))
        },
        {
            let (p, b, n, s, ps) = (
                parent.url(),
                reg.url(),
                counts.clone(),
                stop.clone(),
                rng.random(),
            );
            std::thread::spawn(move || feeder(p, b, ps, fills * 5, n, s))
        },
    ];
    let (mut ran, mut full_for) = (0, Duration::ZERO);
    for i in 0..fills {
        if started.elapsed() > limit {
            eprintln!("time limit {limit:?} reached after {ran} cycles");
            break;
        }
        std::thread::sleep(Duration::from_millis(rng.random_range(200..1500)));
        let filler = fill(&mnt);
        let hold = Duration::from_millis(rng.random_range(300..2000));
        std::thread::sleep(hold);
        std::fs::remove_file(&filler).unwrap_or_else(|e| panic!("removing the filler: {e}"));
        full_for += hold;
        ran += 1;
        // While it runs: whatever the child acknowledged and lists is whole.
        let snapshot = acked.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let bad = verify(&reg.url(), &snapshot);
        assert!(
            bad.is_empty(),
            "cycle {i} (seed {seed}):\n{}\n{}",
            bad.join("\n"),
            support::tail(&reg.log(), 30)
        );
        eprintln!(
            "cycle {i}: full for {hold:?}; {} acknowledged at the child, {} refused, {} fed, {:?}",
            counts.acked_up.load(Relaxed),
            counts.refused.load(Relaxed),
            counts.fed.load(Relaxed),
            started.elapsed()
        );
    }
    stop.store(true, Relaxed);
    for h in clients {
        assert!(h.join().is_ok(), "a client thread failed");
    }
    let faults_done = started.elapsed();
    let acked = acked.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let want_up: BTreeMap<String, String> = acked
        .iter()
        .map(|(k, (d, _))| (k.clone(), d.clone()))
        .collect();
    let same = || {
        let down = tag_digests(&parent.url(), &[DOWN]);
        tag_digests(&reg.url(), &[DOWN]) == down
            && tag_digests(&reg.url(), &[UP]) == want_up
            && tag_digests(&parent.url(), &[UP]) == want_up
    };
    let converged = support::converge(&reg, Duration::from_secs(180), same);
    assert!(
        converged,
        "sync did not complete 180 s after space came back (seed {seed}): child {UP} {} of {}, \
         {DOWN} {} of {} tags; parent {UP} {}\n{}",
        tag_digests(&reg.url(), &[UP]).len(),
        want_up.len(),
        tag_digests(&reg.url(), &[DOWN]).len(),
        tag_digests(&parent.url(), &[DOWN]).len(),
        tag_digests(&parent.url(), &[UP]).len(),
        support::tail(&reg.log(), 40)
    );
    let took = started.elapsed() - faults_done;
    reg.restart();
    let bad = verify(&reg.url(), &acked);
    assert!(
        bad.is_empty(),
        "after a restart (seed {seed}):\n{}",
        bad.join("\n")
    );
    let refused = counts.refused.load(Relaxed);
    let logged = reg.log().to_lowercase().matches("no space left").count();
    assert!(
        refused > 0,
        "no push was ever refused: the disk never filled while writing"
    );
    support::summary(
        "disk",
        &format!(
            "{ran}/{fills} fill cycles (full {:.1} s in all), {} pushes acknowledged and {refused} \
             refused at the child, {logged} no-space errors logged, {} images synced down, converged {:.1} s after the last \
             fill, verified again after a restart; seed {seed}",
            full_for.as_secs_f64(),
            want_up.len(),
            counts.fed.load(Relaxed),
            took.as_secs_f64()
        ),
        started,
    );
    drop(reg);
    drop(disk);
}
