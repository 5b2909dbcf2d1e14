//! kill -9 at random moments while clients push: nothing acknowledged is lost, nothing partial
//! or mismatching is ever served, and upload sessions survive a restart.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::oci;
use rand::{Rng, SeedableRng};

const TRIALS: usize = 30;

/// An acknowledged push: repository, tag, manifest digest and its blob digests.
struct Acked {
    repo: String,
    tag: String,
    digest: String,
    blobs: Vec<String>,
}

/// What pushers saw acknowledged, and every blob they attempted, per trial.
#[derive(Default)]
struct Ledger {
    manifests: Vec<Acked>,
    attempted: Vec<(String, String)>,
}

/// Pushes unique images until the server stops answering; records only what got a 201.
fn pusher(
    base: String,
    id: usize,
    trial: usize,
    ledger: Arc<Mutex<Ledger>>,
    stop: Arc<AtomicBool>,
) {
    let c = common::http();
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) && n < 1000 {
        n += 1;
        let seed = (trial as u64) << 32 | (id as u64) << 20 | n;
        let sizes = [
            1 + (seed % 5000) as usize,
            300_000 + (seed % 700_000) as usize,
        ];
        let img = oci::image_with_layers(
            sizes
                .iter()
                .map(|s| oci::pseudo_random(*s, seed ^ *s as u64))
                .collect(),
        );
        let repo = format!("crash/p{id}");
        let tag = format!("t{trial}-{n}");
        {
            let mut l = ledger.lock().unwrap_or_else(|p| p.into_inner());
            for b in &img.blobs {
                l.attempted.push((repo.clone(), b.digest.clone()));
            }
        }
        for b in &img.blobs {
            let ok = c
                .post(format!(
                    "{base}/v2/{repo}/blobs/uploads/?digest={}",
                    b.digest
                ))
                .body(b.bytes.clone())
                .send()
                .map(|r| r.status().as_u16() == 201)
                .unwrap_or(false);
            if !ok {
                return;
            }
        }
        let ok = c
            .put(format!("{base}/v2/{repo}/manifests/{tag}"))
            .header("Content-Type", oci::OCI_MANIFEST)
            .body(img.bytes.clone())
            .send()
            .map(|r| r.status().as_u16() == 201)
            .unwrap_or(false);
        if !ok {
            return;
        }
        let mut l = ledger.lock().unwrap_or_else(|p| p.into_inner());
        l.manifests.push(Acked {
            repo,
            tag,
            digest: img.digest.clone(),
            blobs: img.blobs.iter().map(|b| b.digest.clone()).collect(),
        });
    }
}

/// Fetches a path and returns (status, sha256 of the body).
fn fetch(c: &reqwest::blocking::Client, url: &str) -> (u16, String) {
    let r = c
        .get(url)
        .send()
        .unwrap_or_else(|e| panic!("GET {url}: {e}"));
    let status = r.status().as_u16();
    (status, oci::sha256(&r.bytes().unwrap_or_default()))
}

/// Checks acknowledged pushes from index `full_from` on with full content hashing, and older
/// ones by existence (their bytes were verified after an earlier kill and blobs are immutable);
/// then checks that every blob attempted since `attempted_from` is absent or whole.
fn verify(reg: &common::Registry, ledger: &Ledger, full_from: usize, attempted_from: usize) {
    let c = common::http();
    let base = reg.url();
    for (i, a) in ledger.manifests.iter().enumerate() {
        let full = i >= full_from;
        for reference in [a.tag.as_str(), a.digest.as_str()] {
            let (st, d) = fetch(&c, &format!("{base}/v2/{}/manifests/{reference}", a.repo));
            assert_eq!(st, 200, "acknowledged {}:{reference} lost", a.repo);
            assert_eq!(d, a.digest, "{}:{reference} changed", a.repo);
        }
        for b in &a.blobs {
            let url = format!("{base}/v2/{}/blobs/{b}", a.repo);
            if full {
                let (st, d) = fetch(&c, &url);
                assert_eq!(st, 200, "acknowledged blob {b} lost");
                assert_eq!(&d, b, "blob {b} corrupt");
            } else {
                let st = c.head(&url).send().map(|r| r.status().as_u16());
                assert_eq!(st.unwrap_or(0), 200, "acknowledged blob {b} lost");
            }
        }
    }
    // Anything visible at all must be whole and match its digest.
    for (repo, digest) in &ledger.attempted[attempted_from..] {
        match fetch(&c, &format!("{base}/v2/{repo}/blobs/{digest}")) {
            (404, _) => {}
            (200, d) => assert_eq!(&d, digest, "partial or mismatching blob served"),
            (s, _) => panic!("unexpected {s} for {digest}"),
        }
    }
}

