//! The history as one self-contained HTML page: inline CSS and SVG, no
//! script, no font, no image fetched (a Content-Security-Policy forbids
//! every fetch, so a page opened from a mail attachment or a storage
//! console behaves like the file it is). Each backup's row carries its
//! figures as data attributes, so the page can be checked against the
//! manifests by a machine as well as read.

use super::plot::{self, Chart, Series, Unit};
use super::{BackupEntry, CopyState, History, Moment, StoragePlan, TargetHistory};
use crate::report::human_bytes;
use chrono::{DateTime, Utc};
use std::fmt::Write;

/// Problems listed per target before the rest are counted.
const PROBLEMS_SHOWN: usize = 40;
/// Backups named in "the next prune deletes".
const PRUNE_NAMED: usize = 12;

const STYLE: &str = r#"
:root{color-scheme:light;--ok:#1a7f37;--bad:#cf222e;--warn:#9a6700;--mute:#57606a;--line:#d0d7de}
*{box-sizing:border-box}
body{font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;padding:16px;color:#1f2328;background:#fff;max-width:1400px}
h1{font-size:1.5em;margin:0 0 4px}h2{font-size:1.25em;margin:0}h3{font-size:1.05em;margin:18px 0 6px}
.meta,.mute{color:var(--mute)}
section.target{border-top:2px solid var(--line);margin-top:28px;padding-top:14px}
.scroll{overflow-x:auto;-webkit-overflow-scrolling:touch}
table{border-collapse:collapse;font-size:.9em;min-width:100%}
th,td{text-align:left;padding:4px 8px;border-bottom:1px solid var(--line);white-space:nowrap;vertical-align:top}
td.n,th.n{text-align:right;font-variant-numeric:tabular-nums}
.ok{color:var(--ok)}.bad{color:var(--bad);font-weight:600}.warn{color:var(--warn)}
ul.problems{margin:6px 0;padding-left:20px}ul.problems li{color:var(--bad)}
.charts{display:grid;grid-template-columns:repeat(auto-fit,minmax(300px,1fr));gap:14px;margin:12px 0}
figure{margin:0;border:1px solid var(--line);border-radius:6px;padding:6px}
figcaption{font-size:.85em;color:var(--mute);padding:0 4px}
svg.chart{width:100%;height:auto;display:block}
svg .ct{font-size:13px;font-weight:600;fill:#1f2328}
svg .yl{font-size:11px;text-anchor:end;fill:var(--mute)}
svg .xl{font-size:11px;text-anchor:middle;fill:var(--mute)}
svg .grid{stroke:#eaeef2;stroke-width:1}svg .axis,svg .tick{stroke:#8c959f;stroke-width:1}
svg .line{fill:none;stroke-width:1.6}
.s0{stroke:#0969da;fill:#0969da;background:#0969da}.s1{stroke:#d1242f;fill:#d1242f;background:#d1242f}
.s2{stroke:#1a7f37;fill:#1a7f37;background:#1a7f37}.s3{stroke:#8250df;fill:#8250df;background:#8250df}
svg .line.s0,svg .line.s1,svg .line.s2,svg .line.s3{fill:none}
.key{display:inline-block;width:12px;height:3px;vertical-align:middle;margin:0 4px 0 8px}
"#;

/// Escape text for HTML content and attribute values.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

pub fn render(h: &History) -> String {
    let mut out = String::new();
    let _ = write!(
        out,
        r#"<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1"><meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'"><meta name="generator" content="backstop {version}"><title>backstop report {date}</title><style>{STYLE}</style></head><body>"#,
        version = esc(&h.tool_version),
        date = h.generated_at.format("%Y-%m-%d")
    );
    let _ = write!(
        out,
        r#"<header><h1>Backups: what the storages hold</h1><p class="meta">Generated {} by {}, from the storage listings, manifests and verify records alone. Backups since {}. Times in UTC.</p></header>"#,
        stamp(h.generated_at),
        esc(&h.tool_version),
        h.since.format("%Y-%m-%d")
    );
    summary(&mut out, h);
    if h.targets.is_empty() {
        out.push_str(r#"<p class="bad">No target selected.</p>"#);
    }
    for t in &h.targets {
        target(&mut out, t, h);
    }
    out.push_str("</body></html>\n");
    out
}

fn stamp(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M").to_string()
}

fn age(seconds: i64) -> String {
    let s = seconds.max(0);
    match s {
        s if s < 3600 => format!("{} min", s / 60),
        s if s < 2 * 86400 => format!("{} h", s / 3600),
        s => format!("{} days", s / 86400),
    }
}

fn moment(m: &Option<Moment>, never: &str) -> String {
    match m {
        Some(m) => format!(
            r#"{} <span class="mute">({} ago)</span><br><span class="mute">{}</span>"#,
            stamp(m.at),
            age(m.age_seconds),
            esc(&m.backup)
        ),
        None => format!(r#"<span class="bad">{never}</span>"#),
    }
}

fn summary(out: &mut String, h: &History) {
    out.push_str(r#"<section id="summary"><h2>Summary</h2><div class="scroll"><table><thead><tr><th>Target</th><th>Newest proven restorable</th><th>Newest backup</th><th>Needs a look</th></tr></thead><tbody>"#);
    for t in &h.targets {
        let state = match t.problems.len() {
            0 => r#"<span class="ok">nothing</span>"#.to_string(),
            n => format!(
                r##"<a class="bad" href="#t-{}">{n} problem{}</a>"##,
                esc(&t.name),
                if n == 1 { "" } else { "s" }
            ),
        };
        let _ = write!(
            out,
            r##"<tr data-target="{name}"><td><a href="#t-{name}">{name}</a></td><td>{}</td><td>{}</td><td>{state}</td></tr>"##,
            moment(&t.newest_proven, "never proven"),
            moment(&t.newest, "no backup"),
            name = esc(&t.name)
        );
    }
    out.push_str("</tbody></table></div></section>");
}

fn target(out: &mut String, t: &TargetHistory, h: &History) {
    let _ = write!(
        out,
        r#"<section class="target" id="t-{name}"><h2>{name} <span class="mute">· {engine}</span></h2>"#,
        name = esc(&t.name),
        engine = esc(&t.engine)
    );
    let described = t.backups.iter().rev().find_map(|b| b.figures.as_ref());
    let about = match described {
        Some(f) if !f.database.is_empty() => format!(
            "Database {} on {}. ",
            esc(&f.database),
            esc(&f.server_version)
        ),
        Some(f) if f.encrypted => {
            "Encrypted: the database's details are sealed (give --identity to show them). "
                .to_string()
        }
        _ => String::new(),
    };
    let _ = write!(
        out,
        r#"<p class="meta">{about}Storages: {}. {} backup{} since {}{}.</p>"#,
        esc(&t.storages.join(", ")),
        t.backups.len(),
        if t.backups.len() == 1 { "" } else { "s" },
        h.since.format("%Y-%m-%d"),
        match t.older {
            0 => String::new(),
            n => format!(" ({n} older not shown)"),
        }
    );
    if t.problems.is_empty() {
        out.push_str(r#"<p class="ok">No problems found.</p>"#);
    } else {
        out.push_str(r#"<ul class="problems">"#);
        for p in t.problems.iter().take(PROBLEMS_SHOWN) {
            let _ = write!(out, "<li>{}</li>", esc(p));
        }
        if t.problems.len() > PROBLEMS_SHOWN {
            let _ = write!(
                out,
                "<li>… and {} more (backstop report --json lists every one)</li>",
                t.problems.len() - PROBLEMS_SHOWN
            );
        }
        out.push_str("</ul>");
    }
    if t.backups.is_empty() {
        let _ = write!(
            out,
            r#"<p class="bad empty">No backups since {} in {}.</p>"#,
            h.since.format("%Y-%m-%d"),
            match t.storages.len() {
                1 => format!("storage {}", esc(&t.storages[0])),
                _ => "any of its storages".to_string(),
            }
        );
    } else {
        charts(out, t, h);
    }
    for p in &t.plans {
        plan(out, p, t.storages.len() > 1);
    }
    if !t.backups.is_empty() {
        backups_table(out, t);
    }
    out.push_str("</section>");
}

fn charts(out: &mut String, t: &TargetHistory, h: &History) {
    let with_figures: Vec<(&BackupEntry, &super::Figures)> = t
        .backups
        .iter()
        .filter_map(|b| Some((b, b.figures.as_ref()?)))
        .collect();
    if with_figures.is_empty() {
        out.push_str(r#"<p class="bad">No manifest could be read: nothing to plot.</p>"#);
        return;
    }
    let kinds: Vec<&str> = ["dump", "base"]
        .into_iter()
        .filter(|k| with_figures.iter().any(|(b, _)| b.kind == *k))
        .collect();
    let named = |what: &str, kind: &str| match kinds.len() {
        1 => what.to_string(),
        _ => format!("{what} ({kind})"),
    };
    let series = |what: &str, value: &dyn Fn(&super::Figures) -> Option<f64>| -> Vec<Series> {
        kinds
            .iter()
            .map(|k| Series {
                name: named(what, k),
                points: with_figures
                    .iter()
                    .filter(|(b, _)| b.kind == *k)
                    .filter_map(|(b, f)| Some((b.started_at, value(f)?)))
                    .collect(),
            })
            .collect()
    };
    // From the window's start, or the first backup when it came later.
    let from = with_figures
        .first()
        .map(|(b, _)| b.started_at)
        .unwrap_or(h.since)
        .max(h.since);
    let to = h.generated_at;
    let mut sizes = series("raw", &|f| Some(f.raw_bytes as f64));
    sizes.extend(series("stored", &|f| Some(f.stored_bytes as f64)));
    let mut levels = series("highest level", &|f| {
        f.levels.iter().max().map(|l| *l as f64)
    });
    if with_figures.iter().any(|(_, f)| f.levels.len() > 1) {
        levels.extend(series("lowest level", &|f| {
            f.levels.iter().min().map(|l| *l as f64)
        }));
    }
    let charts = [
        ("Size", Unit::Bytes, sizes),
        (
            "Duration",
            Unit::Seconds,
            series("run time", &|f| Some(f.duration_seconds)),
        ),
        (
            "Throughput (raw)",
            Unit::BytesPerSecond,
            series("raw bytes per second", &|f| f.throughput_bytes_per_second),
        ),
        ("Compression level", Unit::Count, levels),
    ];
    out.push_str(r#"<div class="charts">"#);
    for (title, unit, series) in charts {
        let mut legend = String::new();
        for (i, s) in series.iter().enumerate() {
            let _ = write!(legend, r#"<span class="key s{i}"></span>{}"#, esc(&s.name));
        }
        let svg = plot::svg(&Chart {
            title,
            unit,
            from,
            to,
            series,
        });
        let _ = write!(
            out,
            "<figure>{svg}<figcaption>{legend}</figcaption></figure>"
        );
    }
    out.push_str("</div>");
}

fn plan(out: &mut String, p: &StoragePlan, named: bool) {
    let _ = write!(
        out,
        "<h3>Retention{}</h3>",
        match named {
            true => format!(" in storage {}", esc(&p.storage)),
            false => String::new(),
        }
    );
    if let Some(e) = &p.error {
        let _ = write!(
            out,
            r#"<p class="bad">The storage could not be listed: {}</p>"#,
            esc(e)
        );
        return;
    }
    let Some(policy) = &p.policy else {
        out.push_str(r#"<p class="mute">No retention configured: every backup is kept.</p>"#);
        restorable(out, p);
        return;
    };
    let _ = write!(out, r#"<p class="meta">Policy: {}.</p>"#, esc(policy));
    if !p.kept.is_empty() {
        out.push_str(r#"<div class="scroll"><table class="kept"><thead><tr><th>Rule</th><th>Period</th><th>Keeps</th></tr></thead><tbody>"#);
        for k in &p.kept {
            let _ = write!(
                out,
                "<tr><td>{}</td><td>{}</td><td>{}</td></tr>",
                esc(&k.rule),
                esc(&k.bucket),
                esc(&k.backup)
            );
        }
        out.push_str("</tbody></table></div>");
    }
    match p.prune_next.len() {
        0 => out.push_str(r#"<p class="ok">The next prune deletes nothing.</p>"#),
        n => {
            let names: Vec<String> = p
                .prune_next
                .iter()
                .take(PRUNE_NAMED)
                .map(|i| esc(i))
                .collect();
            let _ = write!(
                out,
                r#"<p class="warn">The next prune deletes {n} backup{}: {}{}.</p>"#,
                if n == 1 { "" } else { "s" },
                names.join(", "),
                match n.saturating_sub(PRUNE_NAMED) {
                    0 => String::new(),
                    more => format!(" and {more} more"),
                }
            );
        }
    }
    restorable(out, p);
}

fn restorable(out: &mut String, p: &StoragePlan) {
    if let Some(w) = &p.restorable {
        let _ = write!(
            out,
            r#"<p class="meta">Point-in-time recovery: restorable from {} to {} ({} WAL segments){}.</p>"#,
            stamp(w.from),
            stamp(w.to),
            w.wal_segments,
            match &w.gap_before {
                Some(g) => format!(
                    r#"; <span class="bad">WAL after it is cut off by a gap at {}</span>"#,
                    esc(g)
                ),
                None => String::new(),
            }
        );
    }
}

fn backups_table(out: &mut String, t: &TargetHistory) {
    let _ = write!(
        out,
        r#"<h3>Backups, newest first</h3><div class="scroll"><table class="backups"><thead><tr><th>Started</th><th>Kind</th><th class="n">Duration</th><th class="n">Raw</th><th class="n">Stored</th><th class="n">Throughput</th><th>Compression</th><th>Verified</th>"#
    );
    for s in &t.storages {
        let _ = write!(out, "<th>{}</th>", esc(s));
    }
    out.push_str("</tr></thead><tbody>");
    for b in t.backups.iter().rev() {
        let _ = write!(out, r#"<tr data-id="{}""#, esc(&b.id));
        match &b.figures {
            Some(f) => {
                let _ = write!(
                    out,
                    r#" data-raw="{}" data-stored="{}" data-seconds="{:.3}"><td title="{}">{}</td><td>{}</td><td class="n">{}</td><td class="n">{}</td><td class="n">{}</td><td class="n">{}</td><td>{} {}{}</td>"#,
                    f.raw_bytes,
                    f.stored_bytes,
                    f.duration_seconds,
                    esc(&b.id),
                    stamp(b.started_at),
                    b.kind,
                    duration(f.duration_seconds),
                    human_bytes(f.raw_bytes),
                    human_bytes(f.stored_bytes),
                    f.throughput_bytes_per_second
                        .map(|r| format!("{}/s", human_bytes(r as u64)))
                        .unwrap_or_else(|| "–".into()),
                    esc(&f.compression),
                    levels(&f.levels),
                    if f.encrypted { " · age" } else { "" }
                );
            }
            None => {
                let _ = write!(
                    out,
                    r#"><td title="{}">{}</td><td>{}</td><td colspan="5" class="bad">manifest unreadable</td>"#,
                    esc(&b.id),
                    stamp(b.started_at),
                    b.kind
                );
            }
        }
        out.push_str(&verified_cell(b));
        for s in &t.storages {
            out.push_str(&copy_cell(b.copies.get(s)));
        }
        out.push_str("</tr>");
    }
    out.push_str("</tbody></table></div>");
}

fn levels(l: &[i32]) -> String {
    match l {
        [] => String::new(),
        [one] => one.to_string(),
        [first, .., last] => format!("{first}–{last}"),
    }
}

fn duration(s: f64) -> String {
    match s {
        s if s < 120.0 => format!("{s:.1} s"),
        s if s < 7200.0 => format!("{:.1} min", s / 60.0),
        s => format!("{:.1} h", s / 3600.0),
    }
}

fn verified_cell(b: &BackupEntry) -> String {
    let Some(v) = b.verifications.last() else {
        return r#"<td class="mute">–</td>"#.into();
    };
    let detail = match &v.record {
        Some(r) => {
            let mut d = format!(
                "by {} on {}, {:.1} s",
                r.tool_version, r.host, r.duration_seconds
            );
            if let (Some(tables), Some(rows)) = (r.tables, r.rows) {
                d.push_str(&format!("; {tables} tables, {rows} rows read"));
            }
            if let Some(c) = r.tables_compared.filter(|c| *c > 0) {
                d.push_str(&format!(", {c} tables' row counts compared with the dump"));
            }
            if let Some(why) = &r.why {
                d.push_str(&format!("; {why}"));
            }
            d
        }
        None => "the record could not be read".into(),
    };
    let detail = format!("{detail} (storage {})", v.storage);
    match v.passed {
        true => format!(
            r#"<td class="ok" data-verified="passed" title="{}">✓ {}</td>"#,
            esc(&detail),
            v.at.format("%Y-%m-%d")
        ),
        false => format!(
            r#"<td class="bad" data-verified="failed" title="{}">✗ failed {}</td>"#,
            esc(&detail),
            v.at.format("%Y-%m-%d")
        ),
    }
}

fn copy_cell(c: Option<&CopyState>) -> String {
    match c {
        Some(CopyState::Complete { kept_by: None }) => r#"<td class="ok">✓</td>"#.into(),
        Some(CopyState::Complete { kept_by: Some(r) }) if r.is_empty() => {
            r#"<td class="warn">✓ pruned next</td>"#.into()
        }
        Some(CopyState::Complete { kept_by: Some(r) }) => {
            let rules: Vec<&str> = r.iter().map(|r| r.split(' ').next().unwrap_or(r)).collect();
            format!(
                r#"<td class="ok" title="{}">✓ {}</td>"#,
                esc(&r.join(", ")),
                esc(&rules.join(", "))
            )
        }
        Some(CopyState::Damaged { why }) => {
            format!(r#"<td class="bad" title="{}">DAMAGED</td>"#, esc(why))
        }
        Some(CopyState::Missing) => r#"<td class="bad">MISSING</td>"#.into(),
        Some(CopyState::Unknown) | None => r#"<td class="mute">?</td>"#.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_escaped_for_content_and_attributes() {
        assert_eq!(
            esc(r#"<a href="x">'&'</a>"#),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;"
        );
    }
}
