//! The value formats nats-server's monitoring JSON uses: Go `time.Time` (RFC 3339 with
//! nanoseconds, trailing zeros trimmed: [`rfc3339`], from `rnats-time`), its "uptime"
//! strings, Go `Duration.String()`, and Go's float encoding (no `.0` on whole numbers).

use std::time::Duration;

use serde::Serializer;

pub use rnats_time::rfc3339;

/// nats-server's uptime/idle form: `5s`, `3m2s`, `1h0m7s`, `2d3h0m0s`, `1y3d2h5m9s`.
pub fn uptime(d: Duration) -> String {
    let secs = d.as_secs();
    let (mins, hrs, days) = (secs / 60, secs / 3600, secs / 86_400);
    let yrs = days / 365;
    if yrs > 0 {
        format!(
            "{yrs}y{}d{}h{}m{}s",
            days % 365,
            hrs % 24,
            mins % 60,
            secs % 60
        )
    } else if days > 0 {
        format!("{days}d{}h{}m{}s", hrs % 24, mins % 60, secs % 60)
    } else if hrs > 0 {
        format!("{hrs}h{}m{}s", mins % 60, secs % 60)
    } else if mins > 0 {
        format!("{mins}m{}s", secs % 60)
    } else {
        format!("{secs}s")
    }
}

/// Go's `time.Duration.String()`: `0s`, `850ns`, `512µs`, `1.234567ms`, `2.5s`, `1m30s`.
pub fn go_duration(d: Duration) -> String {
    let ns = d.as_nanos();
    if ns == 0 {
        return "0s".into();
    }
    fn frac(v: u128, unit: u128) -> String {
        let whole = v / unit;
        let rest = v % unit;
        if rest == 0 {
            return whole.to_string();
        }
        let digits = unit.ilog10() as usize;
        let s = format!("{rest:0digits$}");
        format!("{whole}.{}", s.trim_end_matches('0'))
    }
    if ns < 1_000 {
        return format!("{ns}ns");
    }
    if ns < 1_000_000 {
        return format!("{}µs", frac(ns, 1_000));
    }
    if ns < 1_000_000_000 {
        return format!("{}ms", frac(ns, 1_000_000));
    }
    let secs = ns / 1_000_000_000;
    let sub = ns % 1_000_000_000;
    let (h, m, s) = (secs / 3600, secs / 60 % 60, secs % 60);
    let s = frac(s * 1_000_000_000 + sub, 1_000_000_000);
    if h > 0 {
        format!("{h}h{m}m{s}s")
    } else if m > 0 {
        format!("{m}m{s}s")
    } else {
        format!("{s}s")
    }
}

/// Serializes an `f64` as Go's `encoding/json` does: whole numbers without a fraction.
pub fn go_float<S: Serializer>(v: &f64, s: S) -> Result<S::Ok, S::Error> {
    if v.is_finite() && v.fract() == 0.0 && v.abs() < 1e15 {
        s.serialize_i64(*v as i64)
    } else if v.is_finite() {
        s.serialize_f64(*v)
    } else {
        s.serialize_i64(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uptimes() {
        assert_eq!(uptime(Duration::from_millis(5_900)), "5s");
        assert_eq!(uptime(Duration::from_secs(182)), "3m2s");
        assert_eq!(uptime(Duration::from_secs(3607)), "1h0m7s");
        assert_eq!(
            uptime(Duration::from_secs(2 * 86_400 + 3 * 3600)),
            "2d3h0m0s"
        );
        assert_eq!(
            uptime(Duration::from_secs(368 * 86_400 + 2 * 3600 + 309)),
            "1y3d2h5m9s"
        );
    }

    #[test]
    fn go_durations() {
        assert_eq!(go_duration(Duration::ZERO), "0s");
        assert_eq!(go_duration(Duration::from_nanos(850)), "850ns");
        assert_eq!(go_duration(Duration::from_micros(512)), "512µs");
        assert_eq!(go_duration(Duration::from_nanos(1_234_567)), "1.234567ms");
        assert_eq!(go_duration(Duration::from_millis(2500)), "2.5s");
        assert_eq!(go_duration(Duration::from_secs(90)), "1m30s");
        assert_eq!(go_duration(Duration::from_secs(3600)), "1h0m0s");
    }
}
