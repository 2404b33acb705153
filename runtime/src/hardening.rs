//! Process hardening applied before a service reads its settings or holds any key.
//!
//! A core dump of Nexus or a keeper would hold the root key or a share in the clear, so the
//! core-file size limit is lowered to zero, soft and hard: a crash leaves no core file, and the
//! process cannot raise the limit again later.
//!
//! With `mlock` set, a service also locks its memory ([`lock_memory`]) before it holds a key.
//!
//! `PR_SET_DUMPABLE = 0` would also stop same-uid processes from reading `/proc/<pid>/mem`,
//! but it makes `/proc/<pid>/exe` and `environ` root-owned, which breaks Unix workload
//! attestation by a non-root agent (the dev agent reads both), so it is not applied here.

/// Why memory could not be locked.
#[derive(Debug, thiserror::Error)]
#[error(
    "cannot lock memory (mlock is on): mlockall failed; give the process CAP_IPC_LOCK \
     (systemd: AmbientCapabilities=CAP_IPC_LOCK) or an RLIMIT_MEMLOCK above its memory use \
     (systemd: LimitMEMLOCK=infinity; ulimit -l), or turn mlock off"
)]
pub struct LockError(#[source] std::io::Error);

/// Locks every page of the process in memory, those mapped now and later, as each is first
/// touched (`mlockall(MCL_CURRENT | MCL_FUTURE | MCL_ONFAULT)`), so keys, shares and values
/// never reach swap. On fault rather than at once, so thread stacks and reserved arenas
/// count only what they use.
pub fn lock_memory() -> Result<(), LockError> {
    use rustix::mm::{MlockAllFlags, mlockall};
    mlockall(MlockAllFlags::CURRENT | MlockAllFlags::FUTURE | MlockAllFlags::ONFAULT)
        .map_err(|e| LockError(e.into()))
}

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
    use rustix::process::{Resource, Rlimit, geteuid, getrlimit, setrlimit};

    use super::*;

    #[test]
    fn core_dumps_are_off_and_cannot_be_turned_back_on() {
        disable_core_dumps().unwrap();
        let limit = getrlimit(Resource::Core);
        assert_eq!((limit.current, limit.maximum), (Some(0), Some(0)));
        // The hard limit is zero too, so raising it again is refused (root keeps
        // CAP_SYS_RESOURCE and may, so only checked when not root).
        if !geteuid().is_root() {
            let mib = Some(1 << 20);
            let raise = setrlimit(
                Resource::Core,
                Rlimit {
                    current: mib,
                    maximum: mib,
                },
            );
            assert!(raise.is_err());
        }
    }
}
