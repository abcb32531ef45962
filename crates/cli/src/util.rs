//! Parsing and formatting helpers of the CLI: Go-style durations, `key:value` headers,
//! `{{Count}}` body templates, byte sizes, nkey seed files, numbers with thousands separators.
//! Pure functions (but for reading the seed file), unit-tested.

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A Go-style duration: `500ms`, `1.5s`, `2m`, `1h30m`, `100us`; a bare number is seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    if s.is_empty() {
        return Err("empty duration".into());
    }
    if let Ok(secs) = s.parse::<f64>() {
        return secs_to_duration(secs, s);
    }
    let mut total = 0f64;
    let mut rest = s;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(|| format!("duration {s:?} needs a unit (ns, us, ms, s, m, h)"))?;
        if num_len == 0 {
            return Err(format!(
                "invalid duration {s:?}: expected a number, e.g. 500ms or 2s"
            ));
        }
        let n: f64 = rest[..num_len]
            .parse()
            .map_err(|_| format!("invalid number in duration {s:?}"))?;
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale = match &rest[..unit_len] {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            u => {
                return Err(format!(
                    "unknown unit {u:?} in duration {s:?}: use ns, us, ms, s, m or h"
                ));
            }
        };
        total += n * scale;
        rest = &rest[unit_len..];
    }
    secs_to_duration(total, s)
}

fn secs_to_duration(secs: f64, s: &str) -> Result<Duration, String> {
    Duration::try_from_secs_f64(secs).map_err(|_| format!("invalid duration {s:?}"))
}

/// A byte size: `128`, `1KB`/`1K`/`1KiB` (1024), `2MB`/`2M`/`2MiB`, `16B`.
pub fn parse_size(s: &str) -> Result<usize, String> {
    let t = s.trim();
    let digits = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(digits);
    let n: usize = num
        .parse()
        .map_err(|_| format!("invalid size {s:?}: use a number of bytes, e.g. 128 or 1KB"))?;
    let scale = match unit.trim().to_ascii_uppercase().as_str() {
        "" | "B" => 1,
        "K" | "KB" | "KIB" => 1024,
        "M" | "MB" | "MIB" => 1024 * 1024,
        u => return Err(format!("unknown size unit {u:?} in {s:?}: use B, KB or MB")),
    };
    n.checked_mul(scale)
        .ok_or_else(|| format!("size {s:?} is too large"))
}

/// The user seed (`SU…`) in a seed file: a bare seed, or the decorated form `nsc` writes.
pub fn read_nkey_seed(path: &Path) -> Result<String, String> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        format!(
            "cannot read the nkey seed file {}: {e}: give a file holding a user seed (SU...)",
            path.display()
        )
    })?;
    text.lines()
        .map(str::trim)
        .find(|l| l.starts_with("SU"))
        .map(str::to_string)
        .ok_or_else(|| {
            format!(
                "{} holds no user nkey seed: give a file with a line starting with SU",
                path.display()
            )
        })
}

/// `1234567` → `1,234,567`.
pub fn thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::with_capacity(s.len() + s.len() / 3);
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A rate or count with thousands separators, rounded.
pub fn thousands_f(v: f64) -> String {
    if v.is_finite() && v >= 0.0 {
        thousands(v.round() as u64)
    } else {
        "-".into()
    }
}

/// Bytes per second (or bytes) in binary units: `1.50 MiB`.
pub fn human_bytes(v: f64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = v.max(0.0);
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    format!("{v:.2} {}", UNITS[u])
}

/// A duration in seconds, in the unit that fits: `850µs`, `12.3ms`, `1.25s`.
pub fn human_secs(s: f64) -> String {
    if s < 1e-3 {
        format!("{:.0}µs", s * 1e6)
    } else if s < 1.0 {
        format!("{:.1}ms", s * 1e3)
    } else {
        format!("{s:.2}s")
    }
}

/// `Key:Value` (natscli's `-H` form) into a name and a value, both trimmed.
pub fn parse_header(s: &str) -> Result<(String, String), String> {
    match s.split_once(':') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_string(), v.trim().to_string())),
        _ => Err(format!("invalid header {s:?}: use -H Key:Value")),
    }
}

