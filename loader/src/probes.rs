//! Loading the BPF skeleton, attaching one program per enabled tracepoint, reading the BPF
//! drop counters.

use std::mem::MaybeUninit;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::path::Path;
use std::sync::atomic::AtomicU64;

use extractor_bpf::{ExtractorSkel, ExtractorSkelBuilder};
use ipc_protocol::cli::RingSizes;
use ipc_protocol::{DropCause, DropCount, Ring, Tracepoint};
use libbpf_rs::skel::{OpenSkel, Skel, SkelBuilder};
use libbpf_rs::{AsRawLibbpf, Link, MapCore, MapFlags, OpenObject};

use crate::ring;

use crate::target::Target;

#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error("cannot open the BPF object: {0}")]
    Open(#[source] libbpf_rs::Error),
    #[error("the kernel refused the BPF programs (needs CAP_BPF and CAP_PERFMON, Linux >= 6.6 with BTF): {0}")]
    Load(#[source] libbpf_rs::Error),
    #[error("cannot attach to tracepoint {tracepoint} in {binary:?}: {source}; {}is it Bitcoin Core v29.0+ built with -DWITH_USDT=ON{hint}?", kernel_doubt.as_deref().map(|k| k.to_owned() + "; or ").unwrap_or_default())]
    Attach {
        tracepoint: Tracepoint,
        binary: String,
        source: libbpf_rs::Error,
        hint: &'static str,
        kernel_doubt: Option<String>,
    },
    #[error(
        "libbpf attached {probes} probes through perf_event_open, not uprobe_multi links: {}; the loader would be killed by its own filter detaching them, so it stops here", kernel_doubt.as_deref().unwrap_or("this kernel offers no working uprobe_multi links")
    )]
    PerfEventFallback { probes: usize, kernel_doubt: Option<String> },
    #[error("cannot list the loader's own descriptors (did libbpf fall back to perf events?): {0}")]
    OwnDescriptors(#[source] std::io::Error),
    #[error("cannot read the BPF drop counters: {0}")]
    Counters(#[source] libbpf_rs::Error),
    #[error("cannot freeze the BPF maps once attached: {0}")]
    Seal(#[source] libbpf_rs::Error),
    #[error("the BPF object has no ring buffer map {0}: BPF object and loader disagree")]
    NoRing(&'static str),
    #[error("cannot map the BPF ring buffer {ring}: {source}")]
    MapRing { ring: &'static str, source: std::io::Error },
}

/// The first kernel with uprobe_multi links (6.6), and with map reads through a descriptor
/// that need no capability (6.5), which the loader does after dropping its own. On an older
/// one libbpf attaches each probe with `perf_event_open`, which the loader's unit forbids
/// (`~@debug`, SECURITY.md). Distributions backport such features, so an older version only
/// warns.
pub const UPROBE_MULTI_SINCE: (u32, u32, u32) = (6, 6, 0);
/// Before this release, uprobe_multi links filtered by thread, not by process (the kernel's
/// 46ba0e49b642, "bpf: fix multi-uprobe PID filtering logic"): libbpf then detects the flaw
/// and falls back to `perf_event_open` too.
const UPROBE_MULTI_PID_FILTER_FIXED: (u32, u32, u32) = (6, 10, 0);
/// The stable releases the fix went back to; 6.7 and 6.8 had none.
const UPROBE_MULTI_PID_FILTER_BACKPORTS: [(u32, u32, u32); 2] = [(6, 6, 35), (6, 9, 9)];

/// The kernel `release` (uname -r) as (major, minor, patch); a missing patch is 0. `None` if it
/// does not start with `major.minor`.
fn kernel_version(release: &str) -> Option<(u32, u32, u32)> {
    let mut numbers = release.split(|c: char| !c.is_ascii_digit()).map(str::parse::<u32>);
    match (numbers.next(), numbers.next(), numbers.next()) {
        (Some(Ok(major)), Some(Ok(minor)), patch) => Some((major, minor, patch.and_then(Result::ok).unwrap_or(0))),
        _ => None,
    }
}

/// Why a kernel may give libbpf no uprobe_multi links, and what the loader then meets.
#[derive(Debug, Clone, PartialEq)]
pub struct KernelDoubt {
    pub why: String,
    pub expect: &'static str,
}

/// A kernel version as releases name it: `6.10`, `6.6.35`.
fn version_name((major, minor, patch): (u32, u32, u32)) -> String {
    if patch == 0 {
        format!("{major}.{minor}")
    } else {
        format!("{major}.{minor}.{patch}")
    }
}

/// Why kernel `release` may give libbpf no uprobe_multi links, or `None` if it does (or its
/// version cannot be read). Distributions backport, so only "may".
fn uprobe_multi_doubt(release: &str) -> Option<KernelDoubt> {
    let version = kernel_version(release)?;
    if version < UPROBE_MULTI_SINCE {
        return Some(KernelDoubt {
            why: format!(
                "this kernel, {release}, is older than {} and may lack the uprobe_multi links the loader attaches \
                 with (e.g. Debian 12: take bookworm-backports' kernel)",
                version_name(UPROBE_MULTI_SINCE)
            ),
            expect: "expect attaching or reading the drop counters to fail",
        });
    }
    let fixed = version >= UPROBE_MULTI_PID_FILTER_FIXED
        || UPROBE_MULTI_PID_FILTER_BACKPORTS
            .iter()
            .any(|&(major, minor, patch)| (version.0, version.1) == (major, minor) && version.2 >= patch);
    let [first, second] = UPROBE_MULTI_PID_FILTER_BACKPORTS.map(version_name);
    (!fixed).then(|| KernelDoubt {
        why: format!(
            "this kernel, {release}, may have the uprobe_multi links that filter by thread, which libbpf replaces with \
             perf_event_open (fixed upstream in {first}, {second} and {})",
            version_name(UPROBE_MULTI_PID_FILTER_FIXED)
        ),
        expect: "expect attaching to fail under the loader's unit, and the loader to stop once attached elsewhere",
    })
}

/// Why the running kernel may give libbpf no uprobe_multi links.
pub fn running_kernel_doubt() -> Option<KernelDoubt> {
    uprobe_multi_doubt(&rustix::system::uname().release().to_string_lossy())
}

pub struct Probes<'obj> {
    /// Until when (CLOCK_MONOTONIC ns) the loader looks at the rings by itself, so that the
    /// BPF programs need not wake it: a variable of the programs' `.bss`, mapped at load.
    pub polling_until_ns: &'obj AtomicU64,
    /// One per attached program; clearing it detaches them all (`close` on the link fds,
    /// which needs no capability), while the rings keep what was captured until read.
    /// Declared first so that it drops first: a USDT link refers to the object's USDT
    /// manager, which dropping `skel` frees.
    pub links: Vec<Link>,
    pub skel: ExtractorSkel<'obj>,
    /// Bytes of each ring as created, in [`Ring::ALL`]'s order.
    pub ring_bytes: [u32; Ring::ALL.len()],
}

impl<'obj> Probes<'obj> {
    /// Loads only the programs of `enabled`, with ring buffers of the given sizes, and attaches
    /// each to its USDT probe in `target`.
    pub fn attach(
        storage: &'obj mut MaybeUninit<OpenObject>,
        target: &Target,
        enabled: &[Tracepoint],
        rings: &RingSizes,
    ) -> Result<Self, ProbeError> {
        let mut open = ExtractorSkelBuilder::default().open(storage).map_err(ProbeError::Open)?;
        // A ring no enabled tracepoint writes takes one page (the smallest ring buffer) instead
        // of its size: kernel memory for nothing.
        let ring_bytes = Ring::ALL.map(|ring| match enabled.iter().any(|tp| tp.ring() == ring) {
            true => rings.bytes(ring),
            false => rustix::param::page_size() as u32,
        });
        for mut map in open.open_object_mut().maps_mut() {
            if let Some(ring) = Ring::ALL.iter().find(|r| map.name() == r.map_name()) {
                map.set_max_entries(ring_bytes[ring.index()]).map_err(ProbeError::Open)?;
            }
        }
        // The programs compare a ring's fill with its size on every hit (`wakeup` in
        // bpf/src/bpf/extractor.bpf.c): a constant of the loaded object, not a helper call.
        let rodata = open.maps.rodata_data.as_deref_mut().expect("the BPF object has a .rodata: its ring sizes");
        rodata.ring_bytes = ring_bytes.map(u64::from);
        for mut prog in open.open_object_mut().progs_mut() {
            let wanted = enabled.iter().any(|tp| prog.name() == tp.program());
            prog.set_autoload(wanted);
        }
        let mut skel = open.load().map_err(ProbeError::Load)?;
        let bss = skel.maps.bss_data.take().expect("the BPF object has a .bss: its wakeup state");
        // SAFETY: the mapping of the object's .bss lives as long as the object ('obj); the BPF
        // programs only read this word, and the loader writes it only through this atomic.
        let polling_until_ns = unsafe { AtomicU64::from_ptr(&mut bss.loader_polling_until_ns) };
        let own_fds = Path::new("/proc/self/fd");
        let perf_events_before = perf_events(own_fds)?;
        let kernel_doubt = || running_kernel_doubt().map(|doubt| doubt.why);
        let mut links = Vec::with_capacity(enabled.len());
        for tp in enabled {
            let prog = skel
                .object_mut()
                .progs_mut()
                .find(|p| p.name() == tp.program())
                .expect("extractor-bpf's layout test proves every tracepoint has its program");
            let link = prog.attach_usdt(target.pid, &target.binary, tp.provider(), tp.name()).map_err(|source| {
                ProbeError::Attach {
                    tracepoint: *tp,
                    binary: target.binary_name.clone(),
                    source,
                    hint: if tp.category() == ipc_protocol::Category::Addrman {
                        " and patched with the addrman tracepoints"
                    } else {
                        ""
                    },
                    kernel_doubt: kernel_doubt(),
                }
            })?;
            links.push(link);
        }
        // libbpf falls back silently; only the descriptors it made tell. Detaching such a probe
        // takes an ioctl (libbpf's bpf_link_perf_detach), which the seccomp filter kills.
        match perf_events(own_fds)?.saturating_sub(perf_events_before) {
            0 => Ok(Probes { polling_until_ns, links, skel, ring_bytes }),
            probes => Err(ProbeError::PerfEventFallback { probes, kernel_doubt: kernel_doubt() }),
        }
    }

    /// Once every probe is attached: freezes the maps that user space no longer writes
    /// (libbpf's USDT argument specs, which turned writable would let a program read any
    /// address; the drop counters; the peers' strings, which would put another address on a
    /// peer's messages), so that no `bpf()` call can change them, and closes the
    /// programs' descriptors (the links keep them attached).
    pub fn seal(&mut self) -> Result<(), ProbeError> {
        let maps = &self.skel.maps;
        for map in [&maps.__bpf_usdt_specs, &maps.__bpf_usdt_ip_to_spec_id, &maps.drops, &maps.known_peers] {
            libbpf_rs::MapHandle::try_from(map).and_then(|handle| handle.freeze()).map_err(ProbeError::Seal)?;
        }
        for prog in self.skel.object_mut().progs_mut() {
            // SAFETY: the program is loaded and attached through its link; unloading closes
            // the descriptor libbpf holds, which nothing uses again (libbpf skips programs
            // already unloaded when it closes the object).
            unsafe { libbpf_sys::bpf_program__unload(prog.as_libbpf_object().as_ptr()) };
        }
        Ok(())
    }

    /// Totals of the BPF drop counters, summed over CPUs, for the non-zero ones.
    pub fn drop_counts(&self) -> Result<Vec<DropCount>, ProbeError> {
        let mut counts = Vec::new();
        for tp in Tracepoint::ALL {
            for cause in DropCause::BPF {
                let key = u32::from(tp.id()) * DropCause::BPF.len() as u32 + cause as u32;
                let per_cpu = self
                    .skel
                    .maps
                    .drops
                    .lookup_percpu(&key.to_ne_bytes(), MapFlags::ANY)
                    .map_err(ProbeError::Counters)?
                    .unwrap_or_default();
                let total: u64 = per_cpu
                    .iter()
                    .filter_map(|v| v.get(..8))
                    .map(|v| u64::from_ne_bytes(v.try_into().expect("8 bytes")))
                    .sum();
                if total > 0 {
                    counts.push(DropCount { tracepoint: *tp, cause, total });
                }
            }
        }
        Ok(counts)
    }
}

/// Maps every ring buffer of `skel`, in [`Ring::ALL`]'s order. (Of the skeleton only, so that
/// the links can be dropped while the rings are still read.)
pub fn rings<'s>(skel: &'s ExtractorSkel<'_>, bytes: &[u32]) -> Result<Vec<ring::Ring<'s>>, ProbeError> {
    Ring::ALL
        .iter()
        .map(|ring| {
            let map = skel
                .object()
                .maps()
                .find(|m| m.name() == ring.map_name())
                .ok_or(ProbeError::NoRing(ring.map_name()))?;
            // SAFETY: the descriptor is the BPF object's, which lives as long as `skel`, which
            // the rings borrow (`Map` is only a view of it).
            let fd = unsafe { BorrowedFd::borrow_raw(map.as_fd().as_raw_fd()) };
            ring::Ring::map(fd, bytes[ring.index()])
                .map_err(|source| ProbeError::MapRing { ring: ring.map_name(), source })
        })
        .collect()
}

/// How many of the descriptors listed in `fd_dir` (`/proc/self/fd`) are perf events. A
/// descriptor closed while the list is read is none.
fn perf_events(fd_dir: &Path) -> Result<usize, ProbeError> {
    let mut count = 0;
    for entry in std::fs::read_dir(fd_dir).map_err(ProbeError::OwnDescriptors)? {
        let entry = entry.map_err(ProbeError::OwnDescriptors)?;
        if std::fs::read_link(entry.path()).is_ok_and(|target| target.as_os_str() == "anon_inode:[perf_event]") {
            count += 1;
        }
    }
    Ok(count)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernels_without_working_uprobe_multi_links_are_named_in_an_attach_failure() {
        for older in ["6.1.0-28-amd64", "5.14.0-427.el9.x86_64", "5.10.0"] {
            assert!(uprobe_multi_doubt(older).is_some_and(|d| d.why.contains("is older than 6.6")), "{older}");
        }
        for unfixed in ["6.6.0", "6.6.34-1-lts", "6.7.12", "6.8.0-45-generic", "6.9.8"] {
            let doubt = uprobe_multi_doubt(unfixed).unwrap_or_else(|| panic!("{unfixed}"));
            assert!(
                doubt.why.contains("filter by thread") && doubt.why.contains("6.6.35, 6.9.9 and 6.10"),
                "{doubt:?}"
            );
        }
        for fixed in ["6.6.35", "6.6.58-1-lts", "6.9.9", "6.10", "6.12.12+bpo-amd64", "6.18.44-fc-v1272", "7.0"] {
            assert_eq!(uprobe_multi_doubt(fixed), None, "{fixed}");
        }
        assert_eq!(uprobe_multi_doubt("unknown"), None);
        let attach = ProbeError::Attach {
            tracepoint: Tracepoint::NetInboundMessage,
            binary: "/usr/bin/bitcoind".into(),
            source: libbpf_rs::Error::from(std::io::Error::from_raw_os_error(1)),
            hint: "",
            kernel_doubt: uprobe_multi_doubt("6.1.0-28-amd64").map(|doubt| doubt.why),
        };
        assert_eq!(
            attach.to_string(),
            "cannot attach to tracepoint net:inbound_message in \"/usr/bin/bitcoind\": Operation not permitted (os error 1); \
             this kernel, 6.1.0-28-amd64, is older than 6.6 and may lack the uprobe_multi links the loader attaches \
             with (e.g. Debian 12: take bookworm-backports' kernel); or is it Bitcoin Core v29.0+ built with \
             -DWITH_USDT=ON?"
        );
    }

    /// libbpf's fallback shows as descriptors of perf events among the process's own.
    #[test]
    fn perf_event_descriptors_are_counted() {
        let dir = std::env::temp_dir().join(format!("loader-fds-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir(&dir).unwrap();
        for (name, target) in
            [("3", "anon_inode:[perf_event]"), ("4", "anon_inode:bpf-link"), ("5", "anon_inode:[perf_event]")]
        {
            std::os::unix::fs::symlink(target, dir.join(name)).unwrap();
        }
        assert_eq!(perf_events(&dir).unwrap(), 2);
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(perf_events(Path::new("/proc/self/fd")).unwrap(), 0);
        assert!(matches!(perf_events(&dir), Err(ProbeError::OwnDescriptors(_))));
    }
}
