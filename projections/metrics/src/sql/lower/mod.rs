//! Expressions of the definition language lowered to SQL over one row of the kept events,
//! with the engine's semantics (`expr::eval`): a missing value is `NULL`; `==` and `!=` treat
//! two nulls as equal and never yield null; `and`, `or`, `in` yield true or false, never
//! null; a condition holds only when it is true; `??` is `COALESCE`; integer arithmetic stays
//! integral except a division; instants are microseconds since 1970 and `a - b` of two
//! instants is whole seconds, truncated toward zero.
//!
//! Each lowered expression carries a static type. Where the engine's answer would depend on
//! comparing values of different types (text with a number, a boolean with a number), on a
//! value the export does not hold as the engine reads it, or on a construct with no set-based
//! form (`attr.x`, `biz_seconds(..)`), lowering refuses with [`NoSqlForm`]. `ref('c', key).x`
//! is a correlated subquery: `max_by` of the field over the referenced stream's events, ranked
//! so the latest one by the fact's time wins, else the earliest.
//!
//! Stream lookups (`has`, `later`, `before`, `count`, `first`, `last`, `sum`) become one
//! aggregate per stream ([`Lookup`], a CTE `lkN` over the kept events of the type that match
//! the condition and carry no global exclusion) joined to the row by stream; `first(..)` and
//! `last(..)` join the event at that position again to read its fields.

mod calls;

use std::collections::{BTreeMap, BTreeSet};

use crm_domain::DomainEvent;

use super::dialect::{float_literal, Dialect, MICROS_PER_SECOND};
use super::error::NoSqlForm;
use super::layout::{ColumnKind, EventLayout, Resolved};
use crate::definition::Param;
use crate::expr::{BinOp, Expr, Lit, Root};

/// The static type of a lowered expression.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ty {
    /// Always null.
    Null,
    Bool,
    Int,
    Float,
    Text,
    /// An instant: microseconds since 1970 (the engine's `Val::Time`).
    Time,
    /// A payload date-time column: RFC 3339 text to the engine, usable through `time(..)`.
    Stamp,
}

impl Ty {
    fn numeric(self) -> bool {
        matches!(self, Ty::Int | Ty::Float)
    }

    fn words(self) -> &'static str {
        match self {
            Ty::Null => "null",
            Ty::Bool => "a boolean",
            Ty::Int => "an integer",
            Ty::Float => "a number",
            Ty::Text => "a text",
            Ty::Time => "an instant",
            Ty::Stamp => "a date-time text",
        }
    }
}

/// A lowered expression.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Sql {
    pub text: String,
    pub ty: Ty,
}

impl Sql {
    pub(crate) fn new(text: impl Into<String>, ty: Ty) -> Sql {
        Sql {
            text: text.into(),
            ty,
        }
    }

    fn null() -> Sql {
        Sql::new("NULL", Ty::Null)
    }
}

/// Which event of a lookup a `first(..)` / `last(..)` reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum End {
    First,
    Last,
}

/// One per-stream aggregate over the kept events of one type matching a condition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Lookup {
    pub ty: String,
    /// The condition on the looked-up event (SQL over alias `e`), if any.
    pub cond: Option<String>,
    /// Values summed by `sum('T', value)` (SQL over alias `e`), each with its static type.
    pub sums: Vec<Sql>,
}

/// A row being read: its alias, the event types it can be of, and the joins its
/// expressions asked for.
#[derive(Debug, Clone)]
pub(crate) struct Scope<'p> {
    pub alias: String,
    pub types: BTreeSet<String>,
    /// The definition's constants.
    pub params: &'p BTreeMap<String, Param>,
    /// Whether expressions may read the stream (`stream.x`, lookups); false inside a lookup's
    /// own condition.
    pub nested: bool,
    /// The stream's creation event was read (`stream.x`).
    pub creation: bool,
    /// Lookups joined, by index.
    pub lookups: BTreeSet<usize>,
    /// Lookup events joined (`first(..)`, `last(..)` fields).
    pub ends: BTreeSet<(usize, End)>,
}

