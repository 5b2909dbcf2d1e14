//! Push-up under faults (DESIGN §6: "resumable uploads … nothing acknowledged to a client is
//! ever lost"): a ReadWrite child killed with SIGKILL at random moments while it pushes up, link
//! cuts through a fault-injecting proxy during a 100 MiB layer upload, and a child restarted in
//! the middle of that upload. The parent is a connected-registry root, which resumes an upload
//! by its session id (unlike Debian's docker-registry 2.8, see src/sync/parent/push.rs).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use serde_json::Value;

use crate::common::faultproxy::FaultProxy;
use crate::common::{http, oci, Registry};
use crate::{blob_sha, child, manifest_digest, policy_rw, status, sync_now, tags, tail, wait_for};

/// Upload chunk size of the children of the link tests (`chunk_size_mb = 4`).
const CHUNK: u64 = 4 << 20;
/// Request headers and small requests (probes, HEADs, tag lists, manifest, config) allowed
/// besides the layer itself.
const OVERHEAD: u64 = 256 << 10;
/// Headers of the requests one more pass costs, allowed per cut.
const PER_CUT: u64 = 8 << 10;
/// Size of the layer of the link tests.
const BIG: usize = 100 << 20;
/// Repositories of the kill test.
const KILL_REPOS: [&str; 3] = ["kill/a", "kill/b", "kill/c"];
/// Trials of the kill test (also bounded by `KILL_LOOP_LIMIT`).
const TRIALS: usize = 12;
/// Wall-clock bound of the kill test's trial loop.
const KILL_LOOP_LIMIT: Duration = Duration::from_secs(45);

/// What the child acknowledged for a tag: the manifest digest and the blobs it needs.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Acked {
    digest: String,
    blobs: Vec<String>,
}

/// Acknowledged final state: repository → tag → manifest.
type Expected = BTreeMap<String, BTreeMap<String, Acked>>;

/// Pushes `m` to `repo:tag` at `base` (the child) and records the acknowledged result.
fn push_acked(
    c: &reqwest::blocking::Client,
    base: &str,
    exp: &mut Expected,
    repo: &str,
    tag: &str,
    m: &oci::Manifest,
) {
    oci::push(c, base, repo, tag, m); // panics unless every blob and the manifest got 201
    let acked = Acked {
        digest: m.digest.clone(),
        blobs: m.blobs.iter().map(|b| b.digest.clone()).collect(),
    };
    exp.entry(repo.to_owned())
        .or_default()
        .insert(tag.to_owned(), acked);
}

/// A config-distinct image over `layers` (the seed makes the config, hence the manifest, unique).
fn image(layers: Vec<Vec<u8>>, seed: u64) -> oci::Manifest {
    let mut layers = layers;
    layers.push(oci::pseudo_random(64 + (seed % 512) as usize, seed));
    oci::image_with_layers(layers)
}

/// The first difference between a registry's tags and `exp` (tag set and digests), if any.
fn tag_difference(base: &str, exp: &Expected) -> Option<String> {
    for (repo, want) in exp {
        let have = tags(base, repo);
        let want_tags: Vec<&String> = want.keys().collect();
        if have.iter().collect::<Vec<_>>() != want_tags {
            let have_set: BTreeSet<&String> = have.iter().collect();
            let want_set: BTreeSet<&String> = want.keys().collect();
            let missing: Vec<_> = want_set.difference(&have_set).collect();
            let extra: Vec<_> = have_set.difference(&want_set).collect();
            return Some(format!(
                "{repo}: missing tags {missing:?}, extra tags {extra:?}"
            ));
        }
        for (tag, a) in want {
            let got = manifest_digest(base, repo, tag);
            if got != (200, a.digest.clone()) {
                return Some(format!(
                    "{repo}:{tag} is {got:?}, acknowledged {}",
                    a.digest
                ));
            }
        }
    }
    None
}

/// Whether `base` lacks any of `changes` (repository, tag, digest) right now.
fn lacks_any(base: &str, changes: &[(String, String, String)]) -> bool {
    changes
        .iter()
        .any(|(repo, tag, d)| manifest_digest(base, repo, tag) != (200, d.clone()))
}

