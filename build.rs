//! Link settings for the server binary.

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    let os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    let env = std::env::var("CARGO_CFG_TARGET_ENV").unwrap_or_default();
    if os == "linux" && env == "gnu" {
        // Packed relative relocations (DT_RELR, glibc 2.36+, binutils 2.38+): the 400 KiB
        // relocation table the dynamic loader reads at every start shrinks to a few KiB, which
        // is that much less resident memory on a gateway. Older linkers ignore the option.
        println!("cargo:rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
    }
}
