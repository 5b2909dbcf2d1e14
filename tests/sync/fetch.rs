//! Fetch-through: a child asked for content it does not hold yet serves it from the parent
//! while storing it; concurrent requests for one blob share a single upstream GET.

use std::time::Duration;

use crate::common::faultproxy::FaultProxy;
use crate::common::{self, oci, Registry};
use crate::{blob_sha, child, manifest_digest, policy_for, status};

const REPO: &str = "ft/app";

#[test]
fn concurrent_pulls_of_an_unsynced_blob_share_one_upstream_fetch() {
    let root = Registry::start();
    let proxy = FaultProxy::start(
        format!("127.0.0.1:{}", root.port)
            .parse()
            .unwrap_or_else(|e| panic!("{e}")),
    );
    // Continuous sync is slow here (once an hour): only fetch-through can bring content early.
    let reg = child(
        &proxy.host(),
        "unused",
        &policy_for(&[REPO], "").replace("\"1s\"", "\"1h\""),
        &[],
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while status(&reg)["syncPasses"].as_u64().unwrap_or(0) < 1 {
        assert!(
            std::time::Instant::now() < deadline,
            "first sync pass never ended"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let image = oci::image_with_layers(vec![oci::pseudo_random(6 << 20, 5)]);
    oci::push(&common::http(), &root.url(), REPO, "v1", &image);
    proxy.reset_counters();

    // A HEAD for the tag answers from the parent.
    let url = format!("{}/v2/{REPO}/manifests/v1", reg.url());
    let r = common::http()
        .head(&url)
        .header("Accept", oci::OCI_MANIFEST)
        .send()
        .unwrap_or_else(|e| panic!("HEAD {url}: {e}"));
    assert_eq!(r.status().as_u16(), 200, "HEAD {url}");
    let d = r
        .headers()
        .get("docker-content-digest")
        .and_then(|v| v.to_str().ok());
    assert_eq!(d, Some(image.digest.as_str()));

    // Ten clients at once for the layer (smaller than a chunk: one GET when shared): all get it, the parent sees one GET.
    let layer = image.blobs[1].digest.clone();
    let base = reg.url();
    let pulls: Vec<_> = (0..10)
        .map(|_| {
            let (base, layer) = (base.clone(), layer.clone());
            std::thread::spawn(move || blob_sha(&base, REPO, &layer))
        })
        .collect();
    for p in pulls {
        let got = p
            .join()
            .unwrap_or_else(|_| panic!("a pull thread panicked"));
        assert_eq!(
            got,
            (200, layer.clone()),
            "a concurrent pull got other bytes"
        );
    }
    let gets = proxy.count_requests(&format!("GET /v2/{REPO}/blobs/{layer}"));
    assert_eq!(gets, 1, "upstream requests: {:#?}", proxy.requests());

    // A HEAD for a blob only the parent has answers 200 with its size.
    let config = &image.blobs[0];
    let url = format!("{base}/v2/{REPO}/blobs/{}", config.digest);
    let r = common::http()
        .head(&url)
        .send()
        .unwrap_or_else(|e| panic!("HEAD {url}: {e}"));
    assert_eq!(r.status().as_u16(), 200, "HEAD {url}");
    let len = r
        .headers()
        .get("content-length")
        .and_then(|v| v.to_str().ok());
    assert_eq!(len, Some(config.bytes.len().to_string().as_str()));

    // What the parent lacks stays unknown.
    let missing = oci::sha256(b"nowhere");
    assert_eq!(blob_sha(&base, REPO, &missing).0, 404);
    assert_eq!(manifest_digest(&base, REPO, "nope").0, 404);

    // Fetched content was stored: with the parent gone the child still serves it all.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        proxy.set_down(true);
        let ok = manifest_digest(&base, REPO, "v1") == (200, image.digest.clone())
            && image
                .blobs
                .iter()
                .all(|b| blob_sha(&base, REPO, &b.digest) == (200, b.digest.clone()));
        if ok {
            break;
        }
        proxy.set_down(false);
        assert!(
            std::time::Instant::now() < deadline,
            "fetched content was not stored:\n{}",
            crate::tail(&reg.log(), 40)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}