/// Sizes of the upload session files in a registry's data directory.
fn upload_files(data: &Path) -> Vec<u64> {
    let Ok(dir) = std::fs::read_dir(data.join("uploads")) else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok())
        .filter(|e| !e.file_name().to_string_lossy().starts_with("tmp-"))
        .filter_map(|e| e.metadata().ok())
        .filter(|m| m.is_file())
        .map(|m| m.len())
        .collect()
}

/// `syncPasses` of a child's status.
fn passes(reg: &Registry) -> u64 {
    status(reg)["syncPasses"].as_u64().unwrap_or(0)
}

/// Waits until the child finished two more sync passes than now (so one ran entirely after
/// this call), then returns its status: the outbox figures are only recomputed by a pass.
fn status_after_full_pass(reg: &Registry) -> Value {
    let from = passes(reg);
    wait_for(reg, "two more sync passes", Duration::from_secs(30), || {
        passes(reg) >= from + 2
    });
    status(reg)
}

/// Waits (asking for a sync every 2 s) until `parent` holds exactly `exp`; panics with the
/// difference, the child's status and its log after `limit`.
fn wait_converged(reg: &Registry, parent: &str, exp: &Expected, limit: Duration) {
    let deadline = Instant::now() + limit;
    let mut asked = Instant::now();
    loop {
        let Some(diff) = tag_difference(parent, exp) else {
            return;
        };
        if Instant::now() > deadline {
            panic!(
                "the parent differs from what the child acknowledged after {limit:?}: {diff}\n\
                 status: {}\nlog:\n{}",
                status(reg),
                tail(&reg.log(), 40)
            );
        }
        if asked.elapsed() > Duration::from_secs(2) {
            sync_now(reg);
            asked = Instant::now();
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The parent's address for `FaultProxy::start`.
fn addr(reg: &Registry) -> std::net::SocketAddr {
    reg.host()
        .parse()
        .unwrap_or_else(|e| panic!("{}: {e}", reg.host()))
}

#[test]
fn kill_9_during_push_up_leaves_the_parent_with_exactly_what_was_acknowledged() {
    let started = Instant::now();
    let seed: u64 = rand::rng().random();
    eprintln!("push-up kill test seed {seed}");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let parent = Registry::start();
    // No faults, only a pause before each forwarded read (at most 64 KiB): a trial's push-up
    // then takes most of a second, so the random kills mostly land while it runs.
    let proxy = FaultProxy::start(addr(&parent));
    proxy.set_delay(Some(Duration::from_millis(3)));
    let policy = policy_rw(&KILL_REPOS, "chunk_size_mb = 1");
    let mut reg = child(&proxy.host(), "unused", &policy, &[]);
    let c = http();
    let mut exp = Expected::new();
    let (mut in_push_up, mut outbox_said, mut mid_upload, mut trials) = (0, 0, 0, 0);
    for trial in 0..TRIALS {
        if started.elapsed() > KILL_LOOP_LIMIT {
            break;
        }
        trials += 1;
        let base = reg.url();
        let s = |n: u64| seed ^ ((trial as u64) << 8 | n);
        let tag = format!("t{trial}");
        let mut changes = Vec::new();
        let mut push = |exp: &mut Expected, repo: &str, tag: &str, m: oci::Manifest| {
            push_acked(&c, &base, exp, repo, tag, &m);
            changes.push((repo.to_owned(), tag.to_owned(), m.digest.clone()));
        };
        // Small unique image; a 2–3 MiB layer in b that c shares (a mount at the parent).
        push(
            &mut exp,
            "kill/a",
            &tag,
            image(
                vec![oci::pseudo_random(rng.random_range(1..64 << 10), s(1))],
                s(2),
            ),
        );
        let big = oci::pseudo_random(rng.random_range(2 << 20..3 << 20), s(3));
        push(&mut exp, "kill/b", &tag, image(vec![big.clone()], s(4)));
        push(&mut exp, "kill/c", &tag, image(vec![big], s(5)));
        if rng.random_bool(0.5) {
            // `latest` moves to a new image (with an upload in flight for a while).
            let repo = KILL_REPOS[rng.random_range(0..KILL_REPOS.len())];
            let layer = oci::pseudo_random(rng.random_range(1 << 20..3 << 20), s(6));
            push(&mut exp, repo, "latest", image(vec![layer], s(7)));
        }
        sync_now(&reg);
        std::thread::sleep(Duration::from_millis(rng.random_range(0..=800)));
        let st = status(&reg);
        let behind = lacks_any(&parent.url(), &changes);
        let pending = st["outbox"]["pendingCount"].as_u64().unwrap_or(0);
        reg.stop_hard();
        let partial: Vec<u64> = upload_files(&parent.data)
            .into_iter()
            .filter(|n| *n > 0)
            .collect();
        in_push_up += usize::from(behind);
        outbox_said += usize::from(pending > 0);
        mid_upload += usize::from(!partial.is_empty());
        eprintln!(
            "trial {trial}: killed with the parent {} (status: outbox pending {pending}, {}); \
             partial uploads at the parent {partial:?}; {:?}",
            if behind { "behind" } else { "up to date" },
            st["connectionState"],
            started.elapsed()
        );
        reg.restart();
    }
    eprintln!(
        "{trials} kills: {in_push_up} with the parent lacking an acknowledged change, \
         {outbox_said} with the status outbox pending > 0, {mid_upload} with an upload \
         part way at the parent; loop {:?}",
        started.elapsed()
    );

    wait_converged(&reg, &parent.url(), &exp, Duration::from_secs(60));
    let converged = started.elapsed();
    // Nothing else at the parent: the catalog holds exactly the pushed repositories.
    let catalog: Value = c
        .get(format!("{}/v2/_catalog", parent.url()))
        .send()
        .and_then(|r| r.json())
        .unwrap_or_else(|e| panic!("catalog: {e}"));
    let mut repos: Vec<String> =
        serde_json::from_value(catalog["repositories"].clone()).unwrap_or_default();
    repos.sort();
    let want: Vec<String> = exp.keys().cloned().collect();
    assert_eq!(repos, want, "repositories at the parent");
    // The child still has all it acknowledged (and nothing more).
    if let Some(d) = tag_difference(&reg.url(), &exp) {
        panic!("the child itself differs from what it acknowledged: {d}");
    }
    let mut checked = BTreeSet::new();
    for (repo, by_tag) in &exp {
        for a in by_tag.values() {
            for b in &a.blobs {
                if checked.insert((repo.clone(), b.clone())) {
                    let got = blob_sha(&parent.url(), repo, b);
                    assert_eq!(got, (200, b.clone()), "blob {b} of {repo} at the parent");
                }
            }
        }
    }
    let st = status_after_full_pass(&reg);
    assert_eq!(
        st["outbox"]["pendingCount"].as_u64(),
        Some(0),
        "outbox not empty after convergence: {st}"
    );
    assert!(
        in_push_up * 2 >= trials && mid_upload >= 1,
        "only {in_push_up} of {trials} kills landed while the parent lacked an acknowledged \
         change, {mid_upload} with an upload part way: the test proved little (seed {seed})"
    );
    eprintln!(
        "converged after {converged:?}; {} tags and {} repository blobs verified at the parent; \
         total {:?}",
        exp.values().map(|t| t.len()).sum::<usize>(),
        checked.len(),
        started.elapsed()
    );
}

#[test]
fn link_cuts_during_a_100_mib_upload_cost_at_most_a_chunk_each() {
    let started = Instant::now();
    let parent = Registry::start();
    let proxy = FaultProxy::start(addr(&parent));
    let policy = policy_rw(&["big/up"], "chunk_size_mb = 4");
    let reg = child(&proxy.host(), "unused", &policy, &[]);
    let layer = oci::pseudo_random(BIG, 9);
    let size = layer.len() as u64;
    let img = oci::image_with_layers(vec![layer]);
    proxy.set_cut_every_up(Some(6 << 20));
    proxy.reset_counters();
    oci::push(&http(), &reg.url(), "big/up", "v1", &img);
    let pushed = started.elapsed();

    wait_for(
        &reg,
        "big/up:v1 at the parent",
        Duration::from_secs(100),
        || manifest_digest(&parent.url(), "big/up", "v1") == (200, img.digest.clone()),
    );
    let (cuts, up) = (proxy.cuts(), proxy.bytes_up());
    let took = started.elapsed() - pushed;
    for b in &img.blobs {
        let got = blob_sha(&parent.url(), "big/up", &b.digest);
        assert_eq!(
            got,
            (200, b.digest.clone()),
            "blob {} at the parent",
            b.digest
        );
    }
    let log = reg.log();
    let restarted = log.matches("starting the upload again").count();
    let failed_passes = log.matches("push-up failed").count();
    assert_eq!(
        restarted,
        0,
        "the child started the upload over instead of resuming it:\n{}",
        tail(&log, 30)
    );
    assert!(cuts >= 10, "only {cuts} cuts for a {size}-byte layer");
    let bound = size + cuts * CHUNK + OVERHEAD + cuts * PER_CUT;
    assert!(
        up <= bound,
        "{up} bytes went up through the proxy; a {size}-byte layer cut {cuts} times with \
         {CHUNK}-byte chunks allows {size} + {cuts}×{CHUNK} + {OVERHEAD} + {cuts}×{PER_CUT} = \
         {bound} (over by {})",
        up - bound
    );
    eprintln!(
        "cut {cuts} times: {up} bytes up for a {size}-byte layer (bound {bound}, {:.1} % over \
         the layer); {failed_passes} push-up passes failed on cuts; at the parent {took:?} after \
         the push; total {:?}",
        (up as f64 / size as f64 - 1.0) * 100.0,
        started.elapsed()
    );
}

#[test]
fn a_child_killed_during_a_100_mib_upload_resumes_from_the_parents_offset() {
    let started = Instant::now();
    let parent = Registry::start();
    let proxy = FaultProxy::start(addr(&parent));
    // A pause before each forwarded read (at most 64 KiB): 100 MiB take several seconds.
    proxy.set_delay(Some(Duration::from_millis(2)));
    let policy = policy_rw(&["big/up"], "chunk_size_mb = 4");
    let mut reg = child(&proxy.host(), "unused", &policy, &[]);
    let layer = oci::pseudo_random(BIG, 11);
    let size = layer.len() as u64;
    let img = oci::image_with_layers(vec![layer]);
    proxy.reset_counters();
    oci::push(&http(), &reg.url(), "big/up", "v1", &img);

    let deadline = Instant::now() + Duration::from_secs(60);
    while proxy.bytes_up() < size * 4 / 10 {
        assert!(
            Instant::now() < deadline,
            "not 40 % up within 60 s: {} bytes; status {}",
            proxy.bytes_up(),
            status(&reg)
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let up_at_kill = proxy.bytes_up();
    reg.stop_hard();
    // The chunk cut by the kill is rolled back at the parent; let it settle.
    let mut held = upload_files(&parent.data);
    for _ in 0..50 {
        std::thread::sleep(Duration::from_millis(50));
        let now = upload_files(&parent.data);
        if now == held && held.iter().all(|n| n % CHUNK == 0) {
            break;
        }
        held = now;
    }
    assert_ne!(
        manifest_digest(&parent.url(), "big/up", "v1").0,
        200,
        "the upload finished before the kill: slow the link more"
    );
    assert_eq!(
        held.len(),
        1,
        "upload sessions at the parent after the kill: {held:?}"
    );
    let at_parent = held[0];
    assert!(
        at_parent >= size / 4,
        "the parent holds only {at_parent} of {size} bytes after {up_at_kill} went up"
    );
    let remaining = size - at_parent;
    proxy.reset_counters();
    proxy.set_delay(None);
    reg.restart();

    wait_for(
        &reg,
        "big/up:v1 at the parent",
        Duration::from_secs(60),
        || manifest_digest(&parent.url(), "big/up", "v1") == (200, img.digest.clone()),
    );
    let up = proxy.bytes_up();
    for b in &img.blobs {
        let got = blob_sha(&parent.url(), "big/up", &b.digest);
        assert_eq!(
            got,
            (200, b.digest.clone()),
            "blob {} at the parent",
            b.digest
        );
    }
    let bound = remaining + CHUNK + OVERHEAD;
    assert!(
        up <= bound,
        "{up} bytes went up after the restart; the parent held {at_parent} of {size} bytes, so \
         resuming allows {remaining} + {CHUNK} + {OVERHEAD} = {bound}: the upload started over\n{}",
        tail(&reg.log(), 30)
    );
    let left = upload_files(&parent.data);
    assert!(
        left.is_empty(),
        "upload sessions left at the parent: {left:?}"
    );
    eprintln!(
        "killed with {up_at_kill} bytes up, {at_parent} of {size} at the parent; {up} bytes up \
         after the restart (bound {bound}); total {:?}",
        started.elapsed()
    );
}
