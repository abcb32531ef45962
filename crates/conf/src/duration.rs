//! Go duration strings (`time.ParseDuration`), used by duration options such as
//! `ping_interval: "2m"`.

use std::time::Duration;

/// Parses a Go duration string: an optional sign, then one or more decimal numbers (with
/// optional fraction) each followed by a unit `ns`, `us`, `µs`, `μs`, `ms`, `s`, `m` or `h`,
/// e.g. `"300ms"`, `"1.5h"`, `"2h45m"`. `"0"` alone needs no unit.
///
/// Returns `None` for malformed text, for negative durations (which `Duration` cannot hold;
/// `"-0s"` is zero) and for values over Go's limit of `i64::MAX` nanoseconds (~292 years).
pub fn parse_duration(s: &str) -> Option<Duration> {
    let (neg, mut rest) = match s.as_bytes().first()? {
        b'-' => (true, &s[1..]),
        b'+' => (false, &s[1..]),
        _ => (false, s),
    };
    if rest == "0" {
        return Some(Duration::ZERO);
    }
    if rest.is_empty() {
        return None;
    }
    let mut total: u128 = 0;
    while !rest.is_empty() {
        let int_len = rest.bytes().take_while(u8::is_ascii_digit).count();
        let (int_digits, after) = rest.split_at(int_len);
        let (frac_digits, after) = match after.strip_prefix('.') {
            Some(a) => {
                let n = a.bytes().take_while(u8::is_ascii_digit).count();
                a.split_at(n)
            }
            None => ("", after),
        };
        if int_digits.is_empty() && frac_digits.is_empty() {
            return None;
        }
        let unit_len = after
            .find(|c: char| c == '.' || c.is_ascii_digit())
            .unwrap_or(after.len());
        let (unit, after) = after.split_at(unit_len);
        let unit_nanos: u128 = match unit {
            "ns" => 1,
            "us" | "\u{b5}s" | "\u{3bc}s" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            _ => return None,
        };
        // Integer part: anything past 20 digits overflows the limit anyway.
        if int_digits.trim_start_matches('0').len() > 20 {
            return None;
        }
        let whole: u128 = if int_digits.is_empty() {
            0
        } else {
            int_digits.parse().ok()?
        };
        // Fraction: digits past 20 cannot change the nanoseconds.
        let frac_digits = &frac_digits[..frac_digits.len().min(20)];
        let frac: u128 = if frac_digits.is_empty() {
            0
        } else {
            frac_digits.parse().ok()?
        };
        let scale = 10u128.pow(frac_digits.len() as u32);
        total = total
            .checked_add(whole.checked_mul(unit_nanos)?)?
            .checked_add(frac * unit_nanos / scale)?;
        if total > i64::MAX as u128 {
            return None;
        }
        rest = after;
    }
    if neg && total != 0 {
        return None;
    }
    Some(Duration::from_nanos(u64::try_from(total).ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> Option<Duration> {
        parse_duration(s)
    }

    #[test]
    fn go_examples() {
        assert_eq!(d("2m"), Some(Duration::from_secs(120)));
        assert_eq!(d("10s"), Some(Duration::from_secs(10)));
        assert_eq!(d("1h30m"), Some(Duration::from_secs(5400)));
        assert_eq!(d("250ms"), Some(Duration::from_millis(250)));
        assert_eq!(d("1.5s"), Some(Duration::from_millis(1500)));
        assert_eq!(d("100us"), Some(Duration::from_micros(100)));
        assert_eq!(d("100µs"), Some(Duration::from_micros(100)));
        assert_eq!(d("100μs"), Some(Duration::from_micros(100)));
        assert_eq!(d("42ns"), Some(Duration::from_nanos(42)));
        assert_eq!(d("0"), Some(Duration::ZERO));
        assert_eq!(d("-0"), Some(Duration::ZERO));
        assert_eq!(d("0s"), Some(Duration::ZERO));
        assert_eq!(d("+5s"), Some(Duration::from_secs(5)));
        assert_eq!(d(".5s"), Some(Duration::from_millis(500)));
        assert_eq!(d("1.s"), Some(Duration::from_secs(1)));
        assert_eq!(d("2h45m30.5s"), Some(Duration::from_millis(9_930_500)));
        assert_eq!(d("1.000000001s"), Some(Duration::new(1, 1)));
        assert_eq!(
            d("0.1234567890123456789012345s"),
            Some(Duration::from_nanos(123_456_789))
        );
        assert_eq!(
            d("2562047h47m16.854775807s"),
            Some(Duration::from_nanos(i64::MAX as u64))
        );
    }

    #[test]
    fn rejects() {
        for bad in [
            "",
            "-",
            "+",
            "s",
            "10",
            "1x",
            "1.5",
            ".s",
            "1..5s",
            "-1s",
            "1s-",
            "1 s",
            " 1s",
            "2562047h47m16.854775808s",
            "99999999999999999999999h",
            "1S",
        ] {
            assert_eq!(d(bad), None, "{bad:?}");
        }
    }
}
