//! Generates Rust types for peer-observer's protobuf messages (needs `protoc`, Debian
//! package protobuf-compiler).

fn main() {
    const PROTOS: [&str; 9] = [
        "proto/event.proto",
        "proto/ebpf_extractor.proto",
        "proto/message.proto",
        "proto/connection.proto",
        "proto/mempool.proto",
        "proto/validation.proto",
        "proto/addrman.proto",
        "proto/primitive.proto",
        "proto/utxocache.proto",
    ];
    if let Err(e) = prost_build::Config::new().compile_protos(&PROTOS, &["proto"]) {
        panic!("compiling the .proto files failed (is protoc installed?): {e}");
    }
    println!("cargo:rerun-if-changed=proto");
}
