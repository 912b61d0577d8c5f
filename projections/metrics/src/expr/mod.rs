//! The small expression language of metric definitions: filters (`where`, `exclude.when`),
//! values (`of`), time attribution (`time`), dimensions and derived-metric formulas.
//!
//! ```text
//! payload.kind in ['new', 'expansion'] and not has('OpportunityVoided')
//! occurred_at - first('OpportunityOpened').occurred_at
//! ref('agent', stream.owner).region ?? 'unassigned'
//! (current - previous) / previous
//! ```
//!
//! Paths: `payload.a.b` (the decoded, upcast payload of the fact), `stream.x` (the payload
//! of the stream's creation event), `meta.x` (the event's metadata JSON), `params.x` (the
//! definition's constants), `event.type|stream|category|position|version|id|actor`,
//! `attr.x` (the custom attribute `x` of the fact's stream, as it was at the fact's time; see
//! `crm_domain::attributes`; `ref(..).attr.x` reads another stream's),
//! `occurred_at`, `recorded_at`, `now` (the instant the view is read at: `as_of`, the
//! `known_at` instant, or the last `recorded_at`). Literals: numbers, `'text'`, `true`, `false`, `null`,
//! lists `[..]`, durations `30d`, `12h`, `15m`, `10s`, `2w` (in seconds). Operators by
//! precedence: `??` (coalesce), `or`, `and`, `not`, comparisons and `in`/`not in`, `+ -`,
//! `* / %`, unary `-`. Functions are listed in [`FUNCTIONS`].

mod error;
pub(crate) mod eval;
mod parse;

use std::collections::BTreeSet;

pub use error::ExprError;
pub(crate) use parse::parse;

/// Every function with its arity range and purpose (shown in validation errors).
pub const FUNCTIONS: &[(&str, usize, usize, &str)] = &[
    ("has", 1, 2, "has('T' [, cond]): the fact's stream holds an event of type T (matching cond)"),
    ("later", 1, 2, "later('T' [, cond]): an event of type T follows the fact in its stream"),
    ("before", 1, 2, "before('T' [, cond]): an event of type T precedes the fact in its stream"),
    ("count", 1, 2, "count('T' [, cond]): events of type T in the fact's stream"),
    ("first", 1, 2, "first('T' [, cond]): the first such event of the stream (then .occurred_at, .payload.x)"),
    ("last", 1, 2, "last('T' [, cond]): the last such event of the stream"),
    ("sum", 2, 2, "sum('T', value): the sum of value over the stream's events of type T"),
    ("sum_field", 2, 2, "sum_field(list, 'a.b'): the sum of a numeric path over a list's items (null if one lacks it)"),
    ("ref", 2, 2, "ref('category', key): the stream `category-key`; .x is its latest x at or before the fact's time, .created.x the creation event's"),
    ("time", 1, 1, "time(x): parse an RFC 3339 text as an instant"),
    ("date", 1, 1, "date(t): calendar date (UTC) of an instant, as text"),
    ("hour", 1, 1, "hour(t): hour of day (UTC), 0..=23"),
    ("weekday", 1, 1, "weekday(t): ISO weekday, 1 = Monday"),
    ("days", 1, 1, "days(seconds): the number of days, fractional"),
    ("hours", 1, 1, "hours(seconds): the number of hours, fractional"),
    ("biz_seconds", 2, 2, "biz_seconds(a, b): seconds between two instants on the business calendar of params.business_hours / params.business_days"),
    ("lower", 1, 1, "lower(text)"),
    ("len", 1, 1, "len(x): length of a text or list"),
    ("exists", 1, 1, "exists(x): x is not null"),
    ("min", 2, 2, "min(a, b)"),
    ("max", 2, 2, "max(a, b)"),
    ("abs", 1, 1, "abs(x)"),
];

/// Root of a path expression.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Root {
    Payload,
    Stream,
    Meta,
    Params,
    Event,
    /// `attr.x`: a custom attribute of the fact's stream.
    Attr,
}

/// Binary operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BinOp {
    Add,
    Sub,
    Mul,
    Div,
    Rem,
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    In,
    NotIn,
    And,
    Or,
    Coalesce,
}

/// A literal value.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Lit {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
}

/// A parsed expression.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Expr {
    Lit(Lit),
    List(Vec<Expr>),
    Path(Root, Vec<String>),
    OccurredAt,
    RecordedAt,
    Now,
    /// A bare name: an input of a derived metric.
    Var(String),
    Neg(Box<Expr>),
    Not(Box<Expr>),
    Bin(BinOp, Box<Expr>, Box<Expr>),
    Call(String, Vec<Expr>),
    /// Field access on a call's result: `first('X').occurred_at`, `ref(..).region`.
    Get(Box<Expr>, Vec<String>),
}

/// What an expression reads from the log, so the loader keeps exactly that.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Reads {
    /// Event types named by `has`, `later`, `first`, ...
    pub types: BTreeSet<String>,
    /// Categories named by `ref('category', ..)`.
    pub ref_categories: BTreeSet<String>,
    /// Whether `stream.` is read.
    pub stream: bool,
    /// Whether `meta.` is read.
    pub meta: bool,
    /// Whether custom attributes (`attr.x`, `ref(..).attr.x`) are read.
    pub attrs: bool,
    /// Whether `event.actor` is read.
    pub actor: bool,
    /// Whether `event.id` is read.
    pub event_ids: bool,
    /// Bare names (inputs of derived metrics).
    pub vars: BTreeSet<String>,
    /// `params.x` names.
    pub params: BTreeSet<String>,
    /// Top-level payload fields read anywhere (`payload.x`, `stream.x`, `first(..).payload.x`,
    /// `ref(..).x`): the loader keeps only these.
    pub fields: BTreeSet<String>,
    /// Where each field read comes from, to check it against the event schemas.
    pub sourced: BTreeSet<(FieldSource, String)>,
}

