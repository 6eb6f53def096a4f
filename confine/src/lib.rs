//! A process's steady state as one table: every system call it may make once started, the
//! arguments it may make it with, and why. [`confine`] turns the table into a seccomp filter
//! (built by the `seccompiler` crate, not by hand) that kills the process on any other call;
//! each binary's SECURITY.md section is checked against its table by [`documented`].

use std::collections::BTreeMap;

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen as Len, SeccompCmpOp as Op, SeccompCondition as Cond, SeccompFilter,
    SeccompRule, TargetArch,
};

pub use libc;

#[derive(Debug, thiserror::Error)]
pub enum ConfineError {
    #[error("cannot build the seccomp filter: {0}")]
    Build(#[from] seccompiler::BackendError),
    #[error("cannot install the seccomp filter: {0}")]
    Install(#[from] seccompiler::Error),
}

/// A condition on one argument (by index), each a C `int` whose low 32 bits are compared.
#[derive(Debug, Clone, Copy)]
pub enum Arg {
    /// The argument equals the value.
    Eq(u8, u64),
    /// The argument has none of the mask's bits set.
    Clear(u8, u64),
    /// The argument's bits under the mask (second) are those of the value (third).
    Masked(u8, u64, u64),
}

/// One allowed system call: allowed with any of `only`'s conditions, or with any arguments
/// when `only` is empty.
#[derive(Debug)]
pub struct Allowed {
    pub nr: libc::c_long,
    pub name: &'static str,
    pub only: &'static [Arg],
    pub why: &'static str,
}

pub const fn allow(nr: libc::c_long, name: &'static str, only: &'static [Arg], why: &'static str) -> Allowed {
    Allowed { nr, name, only, why }
}

/// The filter of `table`: any call not in it kills the process.
pub fn program(table: &[Allowed]) -> Result<BpfProgram, ConfineError> {
    let mut rules = BTreeMap::new();
    for allowed in table {
        let conditions = allowed
            .only
            .iter()
            .map(|arg| match *arg {
                Arg::Eq(index, value) => Cond::new(index, Len::Dword, Op::Eq, value),
                Arg::Clear(index, mask) => Cond::new(index, Len::Dword, Op::MaskedEq(mask), 0),
                Arg::Masked(index, mask, value) => Cond::new(index, Len::Dword, Op::MaskedEq(mask), value),
            })
            .map(|cond| cond.and_then(|cond| SeccompRule::new(vec![cond])))
            .collect::<Result<Vec<_>, _>>()?;
        rules.insert(allowed.nr, conditions);
    }
    let arch = TargetArch::try_from(std::env::consts::ARCH)?;
    let filter = SeccompFilter::new(rules, SeccompAction::KillProcess, SeccompAction::Allow, arch)?;
    Ok(filter.try_into()?)
}

/// Installs the filter of `table` on every thread of the process (needs no_new_privs, or
/// CAP_SYS_ADMIN); threads started later inherit it.
pub fn confine(table: &[Allowed]) -> Result<(), ConfineError> {
    seccompiler::apply_filter_all_threads(&program(table)?)?;
    Ok(())
}

/// The `(name, why)` rows of the table under `heading` in a Markdown document, to compare
/// with the table a binary enforces.
pub fn documented<'d>(doc: &'d str, heading: &str) -> Vec<(&'d str, &'d str)> {
    let Some(start) = doc.find(heading) else { return Vec::new() };
    doc[start..]
        .lines()
        .skip_while(|l| !l.starts_with("| `"))
        .take_while(|l| l.starts_with('|'))
        .filter_map(|row| {
            let mut cells = row.split('|').map(str::trim).filter(|c| !c.is_empty());
            Some((cells.next()?.trim_matches('`'), cells.next()?))
        })
        .collect()
}

/// The `(name, why)` rows of `table`.
pub fn rows(table: &[Allowed]) -> Vec<(&'static str, &'static str)> {
    table.iter().map(|a| (a.name, a.why)).collect()
}

/// For each binary's unit test: panics unless `table` builds into a filter, is the table
/// under `heading` in `doc` row for row, and leaves out every call in `forbidden`.
pub fn check(table: &[Allowed], doc: &str, heading: &str, forbidden: &[&str]) {
    assert!(!program(table).expect("the filter builds").is_empty());
    assert_eq!(documented(doc, heading), rows(table), "the table under {heading:?}");
    for name in forbidden {
        assert!(table.iter().all(|a| a.name != *name), "{name} is allowed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TABLE: &[Allowed] = &[
        allow(libc::SYS_write, "write", &[Arg::Eq(0, 2)], "log"),
        allow(libc::SYS_mmap, "mmap", &[Arg::Clear(2, libc::PROT_EXEC as u64)], "memory"),
    ];

    #[test]
    fn a_table_becomes_a_filter() {
        assert!(!program(TABLE).unwrap().is_empty());
    }

    #[test]
    fn the_documented_rows_are_read_back() {
        let doc = "## Calls\n\ntext\n\n| syscall | why |\n|---|---|\n| `write` | log |\n| `mmap` | memory |\n\nafter\n";
        assert_eq!(documented(doc, "## Calls"), rows(TABLE));
    }
}
