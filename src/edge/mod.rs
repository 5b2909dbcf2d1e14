//! Azure IoT Edge: the deployment manifests that run the registry as an IoT Edge module, the
//! workload API (identity, trust, certificates) and the module twin (configuration in, status
//! out).

pub mod manifest;
pub mod sas;
pub mod trust;
pub mod twin;
pub mod workload;