/// Whose payload a field read belongs to.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum FieldSource {
    /// `payload.x`: the event being evaluated (one of the types the definition names).
    Payload,
    /// `stream.x`: the stream's attributes (events of the named types' categories).
    Stream,
    /// `ref('category', ..).x`: a referenced stream of that category.
    Ref(String),
}

impl Expr {
    /// Collects what the expression reads.
    pub(crate) fn reads(&self, out: &mut Reads) {
        match self {
            Expr::Lit(_) | Expr::OccurredAt | Expr::RecordedAt | Expr::Now => {}
            Expr::List(items) => items.iter().for_each(|e| e.reads(out)),
            Expr::Path(root, fields) => match root {
                Root::Stream => {
                    out.stream = true;
                    out.fields.extend(fields.first().cloned());
                    if let Some(first) = fields.first() {
                        out.sourced.insert((FieldSource::Stream, first.clone()));
                    }
                }
                Root::Meta => out.meta = true,
                Root::Attr => out.attrs = true,
                Root::Params => {
                    if let Some(first) = fields.first() {
                        out.params.insert(first.clone());
                    }
                }
                Root::Payload => {
                    // A bare `payload` needs every field.
                    out.fields
                        .insert(fields.first().cloned().unwrap_or_else(|| "*".into()));
                    if let Some(first) = fields.first() {
                        out.sourced.insert((FieldSource::Payload, first.clone()));
                    }
                }
                Root::Event => {
                    out.actor |= fields.first().is_some_and(|f| f == "actor");
                    out.event_ids |= fields.first().is_some_and(|f| f == "id");
                }
            },
            Expr::Var(name) => {
                out.vars.insert(name.clone());
            }
            Expr::Get(e, fields) => {
                match (e.as_ref(), fields.as_slice()) {
                    (Expr::Call(name, _), [first, ..]) if name == "ref" && first == "attr" => {
                        out.attrs = true;
                    }
                    (Expr::Call(name, args), [first, second, ..])
                        if name == "ref" && first == "created" =>
                    {
                        out.fields.insert(second.clone());
                        if let Some(Expr::Lit(Lit::Str(category))) = args.first() {
                            out.sourced
                                .insert((FieldSource::Ref(category.clone()), second.clone()));
                        }
                    }
                    (Expr::Call(name, args), [first, ..]) if name == "ref" => {
                        out.fields.insert(first.clone());
                        if let Some(Expr::Lit(Lit::Str(category))) = args.first() {
                            out.sourced
                                .insert((FieldSource::Ref(category.clone()), first.clone()));
                        }
                    }
                    (Expr::Call(..), [p, second, ..]) if p == "payload" => {
                        out.fields.insert(second.clone());
                    }
                    _ => {}
                }
                e.reads(out);
            }
            Expr::Neg(e) | Expr::Not(e) => e.reads(out),
            Expr::Bin(_, a, b) => {
                a.reads(out);
                b.reads(out);
            }
            Expr::Call(name, args) => {
                if let Some(Expr::Lit(Lit::Str(s))) = args.first() {
                    match name.as_str() {
                        "has" | "later" | "before" | "count" | "first" | "last" | "sum" => {
                            out.types.insert(s.clone());
                        }
                        "ref" => {
                            out.ref_categories.insert(s.clone());
                        }
                        _ => {}
                    }
                }
                args.iter().for_each(|e| e.reads(out));
            }
        }
    }
}

/// Checks the calls of a parsed expression: known function, arity, literal type arguments.
pub(crate) fn check_calls(expr: &Expr) -> Result<(), ExprError> {
    match expr {
        Expr::Call(name, args) => {
            let Some((_, lo, hi, _)) = FUNCTIONS.iter().find(|(n, ..)| n == name) else {
                return Err(ExprError::UnknownFunction { name: name.clone() });
            };
            if args.len() < *lo || args.len() > *hi {
                return Err(ExprError::Arity {
                    name: name.clone(),
                    min: *lo,
                    max: *hi,
                    got: args.len(),
                });
            }
            let literal_first = matches!(
                name.as_str(),
                "has" | "later" | "before" | "count" | "first" | "last" | "sum" | "ref"
            );
            if literal_first && !matches!(args.first(), Some(Expr::Lit(Lit::Str(_)))) {
                return Err(ExprError::QuotedNameExpected { name: name.clone() });
            }
            args.iter().try_for_each(check_calls)
        }
        Expr::List(items) => items.iter().try_for_each(check_calls),
        Expr::Neg(e) | Expr::Not(e) | Expr::Get(e, _) => check_calls(e),
        Expr::Bin(_, a, b) => {
            check_calls(a)?;
            check_calls(b)
        }
        Expr::Lit(_)
        | Expr::Path(..)
        | Expr::OccurredAt
        | Expr::RecordedAt
        | Expr::Now
        | Expr::Var(_) => Ok(()),
    }
}
