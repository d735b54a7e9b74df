//! What graphq asks of the operating system: enough file descriptors for a
//! gateway (or a load generator) holding tens of thousands of sockets.

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
