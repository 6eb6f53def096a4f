//! `readelf -n` shows the simulator's probes with Bitcoin Core's providers, names, argument
//! widths and signedness (docs/tracepoints.md), as `readelf -n bitcoind` shows them, each with a semaphore.

use std::process::Command;

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

#[test]
fn stapsdt_notes_match_bitcoin_core() {
    let out = Command::new("readelf")
        .args(["-n", env!("CARGO_BIN_EXE_tracepoint-simulator")])
        .output()
        .expect("run readelf (binutils)");
    let text = String::from_utf8_lossy(&out.stdout);
    // Each note: Provider, Name, "Location: …, Semaphore: …", Arguments.
    let mut notes = Vec::new();
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
        let widths: Vec<String> = lines
            .next()
            .and_then(|l| l.strip_prefix("Arguments: "))
            .expect("Arguments")
            .split(' ')
            .map(|arg| arg.split('@').next().unwrap_or_default().to_string())
            .collect();
        notes.push((provider.to_string(), name.to_string(), widths));
    }
    for (provider, name, widths) in EXPECTED {
        let found: Vec<_> = notes.iter().filter(|(p, n, _)| p == provider && n == name).collect();
        assert!(!found.is_empty(), "no probe {provider}:{name}");
        for (_, _, got) in found {
            assert_eq!(got, widths, "{provider}:{name}");
        }
    }
    assert_eq!(notes.len(), EXPECTED.len(), "one site per tracepoint");
}
