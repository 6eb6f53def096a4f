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
    let out_dir = std::path::PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    // The descriptors give render::json the schema, for the canonical JSON mapping.
    let mut config = prost_build::Config::new();
    config.file_descriptor_set_path(out_dir.join("descriptors.bin"));
    // Inventories keep their encoding rather than a Vec of items (src/inventory.rs).
    for message in ["Inv", "GetData", "NotFound"] {
        config.extern_path(format!(".ebpf_extractor.message.{message}"), "crate::inventory::Inventory");
    }
    if let Err(e) = config.compile_protos(&PROTOS, &["proto"]) {
        panic!("compiling the .proto files failed (is protoc installed?): {e}");
    }
    println!("cargo:rerun-if-changed=proto");
}