/// What a template may refer to.
#[derive(Debug, Clone, Default)]
pub struct TemplateContext<'a> {
    /// 1-based message number.
    pub count: u64,
    /// For `reply`: the request body.
    pub request: Option<&'a [u8]>,
}

/// Expands `{{Count}}`, `{{Time}}`, `{{TimeStamp}}`, `{{Unix}}`, `{{UnixNano}}`, `{{ID}}`,
/// natscli's `{{Random MIN MAX}}` (random letters and digits, MIN to MAX of them) and (in
/// replies) `{{Request}}`; `{{ .Count }}` spellings work too. Text without `{{` is returned as
/// is.
pub fn render(template: &str, ctx: &TemplateContext<'_>) -> Result<Vec<u8>, String> {
    if !template.contains("{{") {
        return Ok(template.as_bytes().to_vec());
    }
    let mut out = Vec::with_capacity(template.len());
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        out.extend_from_slice(&rest.as_bytes()[..start]);
        let after = &rest[start + 2..];
        let end = after
            .find("}}")
            .ok_or_else(|| format!("unclosed {{{{ in template {template:?}"))?;
        let name = after[..end].trim().trim_start_matches('.');
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        match name {
            "Count" => out.extend_from_slice(ctx.count.to_string().as_bytes()),
            "Unix" => out.extend_from_slice(now.as_secs().to_string().as_bytes()),
            "UnixNano" => out.extend_from_slice(now.as_nanos().to_string().as_bytes()),
            "TimeStamp" => out.extend_from_slice(rfc3339(now).as_bytes()),
            "Time" => out.extend_from_slice(&rfc3339(now).as_bytes()[11..19]),
            "ID" => out.extend_from_slice(random_id().as_bytes()),
            random if random.split_whitespace().next() == Some("Random") => {
                out.extend_from_slice(random_text(random)?.as_bytes())
            }
            "Request" => match ctx.request {
                Some(r) => out.extend_from_slice(r),
                None => return Err("{{Request}} only works in `rnats reply` bodies".into()),
            },
            other => {
                return Err(format!(
                    "unknown template field {other:?}: use Count, Time, TimeStamp, Unix, UnixNano, ID, Random MIN MAX or Request"
                ));
            }
        }
        rest = &after[end + 2..];
    }
    out.extend_from_slice(rest.as_bytes());
    Ok(out)
}

/// `Random MIN MAX`: between MIN and MAX random letters and digits (natscli's template).
fn random_text(call: &str) -> Result<String, String> {
    use rand::Rng;
    let usage = || {
        format!("invalid {{{{{call}}}}}: use {{{{Random MIN MAX}}}}, e.g. {{{{Random 10 100}}}}")
    };
    let args: Vec<&str> = call.split_whitespace().skip(1).collect();
    let [min, max] = args[..] else {
        return Err(usage());
    };
    let (min, max): (usize, usize) = match (min.parse(), max.parse()) {
        (Ok(a), Ok(b)) if a <= b && b <= 1 << 24 => (a, b),
        _ => return Err(usage()),
    };
    const CHARS: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    let mut rng = rand::rng();
    let n = rng.random_range(min..=max);
    Ok((0..n)
        .map(|_| CHARS[rng.random_range(0..CHARS.len())] as char)
        .collect())
}

pub fn random_id() -> String {
    // Process id and clock in hex: unique per message of one run, and across runs.
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    format!("{:x}{nanos:x}", std::process::id())
}

