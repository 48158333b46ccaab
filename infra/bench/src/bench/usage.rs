//! What the machine spent during a measurement, read from the kernel's accounting:
//! CPU time of this process (the load generator), of the server under test (a child
//! process) and of everything else (PostgreSQL, the kernel's network stack on behalf
//! of nobody in particular, other programs), each as a share of the whole machine;
//! and the server's resident memory.
//!
//! Shares are of the machine, not of one core: on 2 cores, one busy core is 50%.

use std::time::{Duration, Instant};

/// CPU used during a measurement, as fractions of the machine (all cores).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct CpuShare {
    /// This process: the load generator (and, for SQL baselines, the client).
    pub generator: f64,
    /// The server under test, when it runs in a child process.
    pub server: f64,
    /// Everything else busy on the machine: PostgreSQL, the kernel, other programs.
    pub other: f64,
}

impl CpuShare {
    /// `gen / server / other` in percent of the machine, for a table cell.
    pub fn cell(&self) -> String {
        format!(
            "{:.0} / {:.0} / {:.0}",
            self.generator * 100.0,
            self.server * 100.0,
            self.other * 100.0
        )
    }
}

/// CPU counters at the start of a measurement.
pub struct CpuClock {
    started: Instant,
    own: Duration,
    server: Option<(u32, Duration)>,
    machine_busy: Option<Duration>,
}

impl CpuClock {
    /// Starts counting for this process, the server `pid` (if any) and the machine.
    pub fn start(server: Option<u32>) -> CpuClock {
        CpuClock {
            started: Instant::now(),
            own: own_cpu(),
            server: server.and_then(|pid| process_cpu(pid).map(|t| (pid, t))),
            machine_busy: machine_busy(),
        }
    }

    /// The shares since `start`.
    pub fn stop(&self) -> CpuShare {
        let capacity = self.started.elapsed().as_secs_f64() * cores() as f64;
        if capacity <= 0.0 {
            return CpuShare::default();
        }
        let generator = own_cpu().saturating_sub(self.own).as_secs_f64();
        let server = self
            .server
            .and_then(|(pid, before)| process_cpu(pid).map(|now| now.saturating_sub(before)))
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0);
        let busy = match (self.machine_busy, machine_busy()) {
            (Some(before), Some(now)) => now.saturating_sub(before).as_secs_f64(),
            _ => generator + server,
        };
        CpuShare {
            generator: generator / capacity,
            server: server / capacity,
            other: (busy - generator - server).max(0.0) / capacity,
        }
    }
}

pub fn cores() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

/// User and system CPU time of this process, all threads.
fn own_cpu() -> Duration {
    // SAFETY: getrusage only writes the struct it is given.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) } != 0 {
        return Duration::ZERO;
    }
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

/// User and system CPU time of the calling thread; `None` where the clock is missing.
pub fn thread_cpu() -> Option<Duration> {
    // SAFETY: clock_gettime only writes the struct it is given.
    let mut t: libc::timespec = unsafe { std::mem::zeroed() };
    if unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut t) } != 0 {
        return None;
    }
    Some(Duration::new(t.tv_sec as u64, t.tv_nsec as u32))
}

fn ticks_per_second() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 { t as f64 } else { 100.0 }
}

fn ticks(n: u64) -> Duration {
    Duration::from_secs_f64(n as f64 / ticks_per_second())
}

/// User and system CPU time of process `pid` (all its threads), from /proc/PID/stat.
pub fn process_cpu(pid: u32) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_process_ticks(&stat).map(ticks)
}

/// utime + stime (fields 14 and 15) of a /proc/PID/stat line. The command name
/// (field 2) is in parentheses and may itself hold spaces and parentheses.
fn parse_process_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3 (state).
    let utime: u64 = fields.get(14 - 3)?.parse().ok()?;
    let stime: u64 = fields.get(15 - 3)?.parse().ok()?;
    Some(utime + stime)
}

/// CPU time the whole machine spent busy (all cores), from /proc/stat.
fn machine_busy() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    parse_machine_busy_ticks(&stat).map(ticks)
}

/// user + nice + system + irq + softirq of the aggregate `cpu` line; idle, iowait and
/// steal (time the hypervisor gave to someone else) are not work done here.
fn parse_machine_busy_ticks(stat: &str) -> Option<u64> {
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let n: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(|f| f.parse().unwrap_or(0))
        .collect();
    let at = |i: usize| n.get(i).copied().unwrap_or(0);
    Some(at(0) + at(1) + at(2) + at(5) + at(6))
}

/// Resident memory of process `pid` now (VmRSS), in bytes.
pub fn rss(pid: u32) -> Option<u64> {
    status_kib(pid, "VmRSS").map(|k| k * 1024)
}

/// Resident anonymous memory of process `pid` now (RssAnon: heap, stacks, wasm
/// memories; not the binary's and the compiled components' file-backed pages), in bytes.
pub fn rss_anon(pid: u32) -> Option<u64> {
    status_kib(pid, "RssAnon").map(|k| k * 1024)
}

/// The most resident memory process `pid` has had (VmHWM), in bytes.
pub fn peak_rss(pid: u32) -> Option<u64> {
    status_kib(pid, "VmHWM").map(|k| k * 1024)
}

fn status_kib(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    parse_status_kib(&status, field)
}

fn parse_status_kib(status: &str, field: &str) -> Option<u64> {
    status.lines().find_map(|l| {
        let value = l.strip_prefix(field)?.strip_prefix(':')?;
        value.split_whitespace().next()?.parse().ok()
    })
}

/// Bytes as MiB with one decimal.
pub fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn process_ticks_skip_a_command_name_with_spaces_and_parentheses() {
        let stat = "4242 (tokio (rt) x) S 1 4242 4242 0 -1 4194560 1000 0 0 0 731 269 0 0 20 0 9 0 100 0 0";
        assert_eq!(parse_process_ticks(stat), Some(731 + 269));
        assert_eq!(parse_process_ticks("4242 (x) S 1"), None);
    }

    #[test]
    fn machine_busy_counts_work_not_idle_iowait_or_steal() {
        let stat = "cpu  100 2 30 5000 70 4 5 900 0 0\ncpu0 50 1 15 2500 35 2 2 450 0 0\n";
        assert_eq!(parse_machine_busy_ticks(stat), Some(100 + 2 + 30 + 4 + 5));
    }

    #[test]
    fn status_fields_are_read_in_kib() {
        let status =
            "Name:\ttoaster\nVmPeak:\t  900 kB\nVmHWM:\t   61440 kB\nVmRSS:\t   40960 kB\n";
        assert_eq!(parse_status_kib(status, "VmHWM"), Some(61440));
        assert_eq!(parse_status_kib(status, "VmRSS"), Some(40960));
        assert_eq!(parse_status_kib(status, "VmSwap"), None);
    }

    #[test]
    fn a_busy_generator_shows_up_as_its_own_share() {
        let clock = CpuClock::start(Some(std::process::id()));
        let spin = Instant::now();
        let mut x = 0u64;
        while spin.elapsed() < Duration::from_millis(200) {
            x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
        }
        let share = clock.stop();
        assert!(share.generator > 0.0, "{share:?}");
        // The "server" here is this same process, so it counts the same time.
        assert!(share.server > 0.0, "{share:?}");
        assert!(share.generator <= 1.0 && share.other >= 0.0, "{share:?}");
    }

    #[test]
    fn this_process_has_a_resident_and_a_peak_size() {
        let pid = std::process::id();
        let (now, peak) = (rss(pid).unwrap(), peak_rss(pid).unwrap());
        assert!(now > 0 && peak >= now, "{now} {peak}");
    }
}
