//! Deployment helpers that run on the nodes of a cluster: the containerd host configuration that
//! makes every node trust and reach the registry (`trust-distribution`).

pub mod containerd_hosts;
pub mod marked_files;