/// `2026-11-26T23:22:54Z` (UTC, whole seconds).
pub fn rfc3339(since_epoch: Duration) -> String {
    rnats_time::rfc3339(UNIX_EPOCH + Duration::from_secs(since_epoch.as_secs()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        let ms = Duration::from_millis;
        assert_eq!(parse_duration("500ms"), Ok(ms(500)));
        assert_eq!(parse_duration("1.5s"), Ok(ms(1500)));
        assert_eq!(parse_duration("2"), Ok(ms(2000)));
        assert_eq!(parse_duration("1m30s"), Ok(ms(90_000)));
        assert_eq!(parse_duration("1h"), Ok(ms(3_600_000)));
        assert_eq!(parse_duration("100us"), Ok(Duration::from_micros(100)));
        for bad in ["", "s", "5x", "-1s", "1..2s"] {
            assert!(parse_duration(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn headers() {
        assert_eq!(parse_header("X-A: 1"), Ok(("X-A".into(), "1".into())));
        assert_eq!(
            parse_header("url:nats://a:1"),
            Ok(("url".into(), "nats://a:1".into()))
        );
        assert!(parse_header("nocolon").is_err());
        assert!(parse_header(":v").is_err());
    }

    #[test]
    fn templates() {
        let ctx = TemplateContext {
            count: 7,
            request: None,
        };
        assert_eq!(render("plain", &ctx).unwrap(), b"plain");
        assert_eq!(
            render("msg {{Count}} / {{ .Count }}", &ctx).unwrap(),
            b"msg 7 / 7"
        );
        let unix: u64 = String::from_utf8(render("{{Unix}}", &ctx).unwrap())
            .unwrap()
            .parse()
            .unwrap();
        assert!(unix > 1_700_000_000);
        assert_eq!(render("{{TimeStamp}}", &ctx).unwrap().len(), 20);
        assert!(render("{{Nope}}", &ctx).unwrap_err().contains("Count"));
        for _ in 0..20 {
            let r = render("<{{ Random 3 5 }}>", &ctx).unwrap();
            assert!((5..=7).contains(&r.len()), "{r:?}");
            assert!(r[1..r.len() - 1].iter().all(u8::is_ascii_alphanumeric));
        }
        assert_eq!(render("{{Random 4 4}}", &ctx).unwrap().len(), 4);
        assert!(
            render("{{Random 5 1}}", &ctx)
                .unwrap_err()
                .contains("Random MIN MAX")
        );
        assert!(render("{{Random}}", &ctx).is_err());
        assert!(render("{{Count", &ctx).is_err());
        assert!(render("{{Request}}", &ctx).is_err());
        let ctx = TemplateContext {
            count: 1,
            request: Some(b"req"),
        };
        assert_eq!(render("got {{Request}}", &ctx).unwrap(), b"got req");
    }

    #[test]
    fn sizes_and_numbers() {
        assert_eq!(parse_size("128"), Ok(128));
        assert_eq!(parse_size("16B"), Ok(16));
        assert_eq!(parse_size("1KB"), Ok(1024));
        assert_eq!(parse_size("2k"), Ok(2048));
        assert_eq!(parse_size("1MiB"), Ok(1 << 20));
        assert!(parse_size("1GB").is_err());
        assert!(parse_size("x").is_err());
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(1234567), "1,234,567");
        assert_eq!(human_bytes(512.0), "512.00 B");
        assert_eq!(human_bytes(1536.0 * 1024.0), "1.50 MiB");
        assert_eq!(human_secs(0.0005), "500µs");
        assert_eq!(human_secs(0.0123), "12.3ms");
        assert_eq!(human_secs(2.5), "2.50s");
    }

    #[test]
    fn nkey_seed_files() {
        let dir = std::env::temp_dir().join(format!("rnats-cli-seed-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let bare = dir.join("bare.nk");
        std::fs::write(&bare, "SUAAA\n").unwrap();
        assert_eq!(read_nkey_seed(&bare), Ok("SUAAA".into()));
        let decorated = dir.join("deco.nk");
        std::fs::write(
            &decorated,
            "-----BEGIN USER NKEY SEED-----\nSUBBB\n------END USER NKEY SEED------\n",
        )
        .unwrap();
        assert_eq!(read_nkey_seed(&decorated), Ok("SUBBB".into()));
        let none = dir.join("none.nk");
        std::fs::write(&none, "nothing here").unwrap();
        assert!(read_nkey_seed(&none).unwrap_err().contains("SU"));
        assert!(
            read_nkey_seed(&dir.join("missing"))
                .unwrap_err()
                .contains("cannot read")
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn dates() {
        assert_eq!(rfc3339(Duration::ZERO), "1970-01-01T00:00:00Z");
        assert_eq!(
            rfc3339(Duration::from_secs(951_782_400)),
            "2000-02-29T00:00:00Z"
        );
        assert_eq!(
            rfc3339(Duration::from_secs(1_798_413_774)),
            "2026-12-27T23:22:54Z"
        );
    }
}
