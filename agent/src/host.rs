//! Host metrics for heartbeats, read from Linux's /proc (CPU busy share between two readings,
//! memory, network bytes). Small enough that a crate would add more than it saves; on systems
//! without /proc the numbers are zero.

use onda_shared::cluster::proto::HostMetrics;

#[derive(Debug, Default)]
pub struct HostSampler {
    last_cpu: Option<(u64, u64)>,
}

fn cpu_times() -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    let total: u64 = v.iter().sum();
    // idle + iowait
    let idle = v.get(3).copied().unwrap_or(0) + v.get(4).copied().unwrap_or(0);
    Some((total, idle))
}

fn meminfo() -> (u64, u64) {
    let Ok(text) = std::fs::read_to_string("/proc/meminfo") else {
        return (0, 0);
    };
    let field = |name: &str| {
        text.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kb| kb.parse::<u64>().ok())
            .map_or(0, |kb| kb * 1024)
    };
    (field("MemTotal:"), field("MemAvailable:"))
}

fn net_bytes() -> (u64, u64) {
    let Ok(text) = std::fs::read_to_string("/proc/net/dev") else {
        return (0, 0);
    };
    let mut rx = 0u64;
    let mut tx = 0u64;
    for line in text.lines().skip(2) {
        let Some((name, rest)) = line.split_once(':') else {
            continue;
        };
        if name.trim() == "lo" {
            continue;
        }
        let v: Vec<u64> = rest
            .split_whitespace()
            .filter_map(|x| x.parse().ok())
            .collect();
        rx += v.first().copied().unwrap_or(0);
        tx += v.get(8).copied().unwrap_or(0);
    }
    (rx, tx)
}

impl HostSampler {
    pub fn sample(&mut self) -> HostMetrics {
        let cpu = cpu_times();
        let cpu_percent = match (self.last_cpu, cpu) {
            (Some((t0, i0)), Some((t1, i1))) if t1 > t0 => {
                let busy = (t1 - t0).saturating_sub(i1.saturating_sub(i0));
                100.0 * busy as f64 / (t1 - t0) as f64
            }
            _ => 0.0,
        };
        self.last_cpu = cpu;
        let (memory_total_bytes, memory_available_bytes) = meminfo();
        let (net_rx_bytes, net_tx_bytes) = net_bytes();
        HostMetrics {
            cpu_percent,
            memory_total_bytes,
            memory_available_bytes,
            net_rx_bytes,
            net_tx_bytes,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_this_machine() {
        let mut s = HostSampler::default();
        s.sample();
        let m = s.sample();
        assert!((0.0..=100.0).contains(&m.cpu_percent));
        if std::path::Path::new("/proc/meminfo").exists() {
            assert!(m.memory_total_bytes > 0 && m.memory_available_bytes <= m.memory_total_bytes);
        }
    }
}
