//! Line charts over time as inline SVG: the report must open from a file
//! with no script and no fetch, so the charts are drawn here, with axes,
//! units and dates, in a viewBox that scales from a phone to a desktop.
//! A line breaks where backups stopped for a while, so a gap shows as one.

use chrono::{DateTime, Duration, TimeZone, Utc};
use std::fmt::Write;

const W: f64 = 480.0;
const H: f64 = 230.0;
const LEFT: f64 = 66.0;
const RIGHT: f64 = 14.0;
const TOP: f64 = 30.0;
const BOTTOM: f64 = 30.0;
/// Points are drawn as dots too when there are this few.
const DOTS_UP_TO: usize = 90;

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Unit {
    Bytes,
    Seconds,
    BytesPerSecond,
    Count,
}

pub struct Series {
    pub name: String,
    pub points: Vec<(DateTime<Utc>, f64)>,
}

pub struct Chart<'a> {
    pub title: &'a str,
    pub unit: Unit,
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    pub series: Vec<Series>,
}

/// The chart as an `<svg>` element (series colours come from the page's
/// `.s0`, `.s1`… classes).
pub fn svg(chart: &Chart) -> String {
    let max = chart
        .series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.1))
        .fold(0.0_f64, f64::max);
    let (scale, unit_label) = scale_for(chart.unit, max);
    let step = nice_step(max / scale / 4.0, chart.unit == Unit::Count);
    let top = (((max / scale) / step).ceil() * step).max(step);
    let (from, to) = (chart.from, chart.to.max(chart.from + Duration::hours(1)));
    let span = (to - from).num_seconds() as f64;
    let x = |t: DateTime<Utc>| LEFT + (t - from).num_seconds() as f64 / span * (W - LEFT - RIGHT);
    let y = |v: f64| TOP + (1.0 - v / scale / top) * (H - TOP - BOTTOM);
    let mut out = String::new();
    let _ = write!(
        out,
        r#"<svg class="chart" viewBox="0 0 {W} {H}" role="img" aria-label="{title}"><title>{title}</title>"#,
        title = super::page::esc(chart.title)
    );
    let _ = write!(
        out,
        r#"<text class="ct" x="{LEFT}" y="16">{} ({unit_label})</text>"#,
        super::page::esc(chart.title)
    );
    // Horizontal grid and value labels.
    let mut v = 0.0;
    while v <= top + step / 2.0 {
        let py = y(v * scale);
        let _ = write!(
            out,
            r#"<line class="grid" x1="{LEFT}" x2="{:.1}" y1="{py:.1}" y2="{py:.1}"/><text class="yl" x="{:.1}" y="{:.1}">{}</text>"#,
            W - RIGHT,
            LEFT - 6.0,
            py + 4.0,
            number(v, step)
        );
        v += step;
    }
    // Date ticks.
    for t in date_ticks(from, to) {
        let px = x(t);
        let _ = write!(
            out,
            r#"<line class="tick" x1="{px:.1}" x2="{px:.1}" y1="{:.1}" y2="{:.1}"/><text class="xl" x="{px:.1}" y="{:.1}">{}</text>"#,
            H - BOTTOM,
            H - BOTTOM + 4.0,
            H - BOTTOM + 17.0,
            date_label(t, to - from)
        );
    }
    let _ = write!(
        out,
        r#"<line class="axis" x1="{LEFT}" x2="{LEFT}" y1="{TOP}" y2="{:.1}"/><line class="axis" x1="{LEFT}" x2="{:.1}" y1="{:.1}" y2="{:.1}"/>"#,
        H - BOTTOM,
        W - RIGHT,
        H - BOTTOM,
        H - BOTTOM
    );
    for (i, s) in chart.series.iter().enumerate() {
        let mut points = s.points.clone();
        points.sort_by_key(|p| p.0);
        let breaks = break_after(&points);
        let mut d = String::new();
        for (j, (t, v)) in points.iter().enumerate() {
            let cmd = if j == 0 || breaks.contains(&(j - 1)) {
                'M'
            } else {
                'L'
            };
            let _ = write!(d, "{cmd}{:.1} {:.1}", x(*t), y(*v));
        }
        if points.len() > 1 {
            let _ = write!(out, r#"<path class="line s{i}" d="{d}"/>"#);
        }
        if points.len() <= DOTS_UP_TO {
            for (t, v) in &points {
                let _ = write!(
                    out,
                    r#"<circle class="dot s{i}" cx="{:.1}" cy="{:.1}" r="2.5"/>"#,
                    x(*t),
                    y(*v)
                );
            }
        }
    }
    out.push_str("</svg>");
    out
}

/// Where a line breaks: after point j when the next one is much later
/// than backups usually follow each other (more than twice the median
/// spacing, and more than an hour).
fn break_after(points: &[(DateTime<Utc>, f64)]) -> Vec<usize> {
    let mut gaps: Vec<i64> = points
        .windows(2)
        .map(|w| (w[1].0 - w[0].0).num_seconds())
        .collect();
    if gaps.len() < 3 {
        return Vec::new();
    }
    let all = gaps.clone();
    gaps.sort_unstable();
    let limit = (gaps[gaps.len() / 2] * 2).max(3600);
    all.iter()
        .enumerate()
        .filter(|(_, g)| **g > limit)
        .map(|(j, _)| j)
        .collect()
}

