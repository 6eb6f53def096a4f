//! Compiles the USDT probe sites (needs `sys/sdt.h`, Debian package systemtap-sdt-dev).

fn main() {
    println!("cargo:rerun-if-changed=src/usdt.c");
    cc::Build::new().file("src/usdt.c").opt_level(2).flag("-Wall").flag("-Werror").compile("usdt");
}
