//! The harness itself: the binary starts, answers, and pushes round-trip.

mod common;

use common::oci;

#[test]
fn starts_and_round_trips_an_image() {
    let r = common::Registry::start();
    let c = common::http();
    let img = oci::image("amd64", b"hi");
    oci::push(&c, &r.url(), "smoke/app", "v1", &img);
    let got = c
        .get(format!("{}/v2/smoke/app/manifests/v1", r.url()))
        .header("Accept", oci::OCI_MANIFEST)
        .send()
        .unwrap();
    assert_eq!(got.status().as_u16(), 200);
    assert_eq!(got.bytes().unwrap().as_ref(), img.bytes.as_slice());
}