impl<'p> Scope<'p> {
    pub(crate) fn new(
        alias: &str,
        types: BTreeSet<String>,
        params: &'p BTreeMap<String, Param>,
        nested: bool,
    ) -> Scope<'p> {
        Scope {
            alias: alias.to_owned(),
            types,
            params,
            nested,
            creation: false,
            lookups: BTreeSet::new(),
            ends: BTreeSet::new(),
        }
    }

    fn col(&self, name: &str, d: Dialect) -> String {
        format!("{}.{}", self.alias, d.ident(name))
    }

    pub(crate) fn creation_alias(&self) -> String {
        format!("{}_c", self.alias)
    }

    pub(crate) fn lookup_alias(&self, i: usize) -> String {
        format!("{}_lk{i}", self.alias)
    }

    pub(crate) fn end_alias(&self, i: usize, end: End) -> String {
        match end {
            End::First => format!("{}_lk{i}_first", self.alias),
            End::Last => format!("{}_lk{i}_last", self.alias),
        }
    }

    /// The joins the expressions asked for, to put after `FROM marked <alias>`.
    pub(crate) fn joins(&self) -> String {
        let mut out = String::new();
        let a = &self.alias;
        if self.creation {
            let c = self.creation_alias();
            out.push_str(&format!(
                "\n  LEFT JOIN marked {c} ON {c}.stream_id = {a}.stream_id AND {c}.stream_version = 1"
            ));
        }
        for i in &self.lookups {
            let l = self.lookup_alias(*i);
            out.push_str(&format!(
                "\n  LEFT JOIN lk{i} {l} ON {l}.stream_id = {a}.stream_id"
            ));
        }
        for (i, end) in &self.ends {
            let l = self.lookup_alias(*i);
            let e = self.end_alias(*i, *end);
            let pos = match end {
                End::First => "first_pos",
                End::Last => "last_pos",
            };
            out.push_str(&format!(
                "\n  LEFT JOIN marked {e} ON {e}.position = {l}.{pos}"
            ));
        }
        out
    }
}

/// What lowering gathers over a whole query: the lookups, the payload columns read, whether
/// `now` is read.
#[derive(Debug)]
pub(crate) struct Lower<'a> {
    pub dialect: Dialect,
    pub layout: &'a EventLayout,
    pub lookups: Vec<Lookup>,
    /// Payload columns the kept events must carry, with their types.
    pub columns: BTreeMap<String, ColumnKind>,
    pub uses_now: bool,
    /// Values of the names of a derived formula (its inputs, `period_days`).
    pub vars: BTreeMap<String, Sql>,
}

/// The event types whose events can open a stream of the categories of `types`.
pub(crate) fn creation_types(types: &BTreeSet<String>) -> BTreeSet<String> {
    let categories: BTreeSet<&str> = types
        .iter()
        .filter_map(|t| DomainEvent::category_of(t))
        .collect();
    DomainEvent::catalog()
        .filter(|(c, _, _)| categories.contains(c))
        .map(|(_, t, _)| t.to_owned())
        .collect()
}

/// The value of a lowered condition as the engine's `truthy`: true only when it is true.
pub(crate) fn truthy(s: &Sql) -> String {
    match s.ty {
        Ty::Bool => format!("COALESCE({}, FALSE)", s.text),
        _ => "FALSE".to_owned(),
    }
}

/// The common type of two values the engine can compare or coalesce, if any.
fn common(a: Ty, b: Ty) -> Option<Ty> {
    match (a, b) {
        (Ty::Null, t) | (t, Ty::Null) => Some(t),
        (x, y) if x == y => Some(x),
        (x, y) if x.numeric() && y.numeric() => Some(Ty::Float),
        _ => None,
    }
}

