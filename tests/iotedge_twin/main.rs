//! The registry as an IoT Edge module: configured through its module twin over MQTT to edgeHub,
//! identity and trust from the workload API, status reported back; and the stand-ins for both
//! peers, tested against what the real ones do.

#[path = "../common/mod.rs"]
mod common;

mod edgehub_peer;
mod twin;
mod workload_peer;
