//! Process hardening applied before a service reads its settings or holds any key.
//!
//! A core dump of Nexus or a keeper would hold the root key or a share in the clear, so the
//! core-file size limit is lowered to zero, soft and hard: a crash leaves no core file, and the
//! process cannot raise the limit again later.
//!
//! `PR_SET_DUMPABLE = 0` would also stop same-uid processes from reading `/proc/<pid>/mem`,
//! but it makes `/proc/<pid>/exe` and `environ` root-owned, which breaks Unix workload
//! attestation by a non-root agent (the dev agent reads both), so it is not applied here.

/// Why the process could not be hardened.
#[derive(Debug, thiserror::Error)]
#[error("cannot disable core dumps (setrlimit RLIMIT_CORE 0)")]
pub struct HardenError(#[source] std::io::Error);

/// Disables core dumps for this process and its children.
pub fn disable_core_dumps() -> Result<(), HardenError> {
    use rustix::process::{Resource, Rlimit, setrlimit};
    let none = Rlimit {
        current: Some(0),
        maximum: Some(0),
    };
    setrlimit(Resource::Core, none).map_err(|e| HardenError(e.into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn core_dumps_are_off_and_cannot_be_turned_back_on() {
        disable_core_dumps().unwrap();
        let limits = std::fs::read_to_string("/proc/self/limits").unwrap();
        let core = limits
            .lines()
            .find(|l| l.starts_with("Max core file size"))
            .unwrap();
        let fields: Vec<&str> = core.split_whitespace().collect();
        assert_eq!(&fields[4..6], ["0", "0"], "{core}");
        // The hard limit is zero too: raising it again is refused even for this process
        // (root keeps CAP_SYS_RESOURCE, so only check when not root).
        let raise = rustix::process::setrlimit(
            rustix::process::Resource::Core,
            rustix::process::Rlimit {
                current: Some(1 << 20),
                maximum: Some(1 << 20),
            },
        );
        if rustix::process::geteuid().is_root() {
            return;
        }
        assert!(raise.is_err());
    }
}
