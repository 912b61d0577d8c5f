//! One figure on one line: the scorecard line of `crm metric` and `crm demo`, and numbers as
//! the engine computed them (integers exact, fractions as given).

use crm_metrics::{Evaluation, Num, Status};

/// A numerator or denominator as printed: integers exactly, fractions to two places.
#[must_use]
pub fn num(n: &Num) -> String {
    match n {
        Num::Int(i) => i.to_string(),
        Num::Float(f) => format!("{f:.2}"),
    }
}

/// `sales.win_rate v1  Win rate  63.15%  (2016-10-20..2018-01-01; 4238 / 6711)`.
#[must_use]
pub fn scorecard_line(ev: &Evaluation) -> String {
    let head = format!(
        "{:<34} v{}  {:<34}",
        ev.metric.id, ev.metric.version, ev.metric.name
    );
    match &ev.status {
        Status::Ok => match ev.figures.first() {
            Some(f) => {
                let ratio = match (&f.numerator, &f.denominator) {
                    (Some(n), Some(d)) => {
                        format!("; {} / {}", num(n), num(d))
                    }
                    _ => String::new(),
                };
                let excluded = if f.excluded.is_empty() {
                    String::new()
                } else {
                    let codes: Vec<String> = f
                        .excluded
                        .iter()
                        .map(|(code, n)| format!("{code} {n}"))
                        .collect();
                    format!("; excluded {}", codes.join(", "))
                };
                format!(
                    "{head} {:>16}  ({}{ratio}{excluded})",
                    f.display, f.period.label
                )
            }
            None => format!("{head} {:>16}", "no value"),
        },
        Status::NoData { needs } => format!("{head} no data: needs {}", needs.join(", ")),
        Status::Unsupported { needs } => format!("{head} not computable yet: needs {needs}"),
    }
}
