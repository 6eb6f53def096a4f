//! `readelf -n` shows the simulator's probes with Bitcoin Core's providers, names, argument
//! widths and signedness (docs/tracepoints.md), as `readelf -n bitcoind` shows them, each with a semaphore.

use std::process::Command;

use ipc_protocol::Tracepoint;

/// Bitcoin Core's argument widths (../shared/spec/tracepoints.md), kept apart from the table on purpose:
/// the oracle the simulator is checked against.
const EXPECTED: [(&str, &str, &[&str]); 18] = [
    ("net", "inbound_message", &["-8", "8", "8", "8", "8", "8"]),
    ("net", "outbound_message", &["-8", "8", "8", "8", "8", "8"]),
    ("net", "inbound_connection", &["-8", "8", "8", "4", "8"]),
    ("net", "outbound_connection", &["-8", "8", "8", "4", "8"]),
    ("net", "closed_connection", &["-8", "8", "8", "4", "-8"]),
    ("net", "evicted_inbound_connection", &["-8", "8", "8", "4", "-8"]),
    ("net", "misbehaving_connection", &["-8", "8"]),
    ("mempool", "added", &["8", "-4", "-8"]),
    ("mempool", "removed", &["8", "8", "-4", "-8", "8"]),
    ("mempool", "replaced", &["8", "-4", "-8", "8", "8", "-4", "-8", "1"]),
    ("mempool", "rejected", &["8", "8"]),
    ("validation", "block_connected", &["8", "-4", "8", "-4", "-8", "-8"]),
    ("addrman", "attempt_add", &["1", "-4", "-4", "8", "4", "8", "4"]),
    ("addrman", "move_to_good", &["-4", "-4", "8", "4", "8", "4"]),
    ("utxocache", "add", &["8", "4", "4", "-8", "1"]),
    ("utxocache", "spent", &["8", "4", "4", "-8", "1"]),
    ("utxocache", "uncache", &["8", "4", "4", "-8", "1"]),
    ("utxocache", "flush", &["-8", "4", "8", "8", "1"]),
];

/// One probe site as `readelf -n` shows it: provider, name and its `SIZE@OPERAND` arguments.
struct Site {
    provider: String,
    name: String,
    args: Vec<(String, String)>,
}

fn sites() -> Vec<Site> {
    let out = Command::new("readelf")
        .args(["-n", env!("CARGO_BIN_EXE_tracepoint-simulator")])
        .output()
        .expect("run readelf (binutils)");
    let text = String::from_utf8_lossy(&out.stdout);
    // Each note: Provider, Name, "Location: …, Semaphore: …", Arguments.
    let mut sites = Vec::new();
    let mut lines = text.lines().map(str::trim);
    while let Some(line) = lines.next() {
        let Some(provider) = line.strip_prefix("Provider: ") else { continue };
        let name = lines.next().and_then(|l| l.strip_prefix("Name: ")).expect("Name");
        let location = lines.next().expect("Location");
        let semaphore = location.rsplit("Semaphore: ").next().expect("Semaphore");
        assert_ne!(
            u64::from_str_radix(semaphore.trim_start_matches("0x"), 16),
            Ok(0),
            "{provider}:{name} has no semaphore"
        );
        let args = lines
            .next()
            .and_then(|l| l.strip_prefix("Arguments: "))
            .expect("Arguments")
            .split(' ')
            .map(|arg| arg.split_once('@').map(|(w, o)| (w.to_string(), o.to_string())).expect("SIZE@OPERAND"))
            .collect();
        sites.push(Site { provider: provider.to_string(), name: name.to_string(), args });
    }
    sites
}

#[test]
fn stapsdt_notes_match_bitcoin_core() {
    // Every tracepoint of the table has its widths here, in the table's order.
    let named: Vec<(&str, &str)> = EXPECTED.iter().map(|(provider, name, _)| (*provider, *name)).collect();
    let table: Vec<(&str, &str)> = Tracepoint::ALL.iter().map(|tp| (tp.provider(), tp.name())).collect();
    assert_eq!(named, table);
    let sites = sites();
    for (provider, name, widths) in EXPECTED {
        let found: Vec<_> = sites.iter().filter(|s| s.provider == provider && s.name == name).collect();
        assert!(!found.is_empty(), "no probe {provider}:{name}");
        for site in found {
            let got: Vec<_> = site.args.iter().map(|(w, _)| w.as_str()).collect();
            assert_eq!(got, widths, "{provider}:{name}");
        }
    }
    assert_eq!(sites.len(), EXPECTED.len() + 1, "one site per tracepoint, two for utxocache:flush");
}

/// The operand forms libbpf resolves for a tracer (its `usdt.c`), which the BPF program's own
/// argument reader (`usdt_args` in bpf/src/bpf/extractor.bpf.c) must read like libbpf's.
#[derive(Debug, PartialEq)]
enum Form {
    Register,
    Memory,
    Indexed,
    Constant,
}

fn form(operand: &str) -> Form {
    match operand.as_bytes()[0] {
        b'%' => Form::Register,
        b'$' => Form::Constant,
        _ if operand.matches(',').count() == 2 => Form::Indexed,
        _ => Form::Memory,
    }
}

#[test]
fn the_sites_pass_arguments_in_every_operand_form_a_tracer_reads() {
    let sites = sites();
    let forms = |provider: &str, name: &str| -> Vec<Vec<Form>> {
        sites
            .iter()
            .filter(|s| s.provider == provider && s.name == name)
            .map(|s| s.args.iter().map(|(_, operand)| form(operand)).collect())
            .collect()
    };
    // Stack slots, in every width and signedness.
    assert_eq!(forms("mempool", "replaced"), [[const { Form::Memory }; 8]]);
    let block = &forms("validation", "block_connected")[0];
    assert_eq!((&block[3], &block[5]), (&Form::Indexed, &Form::Indexed), "inputs (-4) and duration (-8)");
    for flush in forms("utxocache", "flush") {
        assert_eq!(flush[4], Form::Constant, "for_prune");
    }
    assert!(forms("net", "inbound_message")[0].iter().all(|f| *f == Form::Register));
}
