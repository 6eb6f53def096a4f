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
    #[error(
        "the condition {arg:?} on {name} compares bits beyond the argument's low 32 or outside its mask, \
         or is an empty or nested Arg::All"
    )]
    Condition { name: &'static str, arg: Arg },
}

/// A condition on one argument (by index), whose low 32 bits are compared: the kernel reads a
/// C `int`, or for `clone`'s flags only the low 32 bits.
#[derive(Debug, Clone, Copy)]
pub enum Arg {
    /// The argument equals the value.
    Eq(u8, u64),
    /// The argument has none of the mask's bits set.
    Clear(u8, u64),
    /// The argument's bits under the mask (second) are those of the value (third).
    Masked(u8, u64, u64),
    /// Every one of these conditions holds (each of them one of the above).
    All(&'static [Arg]),
}

impl Arg {
    /// Whether the filter compares exactly what the condition says: seccompiler masks the value
    /// without a word, and 32-bit comparisons drop higher bits.
    fn is_exact(self) -> bool {
        match self {
            Arg::Eq(_, value) | Arg::Clear(_, value) => value <= u64::from(u32::MAX),
            Arg::Masked(_, mask, value) => mask <= u64::from(u32::MAX) && value & !mask == 0,
            Arg::All(all) => !all.is_empty() && all.iter().all(|arg| !matches!(arg, Arg::All(_)) && arg.is_exact()),
        }
    }

    /// The filter's comparisons of the condition, all of which must hold.
    fn conditions(self) -> Result<Vec<Cond>, seccompiler::BackendError> {
        Ok(match self {
            Arg::Eq(index, value) => vec![Cond::new(index, Len::Dword, Op::Eq, value)?],
            Arg::Clear(index, mask) => vec![Cond::new(index, Len::Dword, Op::MaskedEq(mask), 0)?],
            Arg::Masked(index, mask, value) => vec![Cond::new(index, Len::Dword, Op::MaskedEq(mask), value)?],
            Arg::All(all) => all.iter().map(|arg| arg.conditions()).collect::<Result<Vec<_>, _>>()?.concat(),
        })
    }
}

/// One system call of the steady state: allowed with any of `only`'s conditions (a condition
/// on several arguments is an [`Arg::All`]), or with any arguments when `only` is empty; or,
/// with `fails_with`, always failing with that errno.
#[derive(Debug)]
pub struct Allowed {
    pub nr: libc::c_long,
    pub name: &'static str,
    pub only: &'static [Arg],
    pub fails_with: Option<i32>,
    pub why: &'static str,
}

pub const fn allow(nr: libc::c_long, name: &'static str, only: &'static [Arg], why: &'static str) -> Allowed {
    Allowed { nr, name, only, fails_with: None, why }
}

/// A call made to fail with `errno` rather than kill the process: one whose arguments a filter
/// cannot check, where the C library then falls back to one whose arguments it can (clone3's
/// flags lie in memory, clone's in a register).
pub const fn refuse(nr: libc::c_long, name: &'static str, errno: i32, why: &'static str) -> Allowed {
    Allowed { nr, name, only: &[], fails_with: Some(errno), why }
}

/// The filter of `table`: any call not in it kills the process. A refused call passes this
/// filter; [`refusals`] fails it.
pub fn program(table: &[Allowed]) -> Result<BpfProgram, ConfineError> {
    let mut rules = BTreeMap::new();
    for allowed in table {
        let conditions = allowed
            .only
            .iter()
            .map(|&arg| {
                if !arg.is_exact() {
                    return Err(ConfineError::Condition { name: allowed.name, arg });
                }
                Ok(SeccompRule::new(arg.conditions()?)?)
            })
            .collect::<Result<Vec<_>, _>>()?;
        rules.insert(allowed.nr, conditions);
    }
    let arch = TargetArch::try_from(std::env::consts::ARCH)?;
    let filter = SeccompFilter::new(rules, SeccompAction::KillProcess, SeccompAction::Allow, arch)?;
    Ok(filter.try_into()?)
}

/// One filter per errno of `table`'s refused calls, failing them with it; stacked on
/// [`program`]'s, whose kill takes precedence over an errno, and an errno over its allow.
pub fn refusals(table: &[Allowed]) -> Result<Vec<BpfProgram>, ConfineError> {
    let mut by_errno = BTreeMap::<i32, BTreeMap<libc::c_long, Vec<SeccompRule>>>::new();
    for refused in table {
        if let Some(errno) = refused.fails_with {
            by_errno.entry(errno).or_default().insert(refused.nr, Vec::new());
        }
    }
    let arch = TargetArch::try_from(std::env::consts::ARCH)?;
    by_errno
        .into_iter()
        .map(|(errno, rules)| {
            let filter = SeccompFilter::new(rules, SeccompAction::Allow, SeccompAction::Errno(errno as u32), arch)?;
            Ok(filter.try_into()?)
        })
        .collect()
}

/// Installs the filters of `table` on every thread of the process (needs no_new_privs, or
/// CAP_SYS_ADMIN); threads started later inherit them.
pub fn confine(table: &[Allowed]) -> Result<(), ConfineError> {
    let main = program(table)?;
    // The refusals first: installing a filter takes prctl(PR_SET_NO_NEW_PRIVS) and seccomp,
    // which the main filter allows no more once installed.
    for refusal in &refusals(table)? {
        seccompiler::apply_filter_all_threads(refusal)?;
    }
    seccompiler::apply_filter_all_threads(&main)?;
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
    refusals(table).expect("the refusals build");
    assert_eq!(documented(doc, heading), rows(table), "the table under {heading:?}");
    for name in forbidden {
        assert!(table.iter().all(|a| a.name != *name), "{name} is allowed");
    }
}

/// For the binaries' tests, which try calls under their filters (feature `testing`).
#[cfg(feature = "testing")]
pub mod testing {
    use super::{confine, libc, Allowed};

