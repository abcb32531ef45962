//! `rnats-bench`'s output: one human line per run, and one JSON object line (`--json`, read by
//! bench/compare.sh and bench/summarize.py).

use crate::engine::{Config, Report, Scenario};

/// Where the run went: the server, or the built-in sink.
pub struct Target<'a> {
    pub server: &'a str,
    pub sink: bool,
    pub label: Option<&'a str>,
}

/// `pubsub server=… pubs=1 subs=1 msgs=… size=…: N msgs/s (…)…; LOST …; ERROR …`
pub fn human_line(cfg: &Config, t: &Target<'_>, r: &Report) -> String {
    let server = if t.sink {
        format!("sink({})", t.server)
    } else {
        t.server.to_string()
    };
    let mut line = format!("{:<6} server={server}", cfg.scenario.name());
    match cfg.scenario {
        Scenario::Pub => line += &format!(" pubs={}", cfg.pubs),
        Scenario::Pubsub | Scenario::Queue => {
            line += &format!(" pubs={} subs={}", cfg.pubs, cfg.subs)
        }
        Scenario::Reqrep if cfg.pubs > 1 || cfg.subs > 1 => {
            line += &format!(" requesters={} responders={}", cfg.pubs, cfg.subs)
        }
        Scenario::Reqrep => {}
    }
    line += &format!(" msgs={} size={}: ", cfg.msgs, cfg.size);
    if cfg.scenario == Scenario::Reqrep {
        line += &format!("{:.0} req/s in {:.3}s", r.msgs_per_sec, r.elapsed);
        if let Some(l) = &r.latency {
            line += &format!(
                "; latency us p50={:.1} p90={:.1} p99={:.1} p99.9={:.1} max={:.1}",
                l.p50, l.p90, l.p99, l.p999, l.max
            );
        }
        line += &format!("; replies {}/{}", r.received, r.expected);
    } else {
        line += &format!(
            "{:.0} msgs/s ({:.1} MB/s) in {:.3}s",
            r.msgs_per_sec,
            r.msgs_per_sec * cfg.size as f64 / 1e6,
            r.elapsed
        );
        if cfg.scenario != Scenario::Pub {
            line += &format!(
                "; published {} ({:.0} msgs/s); received {}/{}",
                r.published,
                r.pub_msgs_per_sec.unwrap_or(0.0),
                r.received,
                r.expected
            );
            if cfg.subs > 1 {
                let per: Vec<String> = r.per_sub.iter().map(u64::to_string).collect();
                line += &format!(" [per sub: {}]", per.join(" "));
            }
        }
    }
    if r.lost() > 0 {
        line += &format!("; LOST {}", r.lost());
    }
    for e in &r.errors {
        line += &format!("; ERROR {e}");
    }
    line
}

/// A JSON string literal.
pub fn json_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A JSON number with 3 decimals, `null` when not finite.
pub fn json_f(v: f64) -> String {
    if v.is_finite() {
        format!("{v:.3}")
    } else {
        "null".into()
    }
}

/// The run as one JSON object (no newline).
pub fn json(cfg: &Config, t: &Target<'_>, r: &Report) -> String {
    let mut f: Vec<(&str, String)> = vec![
        ("scenario", json_str(cfg.scenario.name())),
        ("label", t.label.map_or("null".into(), json_str)),
        ("server", json_str(t.server)),
        ("sink", t.sink.to_string()),
        ("pubs", cfg.pubs.to_string()),
        ("subs", cfg.sub_count().to_string()),
        ("msgs", cfg.msgs.to_string()),
        ("size", cfg.size.to_string()),
        ("elapsed_s", json_f(r.elapsed)),
        ("msgs_per_sec", json_f(r.msgs_per_sec)),
        ("bytes_per_sec", json_f(r.msgs_per_sec * cfg.size as f64)),
        ("published", r.published.to_string()),
        (
            "pub_msgs_per_sec",
            r.pub_msgs_per_sec.map_or("null".into(), json_f),
        ),
        ("expected", r.expected.to_string()),
        ("received", r.received.to_string()),
        ("lost", r.lost().to_string()),
        (
            "per_sub",
            format!(
                "[{}]",
                r.per_sub
                    .iter()
                    .map(u64::to_string)
                    .collect::<Vec<_>>()
                    .join(",")
            ),
        ),
        ("timed_out", r.timed_out.to_string()),
    ];
    f.push((
        "latency_us",
        r.latency.as_ref().map_or("null".into(), |l| {
            format!(
                "{{\"count\":{},\"p50\":{},\"p90\":{},\"p99\":{},\"p99_9\":{},\"max\":{},\"mean\":{}}}",
                l.count,
                json_f(l.p50),
                json_f(l.p90),
                json_f(l.p99),
                json_f(l.p999),
                json_f(l.max),
                json_f(l.mean)
            )
        }),
    ));
    f.push((
        "errors",
        format!(
            "[{}]",
            r.errors
                .iter()
                .map(|e| json_str(e))
                .collect::<Vec<_>>()
                .join(",")
        ),
    ));
    let body: Vec<String> = f.into_iter().map(|(k, v)| format!("\"{k}\":{v}")).collect();
    format!("{{{}}}", body.join(","))
}
