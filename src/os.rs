//! What graphq asks of the operating system: enough file descriptors for a
//! gateway (or a load generator) holding tens of thousands of sockets, and,
//! for a gateway, memory in small pages.

/// Lets this process open as many sockets as the hard limit allows.
pub fn raise_fd_limit() {
    #[cfg(unix)]
    // SAFETY: getrlimit/setrlimit only read and write the struct we pass.
    unsafe {
        let mut l = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut l) == 0 && l.rlim_cur < l.rlim_max {
            l.rlim_cur = l.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &l);
        }
    }
}

/// The file-descriptor limit this process runs under (the soft limit), when
/// the platform tells; the gateway keeps its connection cap below it.
pub fn fd_limit() -> Option<u64> {
    #[cfg(unix)]
    // SAFETY: getrlimit only writes the struct we pass.
    unsafe {
        let mut l = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut l) == 0 && l.rlim_cur != libc::RLIM_INFINITY {
            // rlim_t is u64 on Linux but not on every unix.
            #[allow(clippy::unnecessary_cast)]
            return Some(l.rlim_cur as u64);
        }
    }
    None
}

/// Turns transparent huge pages off for this process (Linux; elsewhere a
/// no-op). The allocator (mimalloc) asks for huge pages on its arenas, so
/// the first byte written in a 2 MiB region makes the whole region
/// resident. A gateway's memory is mostly per-connection state that is
/// touched a little and then sits idle (buffers of which a connection uses
/// the first bytes): with huge pages an idle Server-Sent Events stream cost
/// 23–24 KiB of resident memory, with small pages 15 (BENCHMARKS.md, issue
/// 19). Regions already faulted in as huge pages stay so.
pub fn no_huge_pages() {
    #[cfg(target_os = "linux")]
    // SAFETY: PR_SET_THP_DISABLE takes plain integers and touches no memory
    // of ours.
    unsafe {
        if libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) != 0 {
            tracing::debug!(
                err = %std::io::Error::last_os_error(),
                "transparent huge pages not turned off"
            );
        }
    }
}