/// The divisor that puts `max` in a readable unit, and the unit's name.
fn scale_for(unit: Unit, max: f64) -> (f64, &'static str) {
    const BYTES: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    const RATES: [&str; 5] = ["B/s", "KiB/s", "MiB/s", "GiB/s", "TiB/s"];
    match unit {
        Unit::Bytes | Unit::BytesPerSecond => {
            let names = if unit == Unit::Bytes { BYTES } else { RATES };
            let mut i = 0;
            while i + 1 < names.len() && max >= 1024f64.powi(i as i32 + 1) {
                i += 1;
            }
            (1024f64.powi(i as i32), names[i])
        }
        Unit::Seconds if max >= 2.0 * 3600.0 => (3600.0, "hours"),
        Unit::Seconds if max >= 120.0 => (60.0, "minutes"),
        Unit::Seconds => (1.0, "seconds"),
        Unit::Count => (1.0, "level"),
    }
}

/// A step of 1, 2 or 5 times a power of ten, at least `raw` (whole for
/// counts).
fn nice_step(raw: f64, whole: bool) -> f64 {
    if !raw.is_finite() || raw <= 0.0 {
        return 1.0;
    }
    let mag = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * mag)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * mag);
    if whole {
        step.ceil().max(1.0)
    } else {
        step
    }
}

fn number(v: f64, step: f64) -> String {
    let decimals = if step >= 1.0 {
        0
    } else {
        (-step.log10().floor()) as usize
    };
    format!("{v:.decimals$}")
}

/// Midnight-UTC ticks, at most six, a readable number of days apart.
fn date_ticks(from: DateTime<Utc>, to: DateTime<Utc>) -> Vec<DateTime<Utc>> {
    let span_days = (to - from).num_seconds() as f64 / 86400.0;
    let step = [1, 2, 7, 14, 30, 61, 91, 182, 365, 730]
        .into_iter()
        .find(|d| span_days / *d as f64 <= 5.0)
        .unwrap_or(1461);
    let first_day = (from.timestamp() + 86399).div_euclid(86400);
    let first = first_day + (step - first_day.rem_euclid(step)) % step;
    let mut out = Vec::new();
    let mut day = first;
    while let Some(t) = Utc.timestamp_opt(day * 86400, 0).single() {
        if t > to {
            break;
        }
        out.push(t);
        day += step;
    }
    out
}

fn date_label(t: DateTime<Utc>, span: Duration) -> String {
    if span > Duration::days(300) {
        t.format("%b %Y").to_string()
    } else {
        t.format("%b %-d").to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_are_one_two_or_five_times_a_power_of_ten() {
        assert_eq!(nice_step(0.3, false), 0.5);
        assert_eq!(nice_step(130.0, false), 200.0);
        assert_eq!(nice_step(0.25, true), 1.0);
        assert_eq!(nice_step(0.0, false), 1.0);
        assert_eq!(scale_for(Unit::Bytes, 3.0 * 1024.0 * 1024.0).1, "MiB");
        assert_eq!(scale_for(Unit::Seconds, 90.0).1, "seconds");
        assert_eq!(scale_for(Unit::Seconds, 4000.0), (60.0, "minutes"));
    }

    #[test]
    fn date_ticks_fall_on_midnights_inside_the_range() {
        let from = Utc.with_ymd_and_hms(2026, 1, 1, 7, 0, 0).unwrap();
        let to = from + Duration::days(90);
        let ticks = date_ticks(from, to);
        assert!((2..=6).contains(&ticks.len()), "{ticks:?}");
        assert!(ticks
            .iter()
            .all(|t| *t >= from && *t <= to && t.timestamp() % 86400 == 0));
    }

    #[test]
    fn a_line_breaks_where_backups_stopped() {
        let t0 = Utc.with_ymd_and_hms(2026, 1, 1, 2, 0, 0).unwrap();
        let days = [0, 1, 2, 3, 9, 10, 11];
        let points: Vec<_> = days
            .iter()
            .map(|d| (t0 + Duration::days(*d), 1.0))
            .collect();
        assert_eq!(break_after(&points), vec![3]);
        let chart = Chart {
            title: "Size",
            unit: Unit::Bytes,
            from: t0,
            to: t0 + Duration::days(12),
            series: vec![Series {
                name: "raw".into(),
                points,
            }],
        };
        let svg = svg(&chart);
        let d = svg
            .split(" d=\"")
            .nth(1)
            .unwrap()
            .split('"')
            .next()
            .unwrap();
        assert_eq!(d.matches('M').count(), 2, "two runs of line: {d}");
        assert_eq!(svg.matches("<circle").count(), 7);
        assert!(svg.contains("Size (B)"), "{svg}");
    }
}
