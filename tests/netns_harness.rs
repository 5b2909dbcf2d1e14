//! The layered-network harness itself (`common::netns`): a chain of two namespaces below the
//! host reaches exactly the layer above, nothing further, and a cut uplink comes back.
//! Reachability is proved by real servers: nginx as the API proxy in each layer, forwarding to
//! a port where nothing listens, so it answers 502 (an HTTP answer all the same).

mod common;

use std::time::{Duration, Instant};

use common::apiproxy::ApiProxy;
use common::clients::require_root;
use common::netns::Net;
use common::run_ok;

/// An upstream where nothing listens (the discard port): every proxied request gets 502.
const NOWHERE: &str = "127.0.0.1:9";

#[test]
fn each_layer_reaches_only_the_layer_above_and_a_cut_uplink_comes_back() {
    require_root();
    let started = Instant::now();
    let net = Net::chain(2);
    // The host serves layer 1 on its downlink, layer 1 serves layer 2 on its own.
    let top = ApiProxy::start_in(None, net.down_addr(0), NOWHERE);
    let mid = ApiProxy::start_in(net.ns(1), net.down_addr(1), NOWHERE);
    let top_url = format!("{}/v2/", top.url());
    let mid_url = format!("{}/v2/", mid.url());

    for i in 1..=2 {
        let fwd = run_ok(
            net.command(i, "cat").arg("/proc/sys/net/ipv4/ip_forward"),
            Duration::from_secs(10),
        );
        assert_eq!(fwd.trim(), "0", "layer {i} forwards");
    }
    assert_eq!(net.up_addr(2), net.down_addr(1));
    assert_eq!(net.status(2, &mid_url), Some(502), "layer 2 → layer 1");
    assert_eq!(net.status(1, &top_url), Some(502), "layer 1 → layer 0");
    assert!(
        !net.reaches(2, &top_url),
        "layer 2 reaches layer 0 at {top_url}"
    );
    // Layer 1's address on its uplink is no more reachable from below than the host is.
    let mid_up = format!("https://{}:{}/v2/", net.addr(1), common::apiproxy::PORT);
    assert!(!net.reaches(2, &mid_up), "layer 2 reaches {mid_up}");
    // Nor does the host route down past layer 1: link 2 is out of its reach.
    assert!(!net.reaches(0, &mid_url), "the host reaches {mid_url}");

    net.cut(1);
    assert!(
        !net.reaches(1, &top_url),
        "layer 1 still reaches layer 0 over a cut link"
    );
    assert!(net.reaches(2, &mid_url), "cutting link 1 cut link 2");
    net.restore(1);
    assert_eq!(
        net.status(1, &top_url),
        Some(502),
        "link 1 did not come back"
    );
    assert!(
        !net.reaches(2, &top_url),
        "after restore layer 2 reaches layer 0"
    );

    assert!(
        top.access_log().contains("/v2/") && mid.access_log().contains("/v2/"),
        "the proxies logged no request:\n{}\n{}",
        top.access_log(),
        mid.access_log()
    );
    let took = started.elapsed();
    assert!(took < Duration::from_secs(20), "the harness took {took:?}");
}
