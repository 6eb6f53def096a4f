//! The record layouts in `src/bpf/records.h`, and the ids in the `table.h` that build.rs
//! generates, must equal those in `ipc-protocol`.
//! Read from the BTF clang emitted for the compiled BPF object, so this checks what the
//! kernel really runs, not a second copy of the header: each member's name, offset and type
//! (integer width and signedness, array length).

use std::collections::BTreeMap;

use ipc_protocol::c_header::{drop_cause_constant, ring_constant, tracepoint_constant};
use ipc_protocol::records::{CInt, CType, Field, Layout, RecordHeader, RecordLayout};
use ipc_protocol::{DropCause, Ring, Tracepoint};
use libbpf_rs::btf::types::{Array, Enum, Int, IntEncoding, MemberAttr, Struct};
use libbpf_rs::btf::{Btf, BtfKind, BtfType, HasSize, TypeId};

static OBJECT: &[u8] = include_bytes!(env!("EXTRACTOR_BPF_OBJECT"));

fn btf() -> Btf<'static> {
    Btf::from_raw("extractor", OBJECT).expect("parse BPF object").expect("BPF object carries BTF")
}

/// A member as the layout check compares it: name, byte offset, type.
type Member = (String, usize, CType);

fn c_struct(btf: &Btf<'_>, name: &str) -> (usize, Vec<Member>) {
    let s: Struct<'_> = btf.type_by_name(name).unwrap_or_else(|| panic!("struct {name} missing from BTF"));
    let members = s
        .iter()
        .map(|m| {
            let name = m.name.expect("named member").to_string_lossy().into_owned();
            let MemberAttr::Normal { offset } = m.attr else { panic!("bitfield {name} in a record") };
            let ty = c_type(btf, m.ty).unwrap_or_else(|| panic!("{name}: neither an integer nor an array of them"));
            (name, offset as usize / 8, ty)
        })
        .collect();
    (s.size(), members)
}

/// The member type `id` (typedefs such as `__u64` resolved).
fn c_type(btf: &Btf<'_>, id: TypeId) -> Option<CType> {
    let ty = btf.type_by_id::<BtfType<'_>>(id)?.skip_mods_and_typedefs();
    match ty.kind() {
        BtfKind::Array => {
            let array = Array::try_from(ty).ok()?;
            Some(CType::Array(c_int(array.contained_type())?, array.capacity()))
        }
        _ => c_int(ty).map(CType::Int),
    }
}

fn c_int(ty: BtfType<'_>) -> Option<CInt> {
    let base = ty.skip_mods_and_typedefs();
    let int = Int::try_from(base).ok()?;
    // Plain `char` (text) is signed on x86 and carried as bytes: `signed char` is not text.
    let signed = matches!(int.encoding, IntEncoding::Signed) && base.name().is_none_or(|n| n != "char");
    Some(CInt { bytes: usize::from(int.bits) / 8, signed })
}

fn rust_members(fields: &[Field]) -> Vec<Member> {
    fields.iter().map(|f| (f.name.to_string(), f.offset, f.ty)).collect()
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
        assert_eq!(c_fields, rust_members(fields), "fields of {c_name} ({tp})");
        assert_eq!(c_size, *size, "size of {c_name} ({tp})");
        checked += 1;
    }
    assert_eq!(checked, Tracepoint::ALL.len());
}

#[test]
fn record_header_matches() {
    let Layout { c_name, size, fields } = &RecordHeader::LAYOUT;
    let (c_size, c_fields) = c_struct(&btf(), c_name);
    assert_eq!(c_fields, rust_members(fields));
    assert_eq!(c_size, *size);
}

#[test]
fn tracepoint_ids_match_enum_tracepoint_id() {
    let c = c_enum(&btf(), "tracepoint_id");
    for tp in Tracepoint::ALL {
        let c_name = tracepoint_constant(*tp);
        assert_eq!(c.get(&c_name), Some(&i64::from(tp.id())), "{c_name}");
    }
    assert_eq!(c["TP_COUNT"], Tracepoint::ALL.len() as i64);
}

#[test]
fn drop_causes_match_enum_drop_cause() {
    let c = c_enum(&btf(), "drop_cause");
    for cause in DropCause::BPF {
        let c_name = drop_cause_constant(cause);
        assert_eq!(c.get(&c_name), Some(&i64::from(cause as u8)), "{c_name}");
    }
    assert_eq!(c["DROP_CAUSES"], DropCause::BPF.len() as i64);
}

#[test]
fn rings_match_enum_ring_id_and_each_has_its_map() {
    let btf = btf();
    let c = c_enum(&btf, "ring_id");
    for ring in Ring::ALL {
        assert_eq!(c.get(&ring_constant(ring)), Some(&(ring.index() as i64)), "{ring:?}");
    }
    assert_eq!(c["RING_COUNT"], Ring::ALL.len() as i64);
    let object = libbpf_rs::ObjectBuilder::default().open_memory(OBJECT).expect("open the BPF object");
    let maps: Vec<String> = object.maps().map(|m| m.name().to_string_lossy().into_owned()).collect();
    for ring in Ring::ALL {
        assert!(maps.iter().any(|m| m == ring.map_name()), "no ring map {} in {maps:?}", ring.map_name());
    }
}

#[test]
fn every_tracepoint_has_its_program() {
    let btf = btf();
    for tp in Tracepoint::ALL {
        let func: Option<libbpf_rs::btf::types::Func<'_>> = btf.type_by_name(tp.program());
        assert!(func.is_some(), "no BPF program {}", tp.program());
    }
}
