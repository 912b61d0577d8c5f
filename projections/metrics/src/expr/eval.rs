//! Evaluation of expressions against one fact of a [`LogView`].
//!
//! Evaluation never fails: a missing field, a type mismatch, an overflow or a division by
//! zero yields `null`, and a condition that is not `true` (including `null`) does not
//! match. So a rule over a field some events lack simply does not fire for them.

use std::borrow::Cow;
use std::cell::RefCell;
use std::cmp::Ordering;
use std::collections::BTreeMap;

use chrono::{DateTime, Datelike, Duration, Timelike, Utc};
use crm_domain::calendar::BusinessCalendar;

use super::{BinOp, Expr, Lit, Root};
use crate::definition::Param;
use crate::view::{Kind, LogView, Node};

/// A value during evaluation.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Val<'a> {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(Cow<'a, str>),
    Time(DateTime<Utc>),
    /// An array or object of a payload.
    Json(Node<'a>),
    Event(u32),
    Ref {
        stream: u32,
        at: DateTime<Utc>,
    },
    List(Vec<Val<'a>>),
}

/// `i128` as `f64` for display values; exact figures travel as numerator and denominator.
#[allow(clippy::cast_precision_loss)]
pub(crate) fn i_to_f(i: i128) -> f64 {
    i as f64
}

impl<'a> Val<'a> {
    pub(crate) fn truthy(&self) -> bool {
        matches!(self, Val::Bool(true))
    }

    pub(crate) fn as_f64(&self) -> Option<f64> {
        match self {
            Val::Int(i) => Some(i_to_f(i128::from(*i))),
            Val::Float(f) if f.is_finite() => Some(*f),
            Val::Bool(b) => Some(if *b { 1.0 } else { 0.0 }),
            _ => None,
        }
    }

    pub(crate) fn as_time(&self) -> Option<DateTime<Utc>> {
        match self {
            Val::Time(t) => Some(*t),
            Val::Str(s) => DateTime::parse_from_rfc3339(s)
                .ok()
                .map(|t| t.with_timezone(&Utc)),
            _ => None,
        }
    }

    /// Text form for dimensions and distinct keys (`null` for null).
    pub(crate) fn key(&self) -> String {
        match self {
            Val::Null => "null".into(),
            Val::Bool(b) => b.to_string(),
            Val::Int(i) => i.to_string(),
            Val::Float(f) => f.to_string(),
            Val::Str(s) => s.to_string(),
            Val::Time(t) => t.to_rfc3339(),
            Val::Json(v) => v.to_value().to_string(),
            Val::Event(i) => format!("event#{i}"),
            Val::Ref { stream, .. } => format!("stream#{stream}"),
            Val::List(items) => {
                let parts: Vec<String> = items.iter().map(Val::key).collect();
                format!("[{}]", parts.join(","))
            }
        }
    }
}

/// A payload value as the language sees it: integers that fit `i64` as integers, other
/// numbers as floats, arrays and objects as JSON.
fn json(v: Node<'_>) -> Val<'_> {
    match v.kind() {
        Kind::Null => Val::Null,
        Kind::Bool(b) => Val::Bool(b),
        Kind::UInt(u) => i64::try_from(u).map_or_else(
            |_| {
                serde_json::Number::from(u)
                    .as_f64()
                    .map_or(Val::Null, Val::Float)
            },
            Val::Int,
        ),
        Kind::Neg(i) => Val::Int(i),
        Kind::Float(f) => Val::Float(f),
        Kind::Str(s) => Val::Str(Cow::Borrowed(s)),
        Kind::Array | Kind::Object => Val::Json(v),
    }
}

fn walk<'a>(mut v: Node<'a>, fields: &[String]) -> Val<'a> {
    for f in fields {
        match v.get(f) {
            Some(next) => v = next,
            None => return Val::Null,
        }
    }
    json(v)
}

