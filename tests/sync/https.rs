//! A parent over HTTPS with a private CA: trusted only through `--parent-ca`.

use std::time::Duration;

use crate::common::pki::pki;
use crate::common::{self, free_port, oci, Registry};
use crate::{policy_for, status, synced_with, wait_for};

const REPO: &str = "tls/app";

/// A child of `https://<parent>` with the given extra `serve` arguments.
fn https_child(parent: &str, extra: &[&str]) -> Registry {
    let tmp = tempfile::TempDir::new().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let file = tmp.path().join("policy.toml");
    std::fs::write(&file, policy_for(&[REPO], "")).unwrap_or_else(|e| panic!("{e}"));
    let mut args: Vec<String> = vec!["--insecure-no-auth".into(), "--config".into()];
    args.push(file.display().to_string());
    args.extend(extra.iter().map(|s| s.to_string()));
    let cs = crate::connection_string(parent, "unused").replace("Protocol=http", "Protocol=https");
    Registry::start_in(
        tmp,
        args,
        vec![("ACR_REGISTRY_CONNECTION_STRING".into(), cs)],
    )
}

#[test]
fn an_https_parent_is_trusted_through_parent_ca_only() {
    let p = pki("tls.crt", "tls.key");
    let tls = format!("127.0.0.1:{}", free_port());
    let (cert, key) = (p.cert.display().to_string(), p.key.display().to_string());
    let root = Registry::start_with(&[
        "--tls-cert",
        &cert,
        "--tls-key",
        &key,
        "--tls-listen",
        &tls,
        "--http-enabled",
    ]);
    let image = oci::image("amd64", b"over verified https\n");
    oci::push(&common::http(), &root.url(), REPO, "v1", &image);

    // Without the CA the parent's certificate is refused and nothing is mirrored.
    let untrusting = https_child(&tls, &[]);
    wait_for(
        &untrusting,
        "an error about the parent",
        Duration::from_secs(30),
        || {
            let s = status(&untrusting);
            s["connectionState"] != "Online"
                && s["connectionState"] != "Syncing"
                && !s["statusDetails"].as_array().is_none_or(|d| d.is_empty())
        },
    );
    assert!(crate::tags(&untrusting.url(), REPO).is_empty());
    let s = status(&untrusting);
    assert!(
        s["statusDetails"][0]["message"]
            .as_str()
            .is_some_and(|m| m.to_ascii_lowercase().contains("certificate")),
        "the status should say the certificate is not trusted: {s}"
    );
    drop(untrusting);

    let ca = p.ca.display().to_string();
    let child = https_child(&tls, &["--parent-ca", &ca]);
    wait_for(
        &child,
        "mirrored over https",
        Duration::from_secs(30),
        || synced_with(&child, REPO, "v1"),
    );
    let got = crate::manifest_digest(&child.url(), REPO, "v1");
    assert_eq!(got, (200, image.digest.clone()));
    assert_eq!(status(&child)["parent"], format!("https://{tls}"));
}
