//! Link the kernel as a static, non-PIE ELF laid out by `linker.ld`.
//!
//! The kernel is built for the host target (no custom target is available on
//! this toolchain), so the host linker's defaults must be switched off here,
//! for the kernel binary only: host tests share the same target triple.

fn main() {
    let dir = std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    for arg in [
        format!("-T{dir}/linker.ld"),
        "-nostartfiles".into(),
        "-nostdlib".into(),
        "-static".into(),
        "-no-pie".into(),
        "-Wl,--build-id=none".into(),
        "-Wl,-z,max-page-size=0x1000".into(),
        "-Wl,--gc-sections".into(),
    ] {
        println!("cargo:rustc-link-arg-bin=vireo={arg}");
    }
    println!("cargo:rerun-if-changed=linker.ld");
}