/// Custom attribute `name` of stream `s`: the value of its last change at or before `at`,
/// else (set only later) the first value it was given; `Null` when never set or removed.
fn attribute<'a>(view: &'a LogView, s: u32, name: &str, at: DateTime<Utc>) -> Val<'a> {
    let (Some(info), Some(ty)) = (
        view.stream(s),
        view.type_id(crm_domain::attributes::ATTRIBUTES_SET),
    ) else {
        return Val::Null;
    };
    let mut first: Option<Node<'a>> = None;
    let mut current: Option<Node<'a>> = None;
    for &i in info.events {
        if view.ty_and_global(i).map(|t| t.0) != Some(ty) {
            continue;
        }
        let Some(v) = view
            .payload(i)
            .get(crm_domain::attributes::ATTRIBUTES_FIELD)
            .and_then(|a| a.get(name))
        else {
            continue;
        };
        first.get_or_insert(v);
        if view.occurred_at_of(i).is_some_and(|t| t <= at) {
            current = Some(v);
        }
    }
    current.or(first).map_or(Val::Null, json)
}

/// Most event type names one evaluation remembers (a definition names a handful).
const TYPE_NAMES_MAX: usize = 64;

/// Event types by name as the view numbers them, each looked up in the view once per
/// evaluation: functions such as `has` ask for the same few types for every fact.
#[derive(Debug, Default)]
pub(crate) struct TypeIds {
    known: RefCell<Vec<(Box<str>, Option<u16>)>>,
}

impl TypeIds {
    /// The number of type `name` as `resolve` (the view's index) gives it, asked once per
    /// name (`None`: the view holds no event of that type).
    pub(crate) fn get(&self, name: &str, resolve: impl FnOnce(&str) -> Option<u16>) -> Option<u16> {
        if let Ok(known) = self.known.try_borrow() {
            if let Some((_, id)) = known.iter().find(|(n, _)| **n == *name) {
                return *id;
            }
        }
        let id = resolve(name);
        if let Ok(mut known) = self.known.try_borrow_mut() {
            if known.len() < TYPE_NAMES_MAX {
                known.push((name.into(), id));
            }
        }
        id
    }
}

/// What an expression is evaluated against.
pub(crate) struct Env<'a> {
    pub view: &'a LogView,
    pub params: &'a BTreeMap<String, Param>,
    pub cal: &'a BusinessCalendar,
    /// Inputs of a derived metric.
    pub vars: Option<&'a BTreeMap<String, Option<f64>>>,
    /// Types looked up so far.
    pub types: TypeIds,
}

