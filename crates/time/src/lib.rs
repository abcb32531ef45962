//! Civil (calendar) dates from Unix time, and the UTC timestamps the NATS tools print: the
//! server's log prefix, Go's `RFC3339Nano` in monitoring JSON, whole-second RFC 3339 in the
//! command line tool. No time zone database: everything is UTC.
//!
//! One copy of the calendar arithmetic for the server, the streaming server and the CLI.

use std::time::{SystemTime, UNIX_EPOCH};

/// A moment broken down into its UTC calendar date and time of day.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Civil {
    pub year: i64,
    /// 1 to 12.
    pub month: u32,
    /// 1 to 31.
    pub day: u32,
    pub hour: u32,
    pub minute: u32,
    pub second: u32,
    /// Below one second.
    pub nanos: u32,
}

impl Civil {
    /// `t` in UTC; a time before 1970 counts as the epoch itself.
    pub fn from_system_time(t: SystemTime) -> Civil {
        let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
        let secs = d.as_secs();
        let (year, month, day) = civil_from_days((secs / 86_400) as i64);
        let rem = (secs % 86_400) as u32;
        Civil {
            year,
            month,
            day,
            hour: rem / 3600,
            minute: rem / 60 % 60,
            second: rem % 60,
            nanos: d.subsec_nanos(),
        }
    }
}

/// Days since 1970-01-01 → (year, month, day) in the proleptic Gregorian calendar
/// (H. Hinnant's `civil_from_days`).
pub fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// `2024-05-01T10:00:00.123456789Z`: RFC 3339 in UTC with the fraction of a second trimmed of
/// trailing zeros and left out when zero, as Go's `time.RFC3339Nano`.
pub fn rfc3339(t: SystemTime) -> String {
    let c = Civil::from_system_time(t);
    let mut s = format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}",
        c.year, c.month, c.day, c.hour, c.minute, c.second
    );
    if c.nanos > 0 {
        let frac = format!("{:09}", c.nanos);
        s.push('.');
        s.push_str(frac.trim_end_matches('0'));
    }
    s.push('Z');
    s
}

/// `2025/11/26 00:03:50.123456`: nats-server's log timestamp (UTC, microseconds).
pub fn log_timestamp(t: SystemTime) -> String {
    let c = Civil::from_system_time(t);
    format!(
        "{:04}/{:02}/{:02} {:02}:{:02}:{:02}.{:06}",
        c.year,
        c.month,
        c.day,
        c.hour,
        c.minute,
        c.second,
        c.nanos / 1000
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn days_to_dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(20_418), (2025, 11, 26));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
        assert_eq!(civil_from_days(-1), (1969, 12, 31));
    }

    #[test]
    fn rfc3339_trims_the_fraction() {
        let t = UNIX_EPOCH + Duration::new(1_714_557_600, 123_456_789);
        assert_eq!(rfc3339(t), "2024-05-01T10:00:00.123456789Z");
        let t = UNIX_EPOCH + Duration::new(951_782_400, 500_000_000);
        assert_eq!(rfc3339(t), "2000-02-29T00:00:00.5Z");
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00Z");
        assert_eq!(
            rfc3339(UNIX_EPOCH + Duration::from_secs(1_795_735_374)),
            "2026-11-26T23:22:54Z"
        );
    }

    #[test]
    fn log_timestamps() {
        let t = UNIX_EPOCH + Duration::from_micros(1_764_115_430_123_456);
        assert_eq!(log_timestamp(t), "2025/11/26 00:03:50.123456");
    }
}
