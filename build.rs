//! Link settings for the server binary.

use std::env;
use std::path::Path;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    let os = env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    let abi = env::var("CARGO_CFG_TARGET_ENV").unwrap_or_default();
    if os == "linux" && abi == "gnu" {
        // Packed relative relocations (DT_RELR, glibc 2.36+, binutils 2.38+): the 400 KiB
        // relocation table the dynamic loader reads at every start shrinks to a few KiB, which
        // is that much less resident memory on a gateway. Older linkers ignore the option.
        println!("cargo:rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
        order_functions();
    }
}

/// Lays out first the functions a running registry executes (link/order.txt, written by
/// scripts/link-order.sh): the kernel maps a binary in 64 KiB windows around every page that
/// runs, so hot code packed together keeps idle memory at about 5 MiB instead of 8. Only lld
/// and mold take an ordering file; with another linker the build is unchanged.
fn order_functions() {
    let order =
        Path::new(&env::var("CARGO_MANIFEST_DIR").unwrap_or_default()).join("link/order.txt");
    println!("cargo:rerun-if-changed={}", order.display());
    println!("cargo:rerun-if-env-changed=RUSTC_LINKER");
    if env::var("PROFILE").as_deref() != Ok("release") || !order.is_file() || !linker_orders() {
        return;
    }
    println!(
        "cargo:rustc-link-arg-bins=-Wl,--symbol-ordering-file={}",
        order.display()
    );
    // Names of functions a different toolchain or dependency version renamed are expected.
    println!("cargo:rustc-link-arg-bins=-Wl,--no-warn-symbol-ordering");
}

/// True when the link will run lld or mold: asked for in RUSTFLAGS, or rustc's own lld, the
/// default for x86_64 Linux since Rust 1.90 unless a linker was configured.
fn linker_orders() -> bool {
    let flags = env::var("CARGO_ENCODED_RUSTFLAGS").unwrap_or_default();
    if flags.contains("-fuse-ld=lld") || flags.contains("-fuse-ld=mold") {
        return true;
    }
    if flags.contains("-fuse-ld")
        || flags.contains("linker")
        || env::var_os("RUSTC_LINKER").is_some()
    {
        return false;
    }
    env::var("TARGET").as_deref() == Ok("x86_64-unknown-linux-gnu") && rustc_minor() >= Some(90)
}

/// The minor version of the compiler building this crate (`rustc 1.95.0 (…)` gives 95).
fn rustc_minor() -> Option<u32> {
    let rustc = env::var_os("RUSTC")?;
    let out = Command::new(rustc).arg("-V").output().ok()?;
    let text = String::from_utf8(out.stdout).ok()?;
    let version = text.split_whitespace().nth(1)?;
    version.split('.').nth(1)?.parse().ok()
}
