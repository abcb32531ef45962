//! What a soak watches on the server: resident memory and open file descriptors from
//! `/proc/<pid>` (Linux), and counters from a monitoring endpoint; and the growth verdict over
//! the samples taken after the warm-up.
//!
//! Growth is the median of the last three post-warm-up samples minus the median of the first
//! three (medians, so one sample caught mid-burst does not decide), compared with a tolerance
//! stated up front: for memory `max(pct × baseline, floor)`, for descriptors a count.

use std::time::Duration;

use anyhow::{Context, Result};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// One sample of the server process.
#[derive(Debug, Clone, Default)]
pub struct Sample {
    /// Since the start of the run.
    pub at: Duration,
    /// `VmRSS`, KiB.
    pub rss_kib: u64,
    /// Entries of `/proc/<pid>/fd`.
    pub fds: u64,
    /// Counters read from monitoring at the same moment, by name (absent ones left out).
    pub counters: Vec<(&'static str, i64)>,
    /// Which server process (a restart starts a new one).
    pub incarnation: u32,
}

/// Reads `VmRSS` (KiB) and the number of open descriptors of `pid`.
pub fn proc_sample(pid: u32) -> Result<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status (is the server running?)"))?;
    let rss = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse::<u64>().ok())
        .with_context(|| format!("no VmRSS in /proc/{pid}/status"))?;
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .with_context(|| format!("listing /proc/{pid}/fd"))?
        .count() as u64;
    Ok((rss, fds))
}

/// `GET path` on `addr` (`host:port`): the body of a 200 answer, within 5 s.
pub async fn http_get(addr: &str, path: &str) -> Result<String> {
    let io = async {
        let mut s = tokio::net::TcpStream::connect(addr).await?;
        let req = format!("GET {path} HTTP/1.1\r\nHost: soak\r\nConnection: close\r\n\r\n");
        s.write_all(req.as_bytes()).await?;
        let mut raw = Vec::new();
        s.read_to_end(&mut raw).await?;
        anyhow::Ok(String::from_utf8_lossy(&raw).into_owned())
    };
    let text = tokio::time::timeout(Duration::from_secs(5), io)
        .await
        .with_context(|| format!("GET {path} on {addr}: no answer in 5 s"))??;
    let (head, body) = text
        .split_once("\r\n\r\n")
        .with_context(|| format!("GET {path} on {addr}: not HTTP"))?;
    anyhow::ensure!(
        head.starts_with("HTTP/1.1 200"),
        "GET {path} on {addr}: {}",
        head.lines().next().unwrap_or_default()
    );
    // Chunked bodies: the monitoring servers send JSON in one chunk, possibly more.
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        return Ok(dechunk(body));
    }
    Ok(body.to_string())
}

fn dechunk(mut rest: &str) -> String {
    let mut out = String::new();
    while let Some((size, after)) = rest.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if n == 0 || after.len() < n {
            break;
        }
        out.push_str(&after[..n]);
        rest = after.get(n + 2..).unwrap_or_default();
    }
    out
}

