//! The cockpit: the web page `crm serve` shows at `/`, and the SVG pictures of a scorecard
//! node (strategy map, bullet graphs, trend lines) rendered here on the server.
//!
//! The page's three files are compiled into the binary and served without a credential
//! (they hold no data; the page reads the API with the caller's token). No asset comes from
//! anywhere else, so the cockpit works offline.

use std::fmt::Write as _;

use axum::extract::Path;
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use crm_domain::definitions::MeasureStatus;
use crm_metrics::scorecard::report::MeasureReport;
use crm_metrics::scorecard::{Assessment, ScorecardReport};

use super::problem::ApiError;

const INDEX_HTML: &str = include_str!("../cockpit/index.html");
const COCKPIT_JS: &str = include_str!("../cockpit/cockpit.js");
const COCKPIT_CSS: &str = include_str!("../cockpit/cockpit.css");

fn asset(body: &'static str, content_type: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
            (
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static(
                    "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; connect-src 'self'; frame-ancestors 'none'",
                ),
            ),
        ],
        body,
    )
        .into_response()
}

/// The cockpit page.
#[utoipa::path(get, path = "/", tag = "cockpit",
    responses((status = 200, description = "The cockpit page (HTML)", body = String, content_type = "text/html")))]
pub async fn index() -> Response {
    asset(INDEX_HTML, "text/html; charset=utf-8")
}

/// The cockpit's script and style sheet.
#[utoipa::path(get, path = "/cockpit/{asset}", tag = "cockpit",
    params(("asset" = String, Path, description = "`cockpit.js` or `cockpit.css`")),
    responses(
        (status = 200, description = "The asset (JavaScript or CSS)", body = String, content_type = "text/plain"),
        (status = 404, description = "No such asset", body = super::problem::Problem, content_type = "application/problem+json"),
    ))]
pub async fn file(Path(name): Path<String>) -> Result<Response, ApiError> {
    match name.as_str() {
        "cockpit.js" => Ok(asset(COCKPIT_JS, "text/javascript; charset=utf-8")),
        "cockpit.css" => Ok(asset(COCKPIT_CSS, "text/css; charset=utf-8")),
        _ => Err(ApiError::NotFound(format!(
            "no cockpit asset `{name}`; the assets are cockpit.js and cockpit.css"
        ))),
    }
}

/// Fill colour and text colour of a status (text contrast ≥ 4.5:1 on the fill).
fn colours(status: MeasureStatus) -> (&'static str, &'static str) {
    match status {
        MeasureStatus::OnTrack => ("#1b5e20", "#ffffff"),
        MeasureStatus::AtRisk => ("#f9c74f", "#1a1a1a"),
        MeasureStatus::OffTrack => ("#b71c1c", "#ffffff"),
        MeasureStatus::NoData => ("#e0e0e0", "#1a1a1a"),
    }
}

fn words(status: MeasureStatus) -> &'static str {
    match status {
        MeasureStatus::OnTrack => "on track",
        MeasureStatus::AtRisk => "at risk",
        MeasureStatus::OffTrack => "off track",
        MeasureStatus::NoData => "no data",
    }
}

/// XML text escaping.
fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
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

const TREND_W: f64 = 140.0;
const TREND_H: f64 = 32.0;