impl Lower<'_> {
    fn mixed(key: &str, what: &str, a: Ty, b: Ty) -> NoSqlForm {
        NoSqlForm::construct_at(
            key,
            what.to_owned(),
            format!(
                "it meets {} and {}, which the engine compares by its own rules",
                a.words(),
                b.words()
            ),
        )
    }

    fn double(&self, s: &Sql) -> String {
        match s.ty {
            Ty::Bool => format!("CAST(CAST({} AS INTEGER) AS DOUBLE)", s.text),
            _ => format!("CAST({} AS DOUBLE)", s.text),
        }
    }

    /// Lowers `e`, read on the row of `scope`.
    pub(crate) fn expr(
        &mut self,
        scope: &mut Scope<'_>,
        key: &str,
        e: &Expr,
    ) -> Result<Sql, NoSqlForm> {
        Ok(match e {
            Expr::Lit(l) => self.lit(l),
            Expr::List(_) => {
                return Err(NoSqlForm::construct_at(
                    key,
                    "a list",
                    "lists are only translated on the right of `in`",
                ))
            }
            Expr::OccurredAt => Sql::new(format!("{}.occurred_us", scope.alias), Ty::Time),
            Expr::RecordedAt => Sql::new(format!("{}.recorded_us", scope.alias), Ty::Time),
            Expr::Now => {
                self.uses_now = true;
                Sql::new("(SELECT now_us FROM head)", Ty::Time)
            }
            Expr::Var(name) => match self.vars.get(name) {
                Some(v) => v.clone(),
                None if name == "business_days" => {
                    return Err(NoSqlForm::construct_at(
                        key,
                        "`business_days`",
                        "the working days of the business calendar in a period need the calendar's walk",
                    ))
                }
                None => {
                    return Err(NoSqlForm::construct_at(
                        key,
                        format!("`{name}`"),
                        "only a derived metric's inputs and period_days are names",
                    ))
                }
            },
            Expr::Path(root, fields) => self.path(scope, key, *root, fields)?,
            Expr::Neg(x) => {
                let x = self.expr(scope, key, x)?;
                match x.ty {
                    Ty::Int | Ty::Float => Sql::new(format!("(-{})", x.text), x.ty),
                    _ => Sql::null(),
                }
            }
            Expr::Not(x) => {
                let x = self.expr(scope, key, x)?;
                match x.ty {
                    Ty::Bool => Sql::new(format!("(NOT {})", x.text), Ty::Bool),
                    _ => Sql::null(),
                }
            }
            Expr::Bin(op, a, b) => self.binary(scope, key, *op, a, b)?,
            Expr::Call(name, args) => self.call(scope, key, name, args)?,
            Expr::Get(base, fields) => self.get(scope, key, base, fields)?,
        })
    }

    fn lit(&self, l: &Lit) -> Sql {
        match l {
            Lit::Null => Sql::null(),
            Lit::Bool(b) => Sql::new(if *b { "TRUE" } else { "FALSE" }, Ty::Bool),
            Lit::Int(i) => Sql::new(format!("CAST({i} AS BIGINT)"), Ty::Int),
            Lit::Float(f) if f.is_finite() => Sql::new(float_literal(*f), Ty::Float),
            Lit::Float(_) => Sql::null(),
            Lit::Str(s) => Sql::new(self.dialect.text(s), Ty::Text),
        }
    }

    fn param(&self, scope: &Scope<'_>, name: &str) -> Sql {
        match scope.params.get(name) {
            Some(Param::Bool(b)) => self.lit(&Lit::Bool(*b)),
            Some(Param::Int(i)) => self.lit(&Lit::Int(*i)),
            Some(Param::Float(f)) => self.lit(&Lit::Float(*f)),
            Some(Param::Text(s)) => self.lit(&Lit::Str(s.clone())),
            None => Sql::null(),
        }
    }

    /// The column of payload path `fields` on a row of `types` read through `alias`.
    fn payload(
        &mut self,
        key: &str,
        alias: &str,
        types: &BTreeSet<String>,
        fields: &[String],
    ) -> Result<Sql, NoSqlForm> {
        if fields.is_empty() {
            return Err(NoSqlForm::construct_at(
                key,
                "the whole payload",
                "the export has one column per field, not the payload as one value",
            ));
        }
        match self.layout.resolve(key, types, fields)? {
            Resolved::Absent => Ok(Sql::null()),
            Resolved::Column(name, kind) => {
                let ty = match kind {
                    ColumnKind::Text => Ty::Text,
                    ColumnKind::Int => Ty::Int,
                    ColumnKind::Float => Ty::Float,
                    ColumnKind::Bool => Ty::Bool,
                    ColumnKind::Timestamp => Ty::Stamp,
                    ColumnKind::Date | ColumnKind::Json => {
                        return Err(NoSqlForm::Column {
                            key: key.to_owned(),
                            path: fields.join("."),
                            why: "has no typed column".to_owned(),
                        })
                    }
                };
                let text = format!("{alias}.{}", self.dialect.ident(&name));
                self.columns.insert(name, kind);
                Ok(Sql::new(text, ty))
            }
        }
    }

    fn path(
        &mut self,
        scope: &mut Scope<'_>,
        key: &str,
        root: Root,
        fields: &[String],
    ) -> Result<Sql, NoSqlForm> {
        let d = self.dialect;
        match root {
            Root::Payload => {
                let types = scope.types.clone();
                self.payload(key, &scope.alias.clone(), &types, fields)
            }
            Root::Stream => {
                if !scope.nested {
                    return Err(NoSqlForm::construct_at(
                        key,
                        "`stream.x` inside a lookup's condition",
                        "a lookup reads the looked-up event alone",
                    ));
                }
                scope.creation = true;
                let types = creation_types(&scope.types);
                self.payload(key, &scope.creation_alias(), &types, fields)
            }
            Root::Params => Ok(fields
                .first()
                .map_or_else(Sql::null, |p| self.param(scope, p))),
            Root::Meta => Err(NoSqlForm::construct_at(
                key,
                "`meta.x`",
                "the export has no column of the events' metadata",
            )),
            Root::Attr => Err(NoSqlForm::construct_at(
                key,
                "`attr.x`",
                "a custom attribute is the stream's value at the fact's time, a time-ordered lookup over AttributesSet events",
            )),
            Root::Event => {
                let Some(f) = fields.first() else {
                    return Ok(Sql::null());
                };
                Ok(match f.as_str() {
                    "type" => Sql::new(scope.col("event_type", d), Ty::Text),
                    "stream" => Sql::new(scope.col("stream_id", d), Ty::Text),
                    "category" => Sql::new(scope.col("stream_category", d), Ty::Text),
                    "position" => Sql::new(
                        format!("CAST({} AS BIGINT)", scope.col("position", d)),
                        Ty::Int,
                    ),
                    "version" => Sql::new(
                        format!("CAST({} AS BIGINT)", scope.col("stream_version", d)),
                        Ty::Int,
                    ),
                    "id" => Sql::new(scope.col("event_id", d), Ty::Text),
                    "actor" => Sql::new(scope.col("actor", d), Ty::Text),
                    _ => Sql::null(),
                })
            }
        }
    }

    fn binary(
        &mut self,
        scope: &mut Scope<'_>,
        key: &str,
        op: BinOp,
        a: &Expr,
        b: &Expr,
    ) -> Result<Sql, NoSqlForm> {
        if let (BinOp::In | BinOp::NotIn, Expr::List(items)) = (op, b) {
            let x = self.expr(scope, key, a)?;
            return self.member(scope, key, op == BinOp::In, &x, items);
        }
        if matches!(op, BinOp::In | BinOp::NotIn) {
            return Err(NoSqlForm::construct_at(
                key,
                "`in` over a value that is not a written list",
                "only `x in [a, b]` is translated",
            ));
        }
        let x = self.expr(scope, key, a)?;
        let y = self.expr(scope, key, b)?;
        let d = self.dialect;
        Ok(match op {
            BinOp::And => Sql::new(format!("({} AND {})", truthy(&x), truthy(&y)), Ty::Bool),
            BinOp::Or => Sql::new(format!("({} OR {})", truthy(&x), truthy(&y)), Ty::Bool),
            BinOp::Coalesce => {
                let ty = common(x.ty, y.ty).ok_or_else(|| Lower::mixed(key, "`??`", x.ty, y.ty))?;
                if ty == Ty::Stamp {
                    return Err(Lower::mixed(key, "`??`", x.ty, y.ty));
                }
                match (x.ty, y.ty) {
                    (Ty::Null, _) => y,
                    (_, Ty::Null) => x,
                    _ => Sql::new(format!("COALESCE({}, {})", x.text, y.text), ty),
                }
            }
            BinOp::Eq | BinOp::Ne => {
                let eq = self.equal(key, &x, &y)?;
                if op == BinOp::Eq {
                    eq
                } else {
                    Sql::new(format!("(NOT {})", eq.text), Ty::Bool)
                }
            }
            BinOp::Lt | BinOp::Le | BinOp::Gt | BinOp::Ge => {
                let sym = match op {
                    BinOp::Lt => "<",
                    BinOp::Le => "<=",
                    BinOp::Gt => ">",
                    _ => ">=",
                };
                if x.ty == Ty::Null || y.ty == Ty::Null {
                    return Ok(Sql::null());
                }
                let ok = matches!((x.ty, y.ty), (Ty::Text, Ty::Text) | (Ty::Time, Ty::Time))
                    || (x.ty.numeric() && y.ty.numeric());
                if !ok {
                    return Err(Lower::mixed(key, &format!("`{sym}`"), x.ty, y.ty));
                }
                Sql::new(format!("({} {sym} {})", x.text, y.text), Ty::Bool)
            }
            BinOp::Add | BinOp::Sub | BinOp::Mul | BinOp::Div | BinOp::Rem => {
                self.arith(key, op, &x, &y, d)?
            }
            BinOp::In | BinOp::NotIn => Sql::null(),
        })
    }

    /// `x == y` as the engine's `equal`: two nulls are equal, never null.
    fn equal(&self, key: &str, x: &Sql, y: &Sql) -> Result<Sql, NoSqlForm> {
        Ok(match (x.ty, y.ty) {
            (Ty::Null, Ty::Null) => Sql::new("TRUE", Ty::Bool),
            (Ty::Null, _) => Sql::new(format!("({} IS NULL)", y.text), Ty::Bool),
            (_, Ty::Null) => Sql::new(format!("({} IS NULL)", x.text), Ty::Bool),
            (a, b) if a == b && a != Ty::Stamp => {
                Sql::new(self.dialect.null_safe_eq(&x.text, &y.text), Ty::Bool)
            }
            (a, b) if a.numeric() && b.numeric() => Sql::new(
                self.dialect.null_safe_eq(&self.double(x), &self.double(y)),
                Ty::Bool,
            ),
            (a, b) => return Err(Lower::mixed(key, "`==`", a, b)),
        })
    }

    fn member(
        &mut self,
        scope: &mut Scope<'_>,
        key: &str,
        is_in: bool,
        x: &Sql,
        items: &[Expr],
    ) -> Result<Sql, NoSqlForm> {
        let mut values = Vec::new();
        let mut null_item = false;
        for item in items {
            let v = self.expr(scope, key, item)?;
            match v.ty {
                Ty::Null => null_item = true,
                t if x.ty == Ty::Null || common(x.ty, t).is_some_and(|c| c != Ty::Stamp) => {
                    values.push(v)
                }
                t => return Err(Lower::mixed(key, "`in`", x.ty, t)),
            }
        }
        let found = if x.ty == Ty::Null {
            if null_item {
                "TRUE".to_owned()
            } else {
                "FALSE".to_owned()
            }
        } else {
            let mut parts = Vec::new();
            if !values.is_empty() {
                let list: Vec<&str> = values.iter().map(|v| v.text.as_str()).collect();
                parts.push(format!(
                    "COALESCE({} IN ({}), FALSE)",
                    x.text,
                    list.join(", ")
                ));
            }
            if null_item {
                parts.push(format!("({} IS NULL)", x.text));
            }
            if parts.is_empty() {
                "FALSE".to_owned()
            } else {
                format!("({})", parts.join(" OR "))
            }
        };
        Ok(if is_in {
            Sql::new(found, Ty::Bool)
        } else {
            Sql::new(format!("(NOT {found})"), Ty::Bool)
        })
    }

    fn arith(&self, key: &str, op: BinOp, x: &Sql, y: &Sql, d: Dialect) -> Result<Sql, NoSqlForm> {
        let sym = match op {
            BinOp::Add => "+",
            BinOp::Sub => "-",
            BinOp::Mul => "*",
            BinOp::Div => "/",
            _ => "%",
        };
        if x.ty == Ty::Stamp || y.ty == Ty::Stamp {
            return Err(NoSqlForm::construct_at(
                key,
                format!("`{sym}` on a date-time text"),
                "write time(..) around it",
            ));
        }
        if x.ty == Ty::Time || y.ty == Ty::Time {
            return Ok(match (op, x.ty, y.ty) {
                (BinOp::Add | BinOp::Sub, Ty::Time, Ty::Int) => Sql::new(
                    format!("({} {sym} {} * {MICROS_PER_SECOND})", x.text, y.text),
                    Ty::Time,
                ),
                (BinOp::Sub, Ty::Time, Ty::Time) => Sql::new(
                    d.int_div(
                        &format!("({} - {})", x.text, y.text),
                        &MICROS_PER_SECOND.to_string(),
                    ),
                    Ty::Int,
                ),
                // The engine gives null for any other arithmetic on an instant.
                _ => Sql::null(),
            });
        }
        if x.ty == Ty::Null || y.ty == Ty::Null {
            return Ok(Sql::null());
        }
        if x.ty == Ty::Text || y.ty == Ty::Text {
            return match (op, x.ty, y.ty) {
                (BinOp::Add, Ty::Text, Ty::Text) => {
                    Ok(Sql::new(format!("({} || {})", x.text, y.text), Ty::Text))
                }
                _ => Err(Lower::mixed(key, &format!("`{sym}`"), x.ty, y.ty)),
            };
        }
        if x.ty == Ty::Int && y.ty == Ty::Int {
            return Ok(match op {
                BinOp::Div => Sql::new(
                    format!("(CAST({} AS DOUBLE) / NULLIF({}, 0))", x.text, y.text),
                    Ty::Float,
                ),
                BinOp::Rem => Sql::new(format!("({} % NULLIF({}, 0))", x.text, y.text), Ty::Int),
                _ => Sql::new(format!("({} {sym} {})", x.text, y.text), Ty::Int),
            });
        }
        // Numbers and booleans (as 0 and 1) meet as floats.
        let (a, b) = (self.double(x), self.double(y));
        Ok(match op {
            BinOp::Div | BinOp::Rem => Sql::new(format!("({a} {sym} NULLIF({b}, 0))"), Ty::Float),
            _ => Sql::new(format!("({a} {sym} {b})"), Ty::Float),
        })
    }
}
