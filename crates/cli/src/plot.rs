//! `rnats bench --plot FILE.svg`: an SVG chart of a run, drawn with plotters (SVG backend
//! only). Panels, top to bottom:
//!
//! 1. request/reply: latency by percentile, HDR style (the x axis in "nines": 0%, 90%, 99%,
//!    99.9%… equally spaced), from the run's histogram;
//! 2. throughput per client (msgs/s), one bar each;
//! 3. throughput over time (msgs/s sent and received per 100 ms sample), when the run was long
//!    enough to have samples.

use std::path::Path;

use hdrhistogram::Histogram;
use plotters::prelude::*;

/// What to draw.
pub struct PlotData<'a> {
    pub title: String,
    /// Round-trip times in nanoseconds.
    pub latency: Option<&'a Histogram<u64>>,
    /// (client, msgs/s)
    pub clients: Vec<(String, f64)>,
    /// (seconds, sent msgs/s, received msgs/s)
    pub timeline: Vec<(f64, f64, f64)>,
}

/// Rates between successive counter samples `(seconds, sent, received)`.
pub fn rates(samples: &[(f64, u64, u64)]) -> Vec<(f64, f64, f64)> {
    samples
        .windows(2)
        .filter_map(|w| {
            let (t0, p0, r0) = w[0];
            let (t1, p1, r1) = w[1];
            let dt = t1 - t0;
            (dt > 0.0).then(|| {
                (
                    t1,
                    p1.saturating_sub(p0) as f64 / dt,
                    r1.saturating_sub(r0) as f64 / dt,
                )
            })
        })
        .collect()
}

/// `x` nines → the percentile it stands for: 0 → 0%, 1 → 90%, 2 → 99%, 2.5 → 99.68%.
fn percentile_label(x: f64) -> String {
    let p = 100.0 * (1.0 - 10f64.powf(-x));
    let s = if x <= 2.0 {
        format!("{p:.0}")
    } else {
        format!("{p:.*}", (x.ceil() as usize).saturating_sub(2).min(6))
    };
    format!("{s}%")
}

/// The percentile curve: (nines, latency µs) from 0 to as many nines as the data supports.
fn percentile_curve(h: &Histogram<u64>) -> (Vec<(f64, f64)>, f64) {
    let max_nines = (h.len() as f64).log10().clamp(1.0, 6.0);
    let steps = (max_nines * 50.0) as usize;
    let mut pts: Vec<(f64, f64)> = (0..=steps)
        .map(|i| {
            let x = max_nines * i as f64 / steps as f64;
            let q = 1.0 - 10f64.powf(-x);
            (x, h.value_at_quantile(q) as f64 / 1000.0)
        })
        .collect();
    pts.push((max_nines, h.max() as f64 / 1000.0));
    (pts, max_nines)
}

fn err<E: std::fmt::Display>(e: E) -> String {
    e.to_string()
}

fn nice_max(v: f64) -> f64 {
    if v.is_finite() && v > 0.0 {
        v * 1.1
    } else {
        1.0
    }
}

