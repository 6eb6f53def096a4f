//! Generates Rust types for peer-observer's protobuf messages (needs `protoc`, Debian
//! package protobuf-compiler).

fn main() {
    const PROTOS: [&str; 10] = [
        "proto/event.proto",
        "proto/event_msg.proto",
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
    // The descriptors give pbjson-build the schema, for the canonical JSON mapping.
    let descriptors_path = out_dir.join("descriptors.bin");
    let mut config = prost_build::Config::new();
    config.file_descriptor_set_path(&descriptors_path);
    // Inventories keep their encoding rather than a Vec of items (src/inventory.rs), which
    // implements the JSON mapping itself.
    const INVENTORIES: [&str; 3] = ["Inv", "GetData", "NotFound"];
    for message in INVENTORIES {
        config.extern_path(format!(".ebpf_extractor.message.{message}"), "crate::inventory::Inventory");
    }
    if let Err(e) = config.compile_protos(&PROTOS, &["proto"]) {
        panic!("compiling the .proto files failed (is protoc installed?): {e}");
    }
    // serde implementations of the canonical proto3 JSON mapping (src/render.rs), with the
    // .proto field names, which docs/wire-format.md uses.
    let descriptors = std::fs::read(&descriptors_path).expect("prost-build wrote the descriptor set");
    let mut json = pbjson_build::Builder::new();
    json.register_descriptors(&descriptors).expect("a valid descriptor set").preserve_proto_field_names();
    let inventories = INVENTORIES.map(|message| format!(".ebpf_extractor.message.{message}"));
    for inventory in &inventories {
        json.extern_path(inventory, "crate::inventory::Inventory");
    }
    json.exclude(inventories);
    json.build(&[".event", ".event_msg", ".ebpf_extractor", ".bitcoin_primitives", ".peer_observer_ebpf"])
        .expect("generating the JSON mapping");
    println!("cargo:rerun-if-changed=proto");
}