    /// Set in a test's child process: the call it is to try under a filter.
    const CALL_TO_TRY: &str = "CONFINE_TEST_CALL_TO_TRY";

    /// For a test that tries calls under a filter, which kills its process: runs test `test` of
    /// this test binary again in a child process that is to try `call` ([`call_to_try`]), and
    /// returns how the child ended.
    pub fn try_in_child(test: &str, call: &str) -> std::process::Output {
        std::process::Command::new(std::env::current_exe().expect("the test binary"))
            .args(["--exact", test, "--test-threads=1"])
            .env(CALL_TO_TRY, call)
            .output()
            .expect("run the child")
    }

    /// In the child of [`try_in_child`]: the call to try; `None` in the test itself.
    pub fn call_to_try() -> Option<String> {
        std::env::var(CALL_TO_TRY).ok()
    }

    /// In the child of [`try_in_child`]: no core dump when the filter kills it, no_new_privs, then
    /// the filters of `table`.
    pub fn confine_child(table: &[Allowed]) {
        let no_core = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        // SAFETY: setrlimit reads the struct it is given; prctl takes plain integers.
        unsafe {
            assert_eq!(libc::setrlimit(libc::RLIMIT_CORE, &no_core), 0);
            assert_eq!(libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), 0);
        }
        confine(table).expect("install the filter");
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
        assert!(refusals(TABLE).unwrap().is_empty());
    }

    #[test]
    fn refused_calls_get_a_filter_of_their_own() {
        const REFUSING: &[Allowed] = &[
            allow(libc::SYS_write, "write", &[], "log"),
            refuse(libc::SYS_clone3, "clone3", libc::ENOSYS, "threads through clone"),
        ];
        assert!(!program(REFUSING).unwrap().is_empty());
        assert_eq!(refusals(REFUSING).unwrap().len(), 1);
    }

    #[test]
    fn a_condition_the_filter_would_not_compare_exactly_is_refused() {
        for arg in [
            Arg::Masked(0, 0x10, 0x11),
            Arg::Masked(0, 1 << 32, 0),
            Arg::Eq(0, 1 << 32),
            Arg::Clear(0, 1 << 33),
            Arg::All(&[Arg::Eq(0, 1), Arg::Eq(1, 1 << 32)]),
            Arg::All(&[Arg::All(&[Arg::Eq(0, 1)])]),
            Arg::All(&[]),
        ] {
            let only: &'static [Arg] = Box::leak(Box::new([arg]));
            let table = [allow(libc::SYS_clone, "clone", only, "threads")];
            assert!(matches!(program(&table), Err(ConfineError::Condition { name: "clone", .. })), "{arg:?} was taken");
        }
    }

    #[test]
    fn the_documented_rows_are_read_back() {
        let doc = "## Calls\n\ntext\n\n| syscall | why |\n|---|---|\n| `write` | log |\n| `mmap` | memory |\n\nafter\n";
        assert_eq!(documented(doc, "## Calls"), rows(TABLE));
    }
}
