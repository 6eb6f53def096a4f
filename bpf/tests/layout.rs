//! The record layouts and ids in `src/bpf/records.h` must equal those in `ipc-protocol`.
//! Read from the BTF clang emitted for the compiled BPF object, so this checks what the
//! kernel really runs, not a second copy of the header.

use std::collections::BTreeMap;

use ipc_protocol::records::{Layout, RECORD_HEADER_LEN};
use ipc_protocol::{DropCause, Tracepoint};
use libbpf_rs::btf::types::{Enum, MemberAttr, Struct};
use libbpf_rs::btf::{Btf, HasSize};

static OBJECT: &[u8] = include_bytes!(env!("EXTRACTOR_BPF_OBJECT"));

fn btf() -> Btf<'static> {
    Btf::from_raw("extractor", OBJECT).expect("parse BPF object").expect("BPF object carries BTF")
}

fn c_struct(btf: &Btf<'_>, name: &str) -> (usize, Vec<(String, usize)>) {
    let s: Struct<'_> = btf.type_by_name(name).unwrap_or_else(|| panic!("struct {name} missing from BTF"));
    let members = s
        .iter()
        .map(|m| {
            let name = m.name.expect("named member").to_string_lossy().into_owned();
            let MemberAttr::Normal { offset } = m.attr else { panic!("bitfield {name} in a record") };
            (name, offset as usize / 8)
        })
        .collect();
    (s.size(), members)
}

fn c_enum(btf: &Btf<'_>, name: &str) -> BTreeMap<String, i64> {
    let e: Enum<'_> = btf.type_by_name(name).unwrap_or_else(|| panic!("enum {name} missing from BTF"));
    e.iter().map(|m| (m.name.expect("named").to_string_lossy().into_owned(), m.value)).collect()
}

#[test]
fn every_record_layout_matches_its_c_struct() {
    let btf = btf();
    let mut checked = 0;
    for tp in Tracepoint::ALL {
        let Layout { c_name, size, fields } = tp.layout();
        let (c_size, c_fields) = c_struct(&btf, c_name);
        let rust_fields: Vec<(String, usize)> = fields.iter().map(|f| (f.name.to_string(), f.offset)).collect();
        assert_eq!(c_fields, rust_fields, "fields of {c_name} ({tp})");
        assert_eq!(c_size, *size, "size of {c_name} ({tp})");
        checked += 1;
    }
    assert_eq!(checked, 14);
}

#[test]
fn record_header_matches() {
    let (size, fields) = c_struct(&btf(), "record_header");
    assert_eq!(size, RECORD_HEADER_LEN);
    assert_eq!(fields, [("ktime_ns".into(), 0), ("tracepoint".into(), 8), ("_pad".into(), 10), ("len".into(), 12)]);
}

#[test]
fn tracepoint_ids_match_enum_tracepoint_id() {
    let c = c_enum(&btf(), "tracepoint_id");
    for tp in Tracepoint::ALL {
        let c_name = format!("TP_{}_{}", tp.provider(), tp.name()).to_uppercase();
        assert_eq!(c.get(&c_name), Some(&i64::from(tp.id())), "{c_name}");
    }
    assert_eq!(c["TP_COUNT"], Tracepoint::ALL.len() as i64);
}

#[test]
fn drop_causes_match_enum_drop_cause() {
    let c = c_enum(&btf(), "drop_cause");
    for cause in DropCause::BPF {
        let c_name = format!("DROP_{}", cause.as_str()).to_uppercase();
        assert_eq!(c.get(&c_name), Some(&i64::from(cause as u8)), "{c_name}");
    }
    assert_eq!(c["DROP_CAUSES"], DropCause::BPF.len() as i64);
}

#[test]
fn every_tracepoint_has_its_program() {
    let btf = btf();
    for tp in Tracepoint::ALL {
        let func: Option<libbpf_rs::btf::types::Func<'_>> = btf.type_by_name(tp.program());
        assert!(func.is_some(), "no BPF program {}", tp.program());
    }
}
