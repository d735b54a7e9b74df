//! What graphq's own processes and the load generator spent on a benchmark
//! round: CPU time (user + system, `/proc/PID/stat`) read before and after
//! and divided by the commands applied. Next to Redis' share
//! ([`super::redis_cost`]) it says where a command's CPU goes: admission
//! and delivery (gateway), ordering and applying (worker), and what the
//! benchmark's own clients cost the machine they share. Linux only;
//! elsewhere, and for a process that is gone, the figure is left out.

use serde::Serialize;

/// CPU time of one process so far, µs; None when it cannot be read.
/// `pid` None: this process.
fn cpu_us(pid: Option<u32>) -> Option<f64> {
    let path = match pid {
        Some(p) => format!("/proc/{p}/stat"),
        None => "/proc/self/stat".to_string(),
    };
    let ticks = ticks_of(&std::fs::read_to_string(path).ok()?)?;
    // SAFETY: sysconf reads a constant of the system and touches no memory
    // of ours.
    let per_s = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    (per_s > 0).then(|| ticks as f64 * 1e6 / per_s as f64)
}

/// utime + stime (clock ticks) of a `/proc/PID/stat` line. The command
/// name (field 2) is in parentheses and may hold spaces and parentheses, so
/// the fields are counted from the last `)`.
fn ticks_of(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    // After the name: state is field 3, utime 14, stime 15.
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// The processes whose CPU a round reports: the gateways and workers
/// named on the command line, and the load generator itself.
#[derive(Clone, Debug, Default)]
pub struct Processes {
    pub gateways: Vec<u32>,
    pub workers: Vec<u32>,
}

/// One reading of each group's CPU time, µs (None: a process could not be
/// read, or the group is empty).
#[derive(Clone, Debug)]
pub struct CpuReading {
    gateway: Option<f64>,
    worker: Option<f64>,
    load_generator: Option<f64>,
}

/// CPU time per applied command, µs, by process group.
#[derive(Debug, Serialize)]
pub struct CpuPerCommand {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gateway: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub worker: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub load_generator: Option<f64>,
}

fn sum(pids: &[u32]) -> Option<f64> {
    if pids.is_empty() {
        return None;
    }
    pids.iter().map(|p| cpu_us(Some(*p))).sum()
}

impl Processes {
    pub fn read(&self) -> CpuReading {
        CpuReading {
            gateway: sum(&self.gateways),
            worker: sum(&self.workers),
            load_generator: cpu_us(None),
        }
    }
}

impl CpuReading {
    pub fn per_command_until(&self, after: &CpuReading, applied: u64) -> CpuPerCommand {
        let per = |a: Option<f64>, b: Option<f64>| Some((b? - a?).max(0.0) / applied.max(1) as f64);
        CpuPerCommand {
            gateway: per(self.gateway, after.gateway),
            worker: per(self.worker, after.worker),
            load_generator: per(self.load_generator, after.load_generator),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_and_system_ticks_are_read_past_a_name_with_spaces() {
        let line = "4242 (graphq (gate way)) S 1 4242 4242 0 -1 4194560 2170 0 0 0 \
                    731 122 0 0 20 0 6 0 1234 98765 432 18446744073709551615";
        assert_eq!(ticks_of(line), Some(731 + 122));
        assert_eq!(ticks_of("4242 (cut short) S 1 2"), None);
        assert_eq!(ticks_of("no name at all"), None);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn the_load_generator_sees_its_own_cpu_time_grow() {
        let procs = Processes::default();
        let before = procs.read();
        // Spin until a tick of CPU time (10 ms) shows, however loaded the
        // machine is; a reading that never moves fails at the deadline.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        let mut x = 0u64;
        let per = loop {
            for _ in 0..100_000 {
                x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
            }
            let per = before.per_command_until(&procs.read(), 1);
            if per.load_generator.unwrap() >= 10_000.0 {
                break per;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "CPU time never grew: {per:?}"
            );
        };
        assert!(per.gateway.is_none() && per.worker.is_none());
        let gone = Processes {
            gateways: vec![u32::MAX],
            workers: vec![],
        };
        assert!(gone.read().gateway.is_none());
    }
}