impl<'a> Env<'a> {
    pub(crate) fn new(
        view: &'a LogView,
        params: &'a BTreeMap<String, Param>,
        cal: &'a BusinessCalendar,
        vars: Option<&'a BTreeMap<String, Option<f64>>>,
    ) -> Env<'a> {
        Env {
            view,
            params,
            cal,
            vars,
            types: TypeIds::default(),
        }
    }

    /// Evaluates `e` for the fact `ev` (an index into the view). The value may borrow from
    /// the view or from `e` (a text literal is not copied).
    pub(crate) fn eval<'e>(&self, ev: Option<u32>, e: &'e Expr) -> Val<'e>
    where
        'a: 'e,
    {
        match e {
            Expr::Lit(l) => match l {
                Lit::Null => Val::Null,
                Lit::Bool(b) => Val::Bool(*b),
                Lit::Int(i) => Val::Int(*i),
                Lit::Float(f) => Val::Float(*f),
                Lit::Str(s) => Val::Str(Cow::Borrowed(s)),
            },
            Expr::List(items) => Val::List(items.iter().map(|x| self.eval(ev, x)).collect()),
            Expr::OccurredAt => ev
                .and_then(|i| self.view.occurred_at_of(i))
                .map_or(Val::Null, Val::Time),
            Expr::RecordedAt => ev
                .and_then(|i| self.view.ev(i))
                .map_or(Val::Null, |f| Val::Time(f.recorded_at)),
            Expr::Now => Val::Time(self.view.now),
            Expr::Var(name) => self
                .vars
                .and_then(|v| v.get(name).copied().flatten())
                .map_or(Val::Null, Val::Float),
            Expr::Path(root, fields) => self.path(ev, *root, fields),
            Expr::Neg(x) => match self.eval(ev, x) {
                Val::Int(i) => i.checked_neg().map_or(Val::Null, Val::Int),
                Val::Float(f) => Val::Float(-f),
                _ => Val::Null,
            },
            Expr::Not(x) => match self.eval(ev, x) {
                Val::Bool(b) => Val::Bool(!b),
                _ => Val::Null,
            },
            Expr::Bin(op, a, b) => self.binary(ev, *op, a, b),
            Expr::Call(name, args) => self.call(ev, name, args),
            Expr::Get(base, fields) => self.get(self.eval(ev, base), fields),
        }
    }

    fn path<'e>(&self, ev: Option<u32>, root: Root, fields: &'e [String]) -> Val<'e>
    where
        'a: 'e,
    {
        let view = self.view;
        let Some((i, stream)) = ev.and_then(|i| Some((i, view.stream_of(i)?))) else {
            return match (root, fields.first()) {
                (Root::Params, Some(p)) => self.param(p),
                _ => Val::Null,
            };
        };
        match root {
            Root::Payload => walk(view.payload(i), fields),
            Root::Meta => walk(view.meta(i), fields),
            Root::Params => fields.first().map_or(Val::Null, |p| self.param(p)),
            Root::Attr => match (fields.first(), view.occurred_at_of(i)) {
                (Some(name), Some(at)) => attribute(view, stream, name, at),
                _ => Val::Null,
            },
            Root::Stream => view
                .stream(stream)
                .and_then(|s| s.creation)
                .map_or(Val::Null, |c| walk(view.payload(c), fields)),
            Root::Event => {
                let Some(f) = fields.first() else {
                    return Val::Null;
                };
                // The type and stream are read from their columns; the rest from the
                // whole event.
                match f.as_str() {
                    "type" => view.ty_and_global(i).map_or(Val::Null, |(ty, _)| {
                        Val::Str(Cow::Borrowed(view.type_name(ty)))
                    }),
                    "stream" => view
                        .stream(stream)
                        .map_or(Val::Null, |s| Val::Str(Cow::Owned(s.name()))),
                    "category" => view
                        .stream(stream)
                        .map_or(Val::Null, |s| Val::Str(Cow::Borrowed(s.category))),
                    "actor" => Val::Str(Cow::Borrowed(view.actor(i))),
                    other => {
                        let Some(fact) = view.ev(i) else {
                            return Val::Null;
                        };
                        match other {
                            "position" => i64::try_from(fact.position).map_or(Val::Null, Val::Int),
                            "version" => i64::try_from(fact.version).map_or(Val::Null, Val::Int),
                            "id" => Val::Str(Cow::Owned(fact.event_id.to_string())),
                            _ => Val::Null,
                        }
                    }
                }
            }
        }
    }

    fn param(&self, name: &str) -> Val<'a> {
        match self.params.get(name) {
            Some(Param::Bool(b)) => Val::Bool(*b),
            Some(Param::Int(i)) => Val::Int(*i),
            Some(Param::Float(f)) => Val::Float(*f),
            Some(Param::Text(s)) => Val::Str(Cow::Borrowed(s)),
            None => Val::Null,
        }
    }

    fn get<'e>(&self, base: Val<'e>, fields: &'e [String]) -> Val<'e>
    where
        'a: 'e,
    {
        let view = self.view;
        match base {
            Val::Event(i) => {
                let Some(e) = view.ev(i) else {
                    return Val::Null;
                };
                match fields.split_first() {
                    Some((f, rest)) if f == "payload" => walk(view.payload(i), rest),
                    Some((f, [])) => match f.as_str() {
                        "occurred_at" => Val::Time(e.occurred_at),
                        "recorded_at" => Val::Time(e.recorded_at),
                        "position" => i64::try_from(e.position).map_or(Val::Null, Val::Int),
                        "type" => Val::Str(Cow::Borrowed(view.type_name(e.ty))),
                        _ => Val::Null,
                    },
                    _ => Val::Null,
                }
            }
            Val::Ref { stream, at } => {
                let Some((first, rest)) = fields.split_first() else {
                    return Val::Null;
                };
                let Some(info) = view.stream(stream) else {
                    return Val::Null;
                };
                if first == "attr" {
                    return match rest {
                        [name] => attribute(view, stream, name, at),
                        _ => Val::Null,
                    };
                }
                if first == "created" {
                    return info
                        .creation
                        .map_or(Val::Null, |c| walk(view.payload(c), rest));
                }
                let value = |i: &u32| view.payload(*i).get(first).filter(|v| !v.is_null());
                // The latest value at or before the fact's time; else the earliest known.
                let chosen = info
                    .events
                    .iter()
                    .rev()
                    .filter(|i| view.occurred_at_of(**i).is_some_and(|t| t <= at))
                    .find_map(value)
                    .or_else(|| info.events.iter().find_map(value));
                chosen.map_or(Val::Null, |v| walk(v, rest))
            }
            Val::Json(v) => walk(v, fields),
            _ => Val::Null,
        }
    }

    fn binary<'e>(&self, ev: Option<u32>, op: BinOp, a: &'e Expr, b: &'e Expr) -> Val<'e>
    where
        'a: 'e,
    {
        match op {
            BinOp::And => {
                return Val::Bool(self.eval(ev, a).truthy() && self.eval(ev, b).truthy());
            }
            BinOp::Or => {
                return Val::Bool(self.eval(ev, a).truthy() || self.eval(ev, b).truthy());
            }
            BinOp::Coalesce => {
                let x = self.eval(ev, a);
                return if x == Val::Null { self.eval(ev, b) } else { x };
            }
            _ => {}
        }
        let (x, y) = (self.eval(ev, a), self.eval(ev, b));
        match op {
            BinOp::Eq => Val::Bool(equal(&x, &y)),
            BinOp::Ne => Val::Bool(!equal(&x, &y)),
            BinOp::Lt => order(&x, &y).map_or(Val::Null, |o| Val::Bool(o == Ordering::Less)),
            BinOp::Le => order(&x, &y).map_or(Val::Null, |o| Val::Bool(o != Ordering::Greater)),
            BinOp::Gt => order(&x, &y).map_or(Val::Null, |o| Val::Bool(o == Ordering::Greater)),
            BinOp::Ge => order(&x, &y).map_or(Val::Null, |o| Val::Bool(o != Ordering::Less)),
            BinOp::In | BinOp::NotIn => {
                let found = match &y {
                    Val::List(items) => items.iter().any(|i| equal(&x, i)),
                    Val::Json(a) if a.is_array() => a.items().any(|i| equal(&x, &json(i))),
                    _ => return Val::Null,
                };
                Val::Bool(found == (op == BinOp::In))
            }
            _ => arith(op, &x, &y),
        }
    }

    fn stream_events(&self, ev: Option<u32>) -> (&'a [u32], u64) {
        let view = self.view;
        ev.and_then(|i| Some((view.stream_of(i)?, view.position_of(i))))
            .and_then(|(s, position)| view.stream(s).map(|s| (s.events, position)))
            .unwrap_or((&[], 0))
    }

    fn call<'e>(&self, ev: Option<u32>, name: &str, args: &'e [Expr]) -> Val<'e>
    where
        'a: 'e,
    {
        let arg = |i: usize| args.get(i).map_or(Val::Null, |a| self.eval(ev, a));
        match name {
            "has" | "later" | "before" | "count" | "first" | "last" | "sum" => {
                let Some(Expr::Lit(Lit::Str(ty))) = args.first() else {
                    return Val::Null;
                };
                let Some(ty) = self.types.get(ty, |n| self.view.type_id(n)) else {
                    return match name {
                        "count" | "sum" => Val::Int(0),
                        "first" | "last" => Val::Null,
                        _ => Val::Bool(false),
                    };
                };
                let (events, at) = self.stream_events(ev);
                let cond = if name == "sum" { None } else { args.get(1) };
                let matches = |i: &&u32| {
                    self.view.ty_and_global(**i).is_some_and(|(t, global)| {
                        t == ty
                            && !global
                            && match name {
                                "later" => self.view.position_of(**i) > at,
                                "before" => self.view.position_of(**i) < at,
                                _ => true,
                            }
                    }) && cond.is_none_or(|c| self.eval(Some(**i), c).truthy())
                };
                match name {
                    "sum" => {
                        let Some(value) = args.get(1) else {
                            return Val::Null;
                        };
                        events
                            .iter()
                            .filter(matches)
                            .try_fold(Val::Int(0), |acc, i| {
                                match arith(BinOp::Add, &acc, &self.eval(Some(*i), value)) {
                                    Val::Null => None,
                                    v => Some(v),
                                }
                            })
                            .unwrap_or(Val::Null)
                    }
                    "count" => Val::Int(
                        i64::try_from(events.iter().filter(matches).count()).unwrap_or(i64::MAX),
                    ),
                    "first" => events
                        .iter()
                        .find(matches)
                        .map_or(Val::Null, |i| Val::Event(*i)),
                    "last" => events
                        .iter()
                        .rev()
                        .find(matches)
                        .map_or(Val::Null, |i| Val::Event(*i)),
                    _ => Val::Bool(events.iter().any(|i| matches(&i))),
                }
            }
            "ref" => {
                let (Some(Expr::Lit(Lit::Str(cat))), key) = (args.first(), arg(1)) else {
                    return Val::Null;
                };
                let key = match key {
                    Val::Str(s) => s.into_owned(),
                    Val::Int(i) => i.to_string(),
                    _ => return Val::Null,
                };
                let at = ev
                    .and_then(|i| self.view.occurred_at_of(i))
                    .unwrap_or(self.view.now);
                self.view
                    .stream_named(&format!("{cat}-{key}"))
                    .map_or(Val::Null, |stream| Val::Ref { stream, at })
            }
            "time" => arg(0).as_time().map_or(Val::Null, Val::Time),
            "sum_field" => {
                let (list, Val::Str(path)) = (arg(0), arg(1)) else {
                    return Val::Null;
                };
                let items = match list {
                    Val::Json(a) if a.is_array() => a,
                    _ => return Val::Null,
                };
                let path: Vec<String> = path.split('.').map(str::to_owned).collect();
                items
                    .items()
                    .try_fold(Val::Int(0), |acc, item| {
                        match arith(BinOp::Add, &acc, &walk(item, &path)) {
                            Val::Null => None,
                            v => Some(v),
                        }
                    })
                    .unwrap_or(Val::Null)
            }
            "date" => arg(0).as_time().map_or(Val::Null, |t| {
                Val::Str(Cow::Owned(t.format("%Y-%m-%d").to_string()))
            }),
            "hour" => arg(0)
                .as_time()
                .map_or(Val::Null, |t| Val::Int(i64::from(t.hour()))),
            "weekday" => arg(0).as_time().map_or(Val::Null, |t| {
                Val::Int(i64::from(t.weekday().number_from_monday()))
            }),
            "days" => arg(0)
                .as_f64()
                .map_or(Val::Null, |s| Val::Float(s / 86_400.0)),
            "hours" => arg(0)
                .as_f64()
                .map_or(Val::Null, |s| Val::Float(s / 3_600.0)),
            "biz_seconds" => match (arg(0).as_time(), arg(1).as_time()) {
                (Some(a), Some(b)) => Val::Int(self.cal.seconds_between(a, b)),
                _ => Val::Null,
            },
            "lower" => match arg(0) {
                Val::Str(s) => Val::Str(Cow::Owned(s.to_lowercase())),
                _ => Val::Null,
            },
            "len" => match arg(0) {
                Val::Str(s) => Val::Int(i64::try_from(s.chars().count()).unwrap_or(i64::MAX)),
                Val::List(l) => Val::Int(i64::try_from(l.len()).unwrap_or(i64::MAX)),
                Val::Json(a) => a.array_len().map_or(Val::Null, |n| {
                    Val::Int(i64::try_from(n).unwrap_or(i64::MAX))
                }),
                _ => Val::Null,
            },
            "exists" => Val::Bool(arg(0) != Val::Null),
            "min" | "max" => {
                let (x, y) = (arg(0), arg(1));
                match order(&x, &y) {
                    Some(o) if (o == Ordering::Greater) == (name == "min") => y,
                    Some(_) => x,
                    None => Val::Null,
                }
            }
            "abs" => match arg(0) {
                Val::Int(i) => i.checked_abs().map_or(Val::Null, Val::Int),
                Val::Float(f) => Val::Float(f.abs()),
                _ => Val::Null,
            },
            _ => Val::Null,
        }
    }
}

