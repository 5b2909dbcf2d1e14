//! Azure IoT Edge: the deployment manifests that run the registry as an IoT Edge module.

pub mod manifest;
