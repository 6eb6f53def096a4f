//! Every program must pass the verifier with room to spare under the kernel's limit of a
//! million instructions explored per program (`BPF_COMPLEXITY_LIMIT_INSNS`). Verifiers of other
//! kernels prune differently: a program that passes here near the limit could be refused on a
//! node's kernel, and the loader would then start no probe at all. Loads the programs into
//! this kernel (as root) as the loader does at its default ring sizes, attaching none.

use std::mem::{size_of_val, MaybeUninit};
use std::os::fd::{AsFd, AsRawFd};

use extractor_bpf::ExtractorSkelBuilder;
use ipc_protocol::Ring;
use libbpf_rs::skel::{OpenSkel, Skel, SkelBuilder};

const KERNEL_LIMIT: u32 = 1_000_000;
/// A tenth of the limit (docs/performance.md: the message programs took eight tenths when
/// they copied large payloads in an open loop).
const HEADROOM_LIMIT: u32 = KERNEL_LIMIT / 10;

/// Instructions the verifier explored for the loaded program behind `fd`.
fn verified_insns(fd: std::os::fd::BorrowedFd<'_>) -> u32 {
    let mut info = libbpf_sys::bpf_prog_info::default();
    let mut len = size_of_val(&info) as u32;
    // SAFETY: `info` is a bpf_prog_info of `len` bytes, with no buffers for the kernel to fill.
    let ret = unsafe { libbpf_sys::bpf_prog_get_info_by_fd(fd.as_raw_fd(), &mut info, &mut len) };
    assert_eq!(ret, 0, "bpf_prog_get_info_by_fd: {}", std::io::Error::from_raw_os_error(-ret));
    info.verified_insns
}

#[test]
fn every_program_verifies_within_a_tenth_of_the_kernels_limit() {
    let mut storage = MaybeUninit::uninit();
    let mut open = ExtractorSkelBuilder::default().open(&mut storage).expect("open the BPF object");
    // The ring sizes the loader sets (loader/src/probes.rs): the verifier prunes by them.
    let rodata = open.maps.rodata_data.as_deref_mut().expect("the BPF object has a .rodata");
    rodata.ring_bytes = Ring::ALL.map(|ring| u64::from(ring.default_bytes()));
    let skel = open.load().expect("load the BPF programs (needs root: CAP_BPF and CAP_PERFMON)");
    let mut figures = Vec::new();
    for prog in skel.object().progs() {
        let name = prog.name().to_string_lossy().into_owned();
        figures.push((verified_insns(prog.as_fd()), name));
    }
    figures.sort();
    eprintln!("verified instructions per program: {figures:?}");
    assert!(!figures.is_empty(), "no program loaded");
    let over: Vec<_> = figures.iter().filter(|(n, _)| *n > HEADROOM_LIMIT).collect();
    assert!(over.is_empty(), "over {HEADROOM_LIMIT} verified instructions: {over:?}");
}
