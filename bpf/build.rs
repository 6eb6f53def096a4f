//! Compiles the BPF programs and generates their libbpf skeleton.

use std::env;
use std::path::PathBuf;

use libbpf_cargo::SkeletonBuilder;

const SRC: &str = "src/bpf/extractor.bpf.c";

fn main() {
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let object = out_dir.join("extractor.bpf.o");
    // `-target bpf` does not search the multiarch directory where Debian keeps <asm/types.h>.
    let arch = env::var("CARGO_CFG_TARGET_ARCH").expect("cargo sets CARGO_CFG_TARGET_ARCH");
    let multiarch_include = format!("-I/usr/include/{arch}-linux-gnu");

    if let Err(err) = SkeletonBuilder::new()
        .source(SRC)
        .obj(&object)
        .clang_args([multiarch_include.as_str(), "-Wall", "-Werror"])
        .build_and_generate(out_dir.join("extractor.skel.rs"))
    {
        panic!("building {SRC} failed (are clang and libbpf headers installed?): {err:#}");
    }
    println!("cargo:rerun-if-changed=src/bpf");
    println!("cargo:rustc-env=EXTRACTOR_BPF_OBJECT={}", object.display());
}