/// Integer fields `names` of the JSON object at `path` on a monitoring port.
pub async fn counters(addr: &str, path: &str, names: &[&'static str]) -> Vec<(&'static str, i64)> {
    let Ok(body) = http_get(addr, path).await else {
        return Vec::new();
    };
    names
        .iter()
        .filter_map(|n| json_int(&body, n).map(|v| (*n, v)))
        .collect()
}

/// The integer value of the first `"name": <int>` in a JSON text (the monitoring answers are
/// flat enough for this; the tool has no JSON dependency).
pub fn json_int(body: &str, name: &str) -> Option<i64> {
    let key = format!("\"{name}\"");
    let at = body.find(&key)? + key.len();
    let rest = body[at..].trim_start().strip_prefix(':')?.trim_start();
    let end = rest
        .find(|c: char| !(c.is_ascii_digit() || c == '-'))
        .unwrap_or(rest.len());
    rest[..end].parse().ok()
}

/// The growth limits a run is judged by.
#[derive(Debug, Clone, Copy)]
pub struct Tolerance {
    /// Memory may grow by this share of its post-warm-up baseline...
    pub rss_pct: f64,
    /// ...or by this much, whichever is larger (KiB).
    pub rss_floor_kib: u64,
    /// Open descriptors may grow by this many.
    pub fds: u64,
}

/// Growth of one quantity after the warm-up.
#[derive(Debug, Clone, Copy)]
pub struct Growth {
    pub baseline: u64,
    pub end: u64,
    pub max: u64,
    pub allowed: u64,
}

impl Growth {
    pub fn grown(&self) -> i64 {
        self.end as i64 - self.baseline as i64
    }

    pub fn ok(&self) -> bool {
        self.grown() <= self.allowed as i64
    }
}

/// The verdict over `samples` taken at or after `warmup`: (memory, descriptors); None when
/// fewer than 6 samples are left (too short a run to judge).
pub fn growth(samples: &[Sample], warmup: Duration, tol: &Tolerance) -> Option<(Growth, Growth)> {
    let steady: Vec<&Sample> = samples.iter().filter(|s| s.at >= warmup).collect();
    if steady.len() < 6 {
        return None;
    }
    let judge = |get: &dyn Fn(&Sample) -> u64, allowed: &dyn Fn(u64) -> u64| {
        let first: Vec<u64> = steady[..3].iter().map(|s| get(s)).collect();
        let last: Vec<u64> = steady[steady.len() - 3..].iter().map(|s| get(s)).collect();
        let baseline = median(first);
        Growth {
            baseline,
            end: median(last),
            max: steady.iter().map(|s| get(s)).max().unwrap_or(0),
            allowed: allowed(baseline),
        }
    };
    let rss = judge(&|s| s.rss_kib, &|b| {
        ((b as f64 * tol.rss_pct / 100.0) as u64).max(tol.rss_floor_kib)
    });
    let fds = judge(&|s| s.fds, &|_| tol.fds);
    Some((rss, fds))
}

fn median(mut v: Vec<u64>) -> u64 {
    v.sort_unstable();
    v[v.len() / 2]
}

/// The sample table: one line per sample.
pub fn table(samples: &[Sample], warmup: Duration) -> String {
    let mut out = String::from("     t    RSS MiB   fds  counters\n");
    for s in samples {
        let mark = if s.at < warmup { " (warm-up)" } else { "" };
        let counters: Vec<String> = s.counters.iter().map(|(n, v)| format!("{n}={v}")).collect();
        let inc = if s.incarnation > 0 {
            format!(" [server #{}]", s.incarnation + 1)
        } else {
            String::new()
        };
        out += &format!(
            "{:>6.0}s {:>9.1} {:>5}  {}{inc}{mark}\n",
            s.at.as_secs_f64(),
            s.rss_kib as f64 / 1024.0,
            s.fds,
            counters.join(" ")
        );
    }
    out
}

/// `RSS 41.2 → 42.0 MiB (+0.8, allowed +4.1, max 43.5)`.
pub fn growth_line(what: &str, g: &Growth, mib: bool) -> String {
    let f = |v: f64| {
        if mib {
            format!("{:.1}", v / 1024.0)
        } else {
            format!("{v:.0}")
        }
    };
    format!(
        "{what} {} -> {}{} ({:+}{}, allowed +{}, max {}) {}",
        f(g.baseline as f64),
        f(g.end as f64),
        if mib { " MiB" } else { "" },
        if mib {
            format!("{:.1}", g.grown() as f64 / 1024.0)
        } else {
            g.grown().to_string()
        },
        if mib { " MiB" } else { "" },
        f(g.allowed as f64),
        f(g.max as f64),
        if g.ok() { "ok" } else { "GROWTH" }
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(at: u64, rss: u64, fds: u64) -> Sample {
        Sample {
            at: Duration::from_secs(at),
            rss_kib: rss,
            fds,
            ..Sample::default()
        }
    }

    #[test]
    fn growth_uses_medians_after_the_warmup() {
        let tol = Tolerance {
            rss_pct: 10.0,
            rss_floor_kib: 1024,
            fds: 5,
        };
        // Warm-up climbs (ignored); one spike at the end is outvoted.
        let flat: Vec<Sample> = [(0, 100, 10), (5, 9000, 10)]
            .into_iter()
            .chain((10..20).map(|t| (t, 10_000, 20)))
            .chain([(20, 50_000, 21), (21, 10_100, 20), (22, 10_200, 20)])
            .map(|(t, r, f)| s(t, r, f))
            .collect();
        let (rss, fds) = growth(&flat, Duration::from_secs(10), &tol).unwrap();
        assert_eq!((rss.baseline, rss.end, rss.max), (10_000, 10_200, 50_000));
        assert_eq!(rss.allowed, 1024);
        assert!(rss.ok() && fds.ok());
        // Steady climb: caught.
        let leak: Vec<Sample> = (0..20).map(|t| s(t, 10_000 + t * 500, 20 + t)).collect();
        let (rss, fds) = growth(&leak, Duration::from_secs(2), &tol).unwrap();
        assert!(!rss.ok() && !fds.ok());
        assert!(growth(&leak[..7], Duration::from_secs(2), &tol).is_none());
    }

    #[test]
    fn json_ints_and_chunks() {
        let body = r#"{"connections": 12, "subscriptions":-3,"x":{"connections":9}}"#;
        assert_eq!(json_int(body, "connections"), Some(12));
        assert_eq!(json_int(body, "subscriptions"), Some(-3));
        assert_eq!(json_int(body, "missing"), None);
        assert_eq!(dechunk("3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"), "abcde");
    }

    #[test]
    fn reads_its_own_process() {
        let (rss, fds) = proc_sample(std::process::id()).unwrap();
        assert!(rss > 0 && fds > 0);
    }
}
