//! README.md's and docs/tracepoints.md's tracepoint tables are the table's: each is rendered
//! here from `Tracepoint`/`Category` and must appear, after its marker, exactly so. On a
//! change to the table, paste what the failure prints.

use ipc_protocol::{Category, Ring, Tracepoint};

const MARKER: &str =
    "<!-- table: generated from ipc-protocol/src/tracepoint.rs, checked by ipc-protocol/tests/docs.rs -->";

fn on_off(c: Category) -> &'static str {
    if c.default_on() {
        "on"
    } else {
        "off"
    }
}

/// One row per category, for README.md.
fn categories() -> String {
    let mut t = String::from("| tracepoints | default | switch | subject | BPF ring |\n|---|---|---|---|---|\n");
    for &c in Category::ALL {
        let tps: Vec<String> = Tracepoint::enabled(&[c]).iter().map(|tp| format!("`{tp}`")).collect();
        t += &format!(
            "| {} | {} | `--{}` | `{}` | `{}` |\n",
            tps.join(", "),
            on_off(c),
            c.flag(),
            c.subject(),
            c.ring().map_name()
        );
    }
    t
}

/// One row per tracepoint, for docs/tracepoints.md.
fn tracepoints() -> String {
    let mut t = String::from(
        "| id | tracepoint | default | switch | subject | BPF ring | record |\n|---|---|---|---|---|---|---|\n",
    );
    for &tp in Tracepoint::ALL {
        let c = tp.category();
        t += &format!(
            "| {} | `{tp}` | {} | `--{}` | `{}` | `{}` | `{}` |\n",
            tp.id(),
            on_off(c),
            c.flag(),
            c.subject(),
            tp.ring().map_name(),
            tp.layout().c_name
        );
    }
    t
}

/// One row per ring, for docs/tracepoints.md.
fn rings() -> String {
    let mut t = String::from("| ring | default bytes | minimum bytes | flag of `ebpf-loader` |\n|---|---|---|---|\n");
    for ring in Ring::ALL {
        t += &format!(
            "| `{}` | {} | {} | `--{}` |\n",
            ring.map_name(),
            ring.default_bytes(),
            ring.min_bytes(),
            ring.size_flag()
        );
    }
    t
}

fn check(doc: &str, table: String) {
    check_after(doc, MARKER, table)
}

fn check_after(doc: &str, marker: &str, table: String) {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(doc);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let expected = format!("{marker}\n\n{table}");
    assert!(text.contains(&expected), "{doc} must hold, after its marker:\n\n{expected}");
}

#[test]
fn readme_lists_every_category_as_the_table_has_it() {
    check("README.md", categories());
}

#[test]
fn docs_list_every_tracepoint_as_the_table_has_it() {
    check("docs/tracepoints.md", tracepoints());
}

#[test]
fn docs_list_every_ring_as_the_table_has_it() {
    let marker = "<!-- rings: generated from ipc-protocol/src/tracepoint.rs, checked by ipc-protocol/tests/docs.rs -->";
    check_after("docs/tracepoints.md", marker, rings());
}