/// A sparkline of the trend with the target as a dashed line; the last point is marked.
fn trend_svg(m: &MeasureReport) -> Option<String> {
    let r = &m.reading;
    let points: Vec<(usize, f64)> = r
        .trend
        .iter()
        .enumerate()
        .filter_map(|(i, p)| p.value.map(|v| (i, v)))
        .collect();
    if points.len() < 2 {
        return None;
    }
    let n = r.trend.len().saturating_sub(1).max(1) as f64;
    let mut lo = r.target.value;
    let mut hi = r.target.value;
    for (_, v) in &points {
        lo = lo.min(*v);
        hi = hi.max(*v);
    }
    let span = if hi > lo { hi - lo } else { 1.0 };
    let x = |i: usize| 2.0 + (i as f64) / n * (TREND_W - 4.0);
    let y = |v: f64| 2.0 + (hi - v) / span * (TREND_H - 4.0);
    let line: Vec<String> = points
        .iter()
        .map(|(i, v)| format!("{:.1},{:.1}", x(*i), y(*v)))
        .collect();
    let first = r.trend.first().map_or("", |p| p.period.as_str());
    let last_point = r.trend.last();
    let title = format!(
        "{}: trend from {} to {} ({} periods), last {}, target {}",
        r.name,
        first,
        last_point.map_or("", |p| p.period.as_str()),
        r.trend.len(),
        last_point.map_or("", |p| p.display.as_str()),
        r.target.display
    );
    let (lx, lv) = points.last().copied().unwrap_or((0, 0.0));
    let (fill, _) = colours(r.status);
    Some(format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" class=\"trend\" role=\"img\" width=\"{TREND_W}\" height=\"{TREND_H}\" viewBox=\"0 0 {TREND_W} {TREND_H}\"><title>{}</title><line x1=\"0\" x2=\"{TREND_W}\" y1=\"{:.1}\" y2=\"{:.1}\" stroke=\"#595959\" stroke-dasharray=\"3 2\" stroke-width=\"1\"/><polyline fill=\"none\" stroke=\"#1a1a1a\" stroke-width=\"1.5\" points=\"{}\"/><circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"3\" fill=\"{fill}\" stroke=\"#1a1a1a\"/></svg>",
        esc(&title),
        y(r.target.value),
        y(r.target.value),
        line.join(" "),
        x(lx),
        y(lv),
    ))
}

const BULLET_W: f64 = 160.0;
const BULLET_H: f64 = 22.0;

/// A bullet graph: qualitative bands (off track, at risk, on track) in greys, the actual as
/// a bar, the target as a tick.
fn bullet_svg(m: &MeasureReport) -> Option<String> {
    let r = &m.reading;
    let actual = r.actual.value?;
    let t = &r.target;
    let hi = [actual, t.value, t.on_track, t.at_risk]
        .into_iter()
        .fold(f64::MIN, f64::max)
        * 1.15;
    let lo = [actual, t.value, t.on_track, t.at_risk, 0.0]
        .into_iter()
        .fold(f64::MAX, f64::min);
    let span = if hi > lo { hi - lo } else { 1.0 };
    let x = |v: f64| (v - lo) / span * BULLET_W;
    let (bad, good) = match r.direction {
        crm_metrics::scorecard::definition::Direction::Higher => {
            ((0.0, x(t.at_risk)), (x(t.on_track), BULLET_W))
        }
        crm_metrics::scorecard::definition::Direction::Lower => {
            ((x(t.at_risk), BULLET_W), (0.0, x(t.on_track)))
        }
    };
    let title = format!(
        "{}: actual {} against target {} ({}); at risk beyond {}",
        r.name,
        r.actual.display,
        t.display,
        words(r.status),
        t.at_risk_display
    );
    Some(format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" class=\"bullet\" role=\"img\" width=\"{BULLET_W}\" height=\"{BULLET_H}\" viewBox=\"0 0 {BULLET_W} {BULLET_H}\"><title>{}</title><rect x=\"0\" y=\"0\" width=\"{BULLET_W}\" height=\"{BULLET_H}\" fill=\"#d9d9d9\"/><rect x=\"{:.1}\" y=\"0\" width=\"{:.1}\" height=\"{BULLET_H}\" fill=\"#a6a6a6\"/><rect x=\"{:.1}\" y=\"0\" width=\"{:.1}\" height=\"{BULLET_H}\" fill=\"#f2f2f2\"/><rect x=\"0\" y=\"7\" width=\"{:.1}\" height=\"8\" fill=\"#1a1a1a\"/><line x1=\"{:.1}\" x2=\"{:.1}\" y1=\"2\" y2=\"20\" stroke=\"#1a1a1a\" stroke-width=\"2\"/></svg>",
        esc(&title),
        bad.0,
        (bad.1 - bad.0).max(0.0),
        good.0,
        (good.1 - good.0).max(0.0),
        x(actual).max(1.0),
        x(t.value),
        x(t.value),
    ))
}

