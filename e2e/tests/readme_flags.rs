//! README's flag tables are the binaries' own: every `--flag` each binary's `--help` shows
//! (hidden test flags are not shown, so not required) is in a table README marks as that
//! binary's, with its short forms and its default, and no table names a flag it does not take.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use e2e::{bins, profile_dir};

/// One flag as `--help` shows it.
#[derive(Debug)]
struct Flag {
    /// `-x` forms: its short flag and visible short aliases.
    shorts: BTreeSet<String>,
    /// Its `[default: …]` (clap's, or one its help text gives in that form), without quotes;
    /// empty when it has none.
    default: String,
}

/// The `--long` flags of `binary --help`, without `--help` and `--version`. An entry starts on
/// a line indented at most 6 spaces with a dash (`  -a, --x <X>` or `      --x`); its
/// description follows, on the same line or indented further.
fn help_flags(binary: &Path) -> BTreeMap<String, Flag> {
    let out = std::process::Command::new(binary).arg("--help").output().expect("run --help");
    assert!(out.status.success(), "{} --help: {}", binary.display(), out.status);
    let help = String::from_utf8(out.stdout).expect("UTF-8 help");
    let mut entries: Vec<String> = Vec::new();
    for line in help.lines() {
        let indent = line.len() - line.trim_start().len();
        if (1..=6).contains(&indent) && line.trim_start().starts_with('-') {
            entries.push(line.trim().to_string());
        } else if let Some(entry) = entries.last_mut().filter(|_| indent > 6) {
            entry.push(' ');
            entry.push_str(line.trim());
        }
    }
    let bracket = |entry: &str, key: &str| -> Option<String> {
        let start = entry.find(&format!("[{key}: "))? + key.len() + 3;
        Some(entry[start..start + entry[start..].find(']')?].to_string())
    };
    let mut flags = BTreeMap::new();
    for entry in entries {
        let head = entry.split("  ").next().expect("the entry's flags");
        let Some(long) = head.split([' ', ',']).find(|t| t.starts_with("--")) else { continue };
        if long == "--help" || long == "--version" {
            continue;
        }
        let mut shorts: BTreeSet<String> =
            head.split([' ', ',']).filter(|t| t.len() == 2 && t.starts_with('-')).map(str::to_string).collect();
        for key in ["alias", "aliases", "short alias", "short aliases"] {
            if let Some(aliases) = bracket(&entry, key) {
                shorts.extend(aliases.split(", ").filter(|a| a.len() == 2).map(str::to_string));
            }
        }
        let default = bracket(&entry, "default").unwrap_or_default().trim_matches('"').to_string();
        flags.insert(long.to_string(), Flag { shorts, default });
    }
    flags
}

/// A row of a flag table: `| flags | short | default | what it does |`.
#[derive(Debug, Clone)]
struct Row {
    longs: Vec<String>,
    shorts: BTreeSet<String>,
    default: String,
}

/// The backquoted words of a cell.
fn quoted(cell: &str) -> impl Iterator<Item = &str> {
    cell.split('`').skip(1).step_by(2)
}

/// The rows of every table README marks, with `<!-- flags of a, b: … -->` on the line before
/// it, as a flag table of binary `a` and `b`, by binary.
fn readme_tables() -> BTreeMap<String, Vec<Row>> {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md")).expect("README.md");
    let mut tables: BTreeMap<String, Vec<Row>> = BTreeMap::new();
    let mut lines = readme.lines().peekable();
    while let Some(line) = lines.next() {
        let Some(marker) = line.strip_prefix("<!-- flags of ") else { continue };
        let binaries: Vec<&str> = marker.split(':').next().expect("binaries").split(", ").collect();
        while lines.peek().is_some_and(|l| l.trim().is_empty()) {
            lines.next();
        }
        let table: Vec<&str> = std::iter::from_fn(|| lines.next_if(|l| l.starts_with('|'))).collect();
        assert!(table.len() > 2, "no table after {line:?}");
        assert_eq!(table[0], "| flag | short | default | what it does |", "the header after {line:?}");
        for row in &table[2..] {
            let cells: Vec<&str> = row.trim_matches('|').split(" | ").map(str::trim).collect();
            assert_eq!(cells.len(), 4, "four cells: {row}");
            let longs: Vec<String> = quoted(cells[0]).map(str::to_string).collect();
            assert!(!longs.is_empty() && longs.iter().all(|l| l.starts_with("--")), "flags in `--x` form: {row}");
            let row =
                Row { longs, shorts: quoted(cells[1]).map(str::to_string).collect(), default: cells[2].to_string() };
            for binary in &binaries {
                tables.entry(binary.to_string()).or_default().push(row.clone());
            }
        }
    }
    tables
}

#[test]
fn every_flag_of_every_binary_is_in_its_readme_table() {
    let event_tail = profile_dir().join("event-tail");
    let binaries = [
        ("ebpf-extractor", bins().launcher.as_path()),
        ("ebpf-publisher", bins().publisher.as_path()),
        ("ebpf-loader", bins().loader.as_path()),
        // Only asked for its --help, as root: run where cargo put it.
        ("event-tail", event_tail.as_path()),
    ];
    let tables = readme_tables();
    for (name, binary) in binaries {
        let help = help_flags(binary);
        assert!(help.len() > 3, "{name}: too few flags parsed from --help: {help:?}");
        let rows = tables.get(name).unwrap_or_else(|| panic!("README has no table of {name}'s flags"));
        let in_readme: BTreeSet<&str> = rows.iter().flat_map(|r| &r.longs).map(String::as_str).collect();
        let in_help: BTreeSet<&str> = help.keys().map(String::as_str).collect();
        assert_eq!(
            in_readme.difference(&in_help).collect::<Vec<_>>(),
            Vec::<&&str>::new(),
            "README names flags {name} does not take"
        );
        assert_eq!(
            in_help.difference(&in_readme).collect::<Vec<_>>(),
            Vec::<&&str>::new(),
            "{name}'s flags missing from README"
        );
        for row in rows {
            let shorts: BTreeSet<String> = row.longs.iter().flat_map(|l| help[l].shorts.clone()).collect();
            assert_eq!(row.shorts, shorts, "{name} {:?}: short forms", row.longs);
            for long in &row.longs {
                let default = &help[long].default;
                assert!(
                    default.is_empty() || row.default == *default || row.default.contains(&format!("`{default}`")),
                    "{name} {long}: README's default {:?}, --help's `{default}`",
                    row.default
                );
            }
        }
    }
}