fn equal(x: &Val<'_>, y: &Val<'_>) -> bool {
    match (x, y) {
        (Val::Int(a), Val::Int(b)) => a == b,
        (Val::Str(a), Val::Str(b)) => a == b,
        (Val::Time(_), _) | (_, Val::Time(_)) => match (x.as_time(), y.as_time()) {
            (Some(a), Some(b)) => a == b,
            _ => false,
        },
        (Val::Json(a), Val::Json(b)) => a == b,
        _ => match (x.as_f64(), y.as_f64()) {
            (Some(a), Some(b)) if !matches!(x, Val::Bool(_)) && !matches!(y, Val::Bool(_)) => {
                a == b
            }
            _ => x == y,
        },
    }
}

fn order(x: &Val<'_>, y: &Val<'_>) -> Option<Ordering> {
    match (x, y) {
        (Val::Int(a), Val::Int(b)) => Some(a.cmp(b)),
        (Val::Str(a), Val::Str(b)) => Some(a.cmp(b)),
        (Val::Time(_), _) | (_, Val::Time(_)) => Some(x.as_time()?.cmp(&y.as_time()?)),
        _ => x.as_f64()?.partial_cmp(&y.as_f64()?),
    }
}

fn arith<'a>(op: BinOp, x: &Val<'a>, y: &Val<'a>) -> Val<'a> {
    if let (Val::Time(_), _) | (_, Val::Time(_)) = (x, y) {
        return match (op, x, y) {
            (BinOp::Sub, _, Val::Int(s)) => x
                .as_time()
                .and_then(|t| t.checked_sub_signed(Duration::try_seconds(*s)?))
                .map_or(Val::Null, Val::Time),
            (BinOp::Add, _, Val::Int(s)) => x
                .as_time()
                .and_then(|t| t.checked_add_signed(Duration::try_seconds(*s)?))
                .map_or(Val::Null, Val::Time),
            (BinOp::Sub, _, _) => match (x.as_time(), y.as_time()) {
                (Some(a), Some(b)) => Val::Int((a - b).num_seconds()),
                _ => Val::Null,
            },
            _ => Val::Null,
        };
    }
    if let (BinOp::Add, Val::Str(a), Val::Str(b)) = (op, x, y) {
        return Val::Str(Cow::Owned(format!("{a}{b}")));
    }
    if let (Val::Int(a), Val::Int(b)) = (x, y) {
        let r = match op {
            BinOp::Add => a.checked_add(*b),
            BinOp::Sub => a.checked_sub(*b),
            BinOp::Mul => a.checked_mul(*b),
            BinOp::Rem => a.checked_rem(*b),
            BinOp::Div => match a.checked_rem(*b) {
                Some(0) => a.checked_div(*b),
                Some(_) => return Val::Float(i_to_f(i128::from(*a)) / i_to_f(i128::from(*b))),
                None => None,
            },
            _ => None,
        };
        return r.map_or(Val::Null, Val::Int);
    }
    let (Some(a), Some(b)) = (x.as_f64(), y.as_f64()) else {
        return Val::Null;
    };
    let r = match op {
        BinOp::Add => a + b,
        BinOp::Sub => a - b,
        BinOp::Mul => a * b,
        BinOp::Div if b != 0.0 => a / b,
        BinOp::Rem if b != 0.0 => a % b,
        _ => return Val::Null,
    };
    if r.is_finite() {
        Val::Float(r)
    } else {
        Val::Null
    }
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use super::*;

    /// Each name is resolved once; a name the view lacks stays unknown; a literal `Str` is
    /// borrowed, not copied.
    #[test]
    fn type_ids_resolve_each_name_once() {
        let types = TypeIds::default();
        let asked = Cell::new(0);
        let resolve = |n: &str| {
            asked.set(asked.get() + 1);
            match n {
                "OrderPlaced" => Some(3),
                "OrderCancelled" => Some(7),
                _ => None,
            }
        };
        assert_eq!(types.get("OrderPlaced", resolve), Some(3));
        assert_eq!(types.get("OrderCancelled", resolve), Some(7));
        assert_eq!(types.get("Unknown", resolve), None);
        assert_eq!(asked.get(), 3);
        assert_eq!(types.get("OrderPlaced", resolve), Some(3));
        assert_eq!(types.get("Unknown", resolve), None);
        assert_eq!(types.get("OrderCancelled", resolve), Some(7));
        assert_eq!(asked.get(), 3);
        // A prefix is another name.
        assert_eq!(types.get("Order", resolve), None);
        assert_eq!(asked.get(), 4);
    }
}
