#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| connected_registry::fuzzing::policy_layers(data));