#[test]
fn kill_9_during_pushes_loses_nothing_acknowledged() {
    let seed: u64 = rand::rng().random();
    eprintln!("crash test seed {seed}");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut reg = common::Registry::start();
    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let (mut acked_before, mut attempted_before) = (0, 0);
    for trial in 0..TRIALS {
        let stop = Arc::new(AtomicBool::new(false));
        let handles: Vec<_> = (0..2)
            .map(|id| {
                let (base, l, s) = (reg.url(), ledger.clone(), stop.clone());
                std::thread::spawn(move || pusher(base, id, trial, l, s))
            })
            .collect();
        std::thread::sleep(Duration::from_millis(rng.random_range(20..600)));
        let t0 = std::time::Instant::now();
        reg.stop_hard();
        stop.store(true, Ordering::Relaxed);
        for h in handles {
            let _ = h.join();
        }
        let t1 = t0.elapsed();
        reg.restart();
        let t2 = t0.elapsed();
        let l = ledger.lock().unwrap_or_else(|p| p.into_inner());
        verify(&reg, &l, acked_before, attempted_before);
        (acked_before, attempted_before) = (l.manifests.len(), l.attempted.len());
        eprintln!(
            "trial {trial}: join {t1:?} restart {t2:?} verified {:?}",
            t0.elapsed()
        );
    }
    let l = ledger.lock().unwrap_or_else(|p| p.into_inner());
    verify(&reg, &l, 0, 0);
    assert!(
        l.manifests.len() > TRIALS,
        "too few pushes acknowledged: {}",
        l.manifests.len()
    );
    eprintln!(
        "{} manifests acknowledged and verified across {TRIALS} kills",
        l.manifests.len()
    );
}

#[test]
fn upload_session_resumes_after_kill_9() {
    let mut reg = common::Registry::start();
    let c = common::http();
    let data = oci::pseudo_random(3 * 1024 * 1024, 42);
    let digest = oci::sha256(&data);
    let r = c
        .post(format!("{}/v2/resume/app/blobs/uploads/", reg.url()))
        .send()
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(r.status().as_u16(), 202);
    let loc = r.headers()["location"]
        .to_str()
        .unwrap_or_default()
        .to_owned();
    let path = loc[loc.find("/v2/").unwrap_or(0)..].to_owned();
    let half = data.len() / 2;
    let r = c
        .patch(format!("{}{path}", reg.url()))
        .header("Content-Range", format!("0-{}", half - 1))
        .body(data[..half].to_vec())
        .send()
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(r.status().as_u16(), 202);

    reg.stop_hard();
    reg.restart();

    let st = c
        .get(format!("{}{path}", reg.url()))
        .send()
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(st.status().as_u16(), 204);
    assert_eq!(
        st.headers()["range"].to_str().unwrap_or_default(),
        format!("0-{}", half - 1)
    );
    let r = c
        .patch(format!("{}{path}", reg.url()))
        .header("Content-Range", format!("{half}-{}", data.len() - 1))
        .body(data[half..].to_vec())
        .send()
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(r.status().as_u16(), 202);
    let r = c
        .put(format!("{}{path}?digest={digest}", reg.url()))
        .send()
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(r.status().as_u16(), 201);
    let got = c
        .get(format!("{}/v2/resume/app/blobs/{digest}", reg.url()))
        .send()
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(oci::sha256(&got.bytes().unwrap_or_default()), digest);
}

#[test]
fn abandoned_sessions_are_cleaned_up() {
    let reg = common::Registry::start_with(&["--upload-max-age", "2s"]);
    let c = common::http();
    let r = c
        .post(format!("{}/v2/old/app/blobs/uploads/", reg.url()))
        .send()
        .unwrap_or_else(|e| panic!("{e}"));
    let loc = r.headers()["location"]
        .to_str()
        .unwrap_or_default()
        .to_owned();
    c.patch(&loc)
        .body(vec![1u8; 1000])
        .send()
        .unwrap_or_else(|e| panic!("{e}"));
    let mut gone = false;
    for _ in 0..100 {
        std::thread::sleep(Duration::from_millis(100));
        if c.get(&loc)
            .send()
            .map(|r| r.status().as_u16() == 404)
            .unwrap_or(false)
        {
            gone = true;
            break;
        }
    }
    assert!(
        gone,
        "an idle session older than --upload-max-age was not removed"
    );
    let leftovers = std::fs::read_dir(reg.data.join("uploads"))
        .map(|d| d.count())
        .unwrap_or(0);
    assert_eq!(leftovers, 0, "upload files left behind");
}