const MAP_W: f64 = 960.0;
const ROW_H: f64 = 96.0;
const BOX_W: f64 = 200.0;
const BOX_H: f64 = 62.0;
const LABEL_W: f64 = 110.0;
/// Characters of an objective's name on one line of its box.
const LABEL_CHARS: usize = 30;

/// `text` in at most `lines` lines of at most `width` characters, broken between words; the
/// last line ends with `…` when the text does not fit.
fn wrap(text: &str, width: usize, lines: usize) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut current = String::new();
    let mut words = text.split_whitespace().peekable();
    while let Some(word) = words.next() {
        let fits =
            current.chars().count() + word.chars().count() + usize::from(!current.is_empty())
                <= width;
        if fits {
            if !current.is_empty() {
                current.push(' ');
            }
            current.push_str(word);
            continue;
        }
        if out.len() + 1 == lines {
            // The last line: as much as fits, then an ellipsis.
            let mut last: String = current.chars().take(width.saturating_sub(1)).collect();
            last.push('…');
            out.push(last);
            return out;
        }
        if !current.is_empty() {
            out.push(std::mem::take(&mut current));
        }
        current = word.chars().take(width).collect();
        if words.peek().is_none() {
            break;
        }
    }
    if !current.is_empty() {
        out.push(current);
    }
    out
}