pub fn write_svg(path: &Path, d: &PlotData<'_>) -> Result<(), String> {
    let panels = usize::from(d.latency.is_some()) + 1 + usize::from(d.timeline.len() >= 2);
    let height = 60 + 360 * panels as u32;
    let root = SVGBackend::new(path, (1000, height)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let (head, body) = root.split_vertically(60);
    head.draw(&Text::new(
        d.title.clone(),
        (20, 20),
        ("sans-serif", 22).into_font(),
    ))
    .map_err(err)?;
    let areas = body.split_evenly((panels, 1));
    let mut area = areas.iter();

    if let Some(h) = d.latency {
        let (pts, max_nines) = percentile_curve(h);
        let top = nice_max(pts.iter().map(|p| p.1).fold(0.0, f64::max));
        let mut chart = ChartBuilder::on(area.next().expect("a panel"))
            .caption(
                format!("Request/reply latency by percentile ({} requests)", h.len()),
                ("sans-serif", 18),
            )
            .margin(15)
            .x_label_area_size(40)
            .y_label_area_size(80)
            .build_cartesian_2d(0f64..max_nines, 0f64..top)
            .map_err(err)?;
        chart
            .configure_mesh()
            .x_desc("percentile")
            .y_desc("latency (µs)")
            .x_labels(max_nines.floor() as usize + 1)
            .light_line_style(WHITE)
            .x_label_formatter(&|x| percentile_label(*x))
            .y_label_formatter(&|y| format!("{y:.0}"))
            .draw()
            .map_err(err)?;
        chart
            .draw_series(LineSeries::new(pts, BLUE.stroke_width(2)))
            .map_err(err)?;
    }

    {
        let n = d.clients.len().max(1) as i32;
        let top = nice_max(d.clients.iter().map(|c| c.1).fold(0.0, f64::max));
        let mut chart = ChartBuilder::on(area.next().expect("a panel"))
            .caption("Throughput per client (msgs/s)", ("sans-serif", 18))
            .margin(15)
            .x_label_area_size(40)
            .y_label_area_size(80)
            .build_cartesian_2d((0..n - 1).into_segmented(), 0f64..top)
            .map_err(err)?;
        let labels: Vec<String> = d.clients.iter().map(|c| c.0.clone()).collect();
        chart
            .configure_mesh()
            .disable_x_mesh()
            .light_line_style(WHITE)
            .x_desc("client")
            .y_desc("msgs/s")
            .x_labels(labels.len().max(1))
            .x_label_formatter(&|v| match v {
                SegmentValue::CenterOf(i) | SegmentValue::Exact(i) => {
                    labels.get(*i as usize).cloned().unwrap_or_default()
                }
                SegmentValue::Last => String::new(),
            })
            .y_label_formatter(&|y| format!("{y:.0}"))
            .draw()
            .map_err(err)?;
        chart
            .draw_series(d.clients.iter().enumerate().map(|(i, (name, rate))| {
                let color = if name.starts_with("pub") || name.starts_with("req") {
                    BLUE
                } else {
                    GREEN
                };
                let mut bar = Rectangle::new(
                    [
                        (SegmentValue::Exact(i as i32), 0.0),
                        (SegmentValue::Exact(i as i32 + 1), *rate),
                    ],
                    color.mix(0.7).filled(),
                );
                bar.set_margin(0, 0, 8, 8);
                bar
            }))
            .map_err(err)?;
    }

    if d.timeline.len() >= 2 {
        let t_max = d.timeline.iter().map(|p| p.0).fold(0.0, f64::max);
        let top = nice_max(d.timeline.iter().map(|p| p.1.max(p.2)).fold(0.0, f64::max));
        let mut chart = ChartBuilder::on(area.next().expect("a panel"))
            .caption("Throughput over time (msgs/s)", ("sans-serif", 18))
            .margin(15)
            .x_label_area_size(40)
            .y_label_area_size(80)
            .build_cartesian_2d(0f64..t_max.max(0.1), 0f64..top)
            .map_err(err)?;
        chart
            .configure_mesh()
            .x_desc("seconds")
            .y_desc("msgs/s")
            .light_line_style(WHITE)
            .y_label_formatter(&|y| format!("{y:.0}"))
            .draw()
            .map_err(err)?;
        chart
            .draw_series(LineSeries::new(
                d.timeline.iter().map(|p| (p.0, p.1)),
                BLUE.stroke_width(2),
            ))
            .map_err(err)?
            .label("sent")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLUE));
        if d.timeline.iter().any(|p| p.2 > 0.0) {
            chart
                .draw_series(LineSeries::new(
                    d.timeline.iter().map(|p| (p.0, p.2)),
                    GREEN.stroke_width(2),
                ))
                .map_err(err)?
                .label("received")
                .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], GREEN));
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()
            .map_err(err)?;
    }
    root.present().map_err(err)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentile_labels() {
        assert_eq!(percentile_label(0.0), "0%");
        assert_eq!(percentile_label(1.0), "90%");
        assert_eq!(percentile_label(2.0), "99%");
        assert_eq!(percentile_label(3.0), "99.9%");
        assert_eq!(percentile_label(4.0), "99.99%");
    }

    #[test]
    fn rates_between_samples() {
        let r = rates(&[(0.0, 0, 0), (0.5, 100, 50), (1.0, 300, 50)]);
        assert_eq!(r, [(0.5, 200.0, 100.0), (1.0, 400.0, 0.0)]);
    }

    #[test]
    fn writes_an_svg() {
        let mut h = Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3).unwrap();
        for i in 1..=1000u64 {
            h.record(20_000 + i * 50).unwrap();
        }
        let dir = std::env::temp_dir().join(format!("rnats-plot-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("chart.svg");
        write_svg(
            &path,
            &PlotData {
                title: "test <&> chart".into(),
                latency: Some(&h),
                clients: vec![("req 1".into(), 1000.0), ("rep 1".into(), 990.0)],
                timeline: vec![(0.1, 100.0, 90.0), (0.2, 120.0, 110.0)],
            },
        )
        .unwrap();
        let svg = std::fs::read_to_string(&path).unwrap();
        assert!(svg.trim_start().starts_with("<svg"), "{}", &svg[..100]);
        assert!(svg.trim_end().ends_with("</svg>"));
        assert!(svg.contains("Throughput per client"));
        assert!(svg.contains("req 1"));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
