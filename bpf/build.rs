//! Compiles the BPF programs and generates their libbpf skeleton.

use std::env;
use std::path::PathBuf;

use libbpf_cargo::SkeletonBuilder;

/// The extractor's programs, and the no-op program the benchmark measures its floor with.
const PROGRAMS: [&str; 2] = ["extractor", "noop"];

fn main() {
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    // `-target bpf` does not search the multiarch directory where Debian keeps <asm/types.h>.
    let arch = env::var("CARGO_CFG_TARGET_ARCH").expect("cargo sets CARGO_CFG_TARGET_ARCH");
    let multiarch_include = format!("-I/usr/include/{arch}-linux-gnu");

    // The tracepoint ids, drop causes and rings, from the one table.
    std::fs::write(out_dir.join("table.h"), ipc_protocol::c_header::generate()).expect("write table.h into OUT_DIR");
    let generated_include = format!("-I{}", out_dir.display());

    for name in PROGRAMS {
        let src = format!("src/bpf/{name}.bpf.c");
        let object = out_dir.join(format!("{name}.bpf.o"));
        if let Err(err) = SkeletonBuilder::new()
            .source(&src)
            .obj(&object)
            .clang_args([multiarch_include.as_str(), generated_include.as_str(), "-Wall", "-Werror"])
            .build_and_generate(out_dir.join(format!("{name}.skel.rs")))
        {
            panic!("building {src} failed (are clang and libbpf headers installed?): {err:#}");
        }
    }
    println!("cargo:rerun-if-changed=src/bpf");
    println!("cargo:rerun-if-changed=../ipc-protocol/src");
    println!("cargo:rustc-env=EXTRACTOR_BPF_OBJECT={}", out_dir.join("extractor.bpf.o").display());
}