/// The strategy map: one band per perspective, an objective box per objective coloured by
/// its status (and naming it), arrows from each objective to those it drives. Each box
/// links to its objective in the page.
fn strategy_map_svg(r: &ScorecardReport) -> String {
    let mut boxes: Vec<(String, f64, f64)> = Vec::new();
    let mut body = String::new();
    for (row, p) in r.perspectives.iter().enumerate() {
        let y0 = row as f64 * ROW_H;
        let _ = write!(
            body,
            "<rect x=\"0\" y=\"{y0:.0}\" width=\"{MAP_W}\" height=\"{ROW_H}\" fill=\"{}\"/><text x=\"8\" y=\"{:.0}\" font-size=\"14\" font-weight=\"bold\" fill=\"#1a1a1a\">{}</text>",
            if row % 2 == 0 { "#f7f7f7" } else { "#ffffff" },
            y0 + ROW_H / 2.0 + 5.0,
            esc(&p.name)
        );
        let n = p.objectives.len().max(1) as f64;
        let slot = (MAP_W - LABEL_W) / n;
        for (i, o) in p.objectives.iter().enumerate() {
            let x = LABEL_W + slot * i as f64 + (slot - BOX_W).max(0.0) / 2.0;
            let y = y0 + (ROW_H - BOX_H) / 2.0;
            boxes.push((o.id.clone(), x, y));
            let (fill, ink) = colours(o.status);
            let lines = wrap(&o.name, LABEL_CHARS, 2);
            let mut text = String::new();
            let first_y = y + if lines.len() > 1 { 18.0 } else { 24.0 };
            for (k, line) in lines.iter().enumerate() {
                let _ = write!(
                    text,
                    "<text x=\"{:.0}\" y=\"{:.0}\" font-size=\"12\" text-anchor=\"middle\" fill=\"{ink}\">{}</text>",
                    x + BOX_W / 2.0,
                    first_y + 14.0 * k as f64,
                    esc(line)
                );
            }
            let _ = write!(
                body,
                "<a href=\"#objective-{id}\" aria-label=\"{name}: {status}\"><title>{name}</title><rect x=\"{x:.0}\" y=\"{y:.0}\" width=\"{BOX_W}\" height=\"{BOX_H}\" rx=\"6\" fill=\"{fill}\" stroke=\"#1a1a1a\"/>{text}<text x=\"{:.0}\" y=\"{:.0}\" font-size=\"11\" text-anchor=\"middle\" fill=\"{ink}\">{status}</text></a>",
                x + BOX_W / 2.0,
                y + BOX_H - 7.0,
                id = esc(&o.id),
                name = esc(&o.name),
                status = words(o.status),
            );
        }
    }
    let mut arrows = String::new();
    for p in &r.perspectives {
        for o in &p.objectives {
            let Some((_, fx, fy)) = boxes.iter().find(|(id, _, _)| *id == o.id) else {
                continue;
            };
            for d in &o.drives {
                let Some((_, tx, ty)) = boxes.iter().find(|(id, _, _)| id == d) else {
                    continue;
                };
                let (x1, y1, x2, y2) = if ty < fy {
                    (fx + BOX_W / 2.0, *fy, tx + BOX_W / 2.0, ty + BOX_H)
                } else if ty > fy {
                    (fx + BOX_W / 2.0, fy + BOX_H, tx + BOX_W / 2.0, *ty)
                } else if tx > fx {
                    (fx + BOX_W, fy + BOX_H / 2.0, *tx, ty + BOX_H / 2.0)
                } else {
                    (*fx, fy + BOX_H / 2.0, tx + BOX_W, ty + BOX_H / 2.0)
                };
                let _ = write!(
                    arrows,
                    "<line x1=\"{x1:.0}\" y1=\"{y1:.0}\" x2=\"{x2:.0}\" y2=\"{y2:.0}\" stroke=\"#404040\" stroke-width=\"1.5\" marker-end=\"url(#arrow)\"/>"
                );
            }
        }
    }
    let height = (r.perspectives.len().max(1) as f64) * ROW_H;
    format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" class=\"strategy-map\" role=\"img\" viewBox=\"0 0 {MAP_W} {height:.0}\" width=\"100%\"><title>Strategy map of {}: {} perspectives; arrows go from an objective to the one it drives</title><defs><marker id=\"arrow\" viewBox=\"0 0 10 10\" refX=\"9\" refY=\"5\" markerWidth=\"7\" markerHeight=\"7\" orient=\"auto-start-reverse\"><path d=\"M0,0 L10,5 L0,10 z\" fill=\"#404040\"/></marker></defs>{body}{arrows}</svg>",
        esc(&r.node.name),
        r.perspectives.len()
    )
}

/// Adds the pictures and the explain links to a report.
pub fn decorate(report: &mut ScorecardReport, a: &Assessment) {
    let id = a.def().id.clone();
    let node = report.node.id.clone();
    for p in &mut report.perspectives {
        for o in &mut p.objectives {
            for m in &mut o.measures {
                m.explain = Some(format!(
                    "/v1/scorecards/{id}/explain?node={node}&measure={}&version={}",
                    m.reading.id,
                    a.def().version
                ));
                m.trend_svg = trend_svg(m);
                m.bullet_svg = bullet_svg(m);
            }
        }
    }
    report.strategy_map_svg = Some(strategy_map_svg(report));
}

#[cfg(test)]
mod tests {
    use super::wrap;

    #[test]
    fn names_wrap_between_words_and_end_with_an_ellipsis() {
        assert_eq!(wrap("Grow revenue", 30, 2), ["Grow revenue"]);
        assert_eq!(
            wrap("Fill the pipeline with leads that convert", 30, 2),
            ["Fill the pipeline with leads", "that convert"]
        );
        let long = wrap(
            "one two three four five six seven eight nine ten eleven twelve",
            12,
            2,
        );
        assert_eq!(long.len(), 2);
        assert!(long[1].ends_with('…'), "{long:?}");
        assert!(long.iter().all(|l| l.chars().count() <= 12), "{long:?}");
    }
}
