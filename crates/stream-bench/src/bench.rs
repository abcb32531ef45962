//! `rnats-stream-bench bench`: one measured run against one server.

use std::time::Duration;

use bytes::Bytes;
use serde_json::{Value, json};

use crate::js::{self, JsAck, JsWire};
use crate::publish::{self, Limit, Plan};
use crate::replay::{ReplayOutcome, stan_replay};
use crate::stan::{Stan, StanWire};
use crate::{BenchArgs, Proto, Scenario, nats};

/// Runs the scenario; returns the JSON result and whether everything went through.
pub async fn run(a: &BenchArgs) -> anyhow::Result<(Value, bool)> {
    let nc = nats::connect(&a.server, "rnats-stream-bench", true).await?;
    let wait = Duration::from_secs(a.timeout);
    let payload = Bytes::from(vec![b'x'; a.size]);
    let limit = match a.duration {
        Some(s) => Limit::For(Duration::from_secs_f64(s)),
        None => Limit::Msgs(a.msgs),
    };
    let plan = Plan {
        window: a.window,
        limit,
        progress_timeout: wait,
    };
    let mut v = json!({
        "label": a.label,
        "proto": match a.proto { Proto::Stan => "stan", Proto::Js => "js" },
        "scenario": match a.scenario { Scenario::Pub => "pub", Scenario::Replay => "replay" },
        "size": a.size,
    });
    let ok;
    match (a.proto, a.scenario) {
        (Proto::Stan, Scenario::Pub) => {
            let stan = Stan::connect(nc.clone(), &a.cluster, &client_id(), wait).await?;
            let p = payload.clone();
            let (mut w, mut acks) =
                StanWire::new(&stan, &a.channel, Box::new(move |_| p.clone())).await?;
            let o = publish::run(&mut w, &mut acks, plan, None, Duration::ZERO, |_, _| {}).await;
            drop(w);
            ok = pub_json(&mut v, &o, a);
            let _ = stan.close(wait).await;
        }
        (Proto::Js, Scenario::Pub) => {
            js::create_stream(&nc, &a.stream, &a.subject, a.js_replicas, wait).await?;
            if let Some(l) = &a.js_leader {
                js::place_leader(&nc, &a.stream, l, wait).await?;
            }
            let p = payload.clone();
            let (mut w, mut acks) =
                JsWire::new(&nc, &a.subject, Box::new(move |_| p.clone())).await?;
            let o = publish::run(&mut w, &mut acks, plan, None, Duration::ZERO, |_, _| {}).await;
            ok = pub_json(&mut v, &o, a);
        }
        (Proto::Stan, Scenario::Replay) => {
            let stan = Stan::connect(nc.clone(), &a.cluster, &client_id(), wait).await?;
            let o = stan_replay(&stan, &a.channel, a.msgs, a.inflight as i32, wait).await?;
            ok = replay_json(&mut v, &o, a);
            let _ = stan.close(wait).await;
        }
        (Proto::Js, Scenario::Replay) => {
            if let Some(l) = &a.js_leader {
                js::place_leader(&nc, &a.stream, l, wait).await?;
            }
            let o = js::replay(&nc, &a.stream, a.msgs, a.inflight, a.js_ack, wait).await?;
            ok = replay_json(&mut v, &o, a);
            v["js_ack"] = json!(match a.js_ack {
                JsAck::None => "none",
                JsAck::Explicit => "explicit",
            });
        }
    }
    nc.close().await;
    Ok((v, ok))
}

fn client_id() -> String {
    format!("stream-bench-{}", nuid::next())
}

fn pub_json(v: &mut Value, o: &publish::Outcome, a: &BenchArgs) -> bool {
    let secs = o.elapsed.as_secs_f64();
    let q = |p: f64| o.latency.value_at_quantile(p);
    v["window"] = json!(a.window);
    v["sent"] = json!(o.sent);
    v["acked"] = json!(o.acked);
    v["errors"] = json!(o.errors);
    v["error_samples"] = json!(o.error_samples);
    v["unexpected_acks"] = json!(o.unexpected_acks);
    v["unacked"] = json!(o.unacked);
    v["elapsed_s"] = json!(secs);
    v["msgs_per_sec"] = json!(o.rate());
    v["bytes_per_sec"] = json!(if secs > 0.0 {
        o.acked_bytes as f64 / secs
    } else {
        0.0
    });
    v["latency_us"] = json!({
        "p50": q(0.5), "p90": q(0.9), "p99": q(0.99), "max": o.latency.max(),
    });
    v["aborted"] = json!(o.aborted);
    o.errors == 0 && o.unacked == 0 && o.aborted.is_none() && o.acked == o.sent
}

fn replay_json(v: &mut Value, o: &ReplayOutcome, a: &BenchArgs) -> bool {
    let secs = o.elapsed.as_secs_f64();
    v["inflight"] = json!(a.inflight);
    v["expected"] = json!(a.msgs);
    v["received"] = json!(o.received);
    v["last_seq"] = json!(o.last_seq);
    v["gaps"] = json!(o.gaps);
    v["duplicates"] = json!(o.duplicates);
    v["undecodable"] = json!(o.undecodable);
    v["elapsed_s"] = json!(secs);
    v["msgs_per_sec"] = json!(o.rate());
    v["bytes_per_sec"] = json!(if secs > 0.0 {
        o.bytes as f64 / secs
    } else {
        0.0
    });
    v["aborted"] = json!(o.aborted);
    o.aborted.is_none() && o.gaps == 0 && o.received == a.msgs && o.last_seq == a.msgs
}

/// The one-line human summary.
pub fn human(v: &Value) -> String {
    let f = |k: &str| v.get(k).cloned().unwrap_or(Value::Null);
    let rate = f("msgs_per_sec").as_f64().unwrap_or(0.0);
    let mbps = f("bytes_per_sec").as_f64().unwrap_or(0.0) / 1e6;
    let head = format!(
        "{} {} {} size={}",
        f("label").as_str().unwrap_or(""),
        f("proto").as_str().unwrap_or(""),
        f("scenario").as_str().unwrap_or(""),
        f("size")
    );
    let mut s = if f("scenario") == "pub" {
        let lat = f("latency_us");
        format!(
            "{head} window={}: {:.0} msgs/s ({mbps:.1} MB/s), acked {}/{} in {:.2}s, errors {}, ack latency p50 {} µs p99 {} µs",
            f("window"),
            rate,
            f("acked"),
            f("sent"),
            f("elapsed_s").as_f64().unwrap_or(0.0),
            f("errors"),
            lat["p50"],
            lat["p99"],
        )
    } else {
        format!(
            "{head} inflight={}: {:.0} msgs/s ({mbps:.1} MB/s), received {}/{} (last seq {}) in {:.2}s, gaps {}, duplicates {}",
            f("inflight"),
            rate,
            f("received"),
            f("expected"),
            f("last_seq"),
            f("elapsed_s").as_f64().unwrap_or(0.0),
            f("gaps"),
            f("duplicates"),
        )
    };
    if let Some(a) = f("aborted").as_str() {
        s.push_str(&format!(" — ABORTED: {a}"));
    }
    s
}
