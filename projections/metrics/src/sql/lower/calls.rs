//! Functions of the language lowered to SQL: the stream lookups (`has`, `later`, `before`,
//! `count`, `sum`, `first(..)` and `last(..)` fields), `ref(..)` fields and the scalar
//! functions.

use std::collections::BTreeSet;

use crm_domain::DomainEvent;

use super::{truthy, End, Lookup, Lower, Scope, Sql, Ty};
use crate::expr::{Expr, Lit};
use crate::sql::error::NoSqlForm;

impl Lower<'_> {
    /// Registers (or finds) the lookup of `ty` matching `cond` and joins it to `scope`.
    pub(super) fn lookup(
        &mut self,
        scope: &mut Scope<'_>,
        key: &str,
        name: &str,
        ty: &str,
        cond: Option<&Expr>,
        sum: Option<&Expr>,
    ) -> Result<(usize, Option<usize>), NoSqlForm> {
        if !scope.nested {
            return Err(NoSqlForm::construct_at(
                key,
                format!("`{name}(..)` inside a lookup's condition"),
                "a lookup reads the looked-up event alone",
            ));
        }
        if self.layout.get(ty).is_none() {
            return Err(NoSqlForm::construct_at(
                key,
                format!("`{name}('{ty}')`"),
                format!("the export has no columns of `{ty}`"),
            ));
        }
        let types = BTreeSet::from([ty.to_owned()]);
        let params = scope.params;
        let cond = match cond {
            Some(c) => {
                let mut inner = Scope::new("e", types.clone(), params, false);
                Some(truthy(&self.expr(&mut inner, key, c)?))
            }
            None => None,
        };
        let summed = match sum {
            Some(v) => {
                let mut inner = Scope::new("e", types, params, false);
                let v = self.expr(&mut inner, key, v)?;
                Some(match v.ty {
                    Ty::Int | Ty::Float | Ty::Null => v,
                    Ty::Bool => Sql::new(format!("CAST({} AS INTEGER)", v.text), Ty::Float),
                    other => {
                        return Err(NoSqlForm::construct_at(
                            key,
                            format!("`sum('{ty}', ..)` of {}", other.words()),
                            "the engine sums numbers only",
                        ))
                    }
                })
            }
            None => None,
        };
        let index = match self
            .lookups
            .iter()
            .position(|l| l.ty == ty && l.cond == cond)
        {
            Some(i) => i,
            None => {
                self.lookups.push(Lookup {
                    ty: ty.to_owned(),
                    cond,
                    sums: Vec::new(),
                });
                self.lookups.len() - 1
            }
        };
        let sum_index = match (summed, self.lookups.get_mut(index)) {
            (Some(v), Some(l)) => Some(match l.sums.iter().position(|s| *s == v) {
                Some(j) => j,
                None => {
                    l.sums.push(v);
                    l.sums.len() - 1
                }
            }),
            _ => None,
        };
        scope.lookups.insert(index);
        Ok((index, sum_index))
    }

    pub(super) fn call(
        &mut self,
        scope: &mut Scope<'_>,
        key: &str,
        name: &str,
        args: &[Expr],
    ) -> Result<Sql, NoSqlForm> {
        let d = self.dialect;
        if let ("has" | "later" | "before" | "count" | "sum", Some(Expr::Lit(Lit::Str(ty)))) =
            (name, args.first())
        {
            let (cond, sum) = if name == "sum" {
                (None, args.get(1))
            } else {
                (args.get(1), None)
            };
            let (i, j) = self.lookup(scope, key, name, ty, cond, sum)?;
            let l = scope.lookup_alias(i);
            let a = &scope.alias;
            return Ok(match name {
                "has" => Sql::new(format!("({l}.stream_id IS NOT NULL)"), Ty::Bool),
                "later" => Sql::new(
                    format!("COALESCE({l}.last_pos > {a}.position, FALSE)"),
                    Ty::Bool,
                ),
                "before" => Sql::new(
                    format!("COALESCE({l}.first_pos < {a}.position, FALSE)"),
                    Ty::Bool,
                ),
                "count" => Sql::new(format!("COALESCE({l}.n, 0)"), Ty::Int),
                _ => {
                    let j = j.unwrap_or(0);
                    let ty = self
                        .lookups
                        .get(i)
                        .and_then(|l| l.sums.get(j))
                        .map_or(Ty::Int, |s| {
                            if s.ty == Ty::Float {
                                Ty::Float
                            } else {
                                Ty::Int
                            }
                        });
                    Sql::new(
                        format!("(CASE WHEN {l}.stream_id IS NULL THEN 0 ELSE {l}.sum{j} END)"),
                        ty,
                    )
                }
            });
        }
        let arg = |this: &mut Lower<'_>, scope: &mut Scope<'_>, i: usize| match args.get(i) {
            Some(a) => this.expr(scope, key, a),
            None => Ok(Sql::null()),
        };
        Ok(match name {
            "first" | "last" => {
                return Err(NoSqlForm::construct_at(
                    key,
                    format!("`{name}(..)` as a value"),
                    "only its fields (.occurred_at, .payload.x, .position) are translated",
                ))
            }
            "ref" => {
                return Err(NoSqlForm::construct_at(
                    key,
                    "`ref(..)`",
                    "it reads another stream's latest value at the fact's time, a time-ordered lookup",
                ))
            }
            "biz_seconds" => {
                return Err(NoSqlForm::construct_at(
                    key,
                    "`biz_seconds(..)`",
                    "seconds on the business calendar (working hours, weekends, holidays) need the calendar's walk",
                ))
            }
            "sum_field" => {
                return Err(NoSqlForm::construct_at(
                    key,
                    "`sum_field(..)`",
                    "it sums inside a list the export writes as JSON text",
                ))
            }
            "time" => {
                let x = arg(self, scope, 0)?;
                match x.ty {
                    Ty::Time => x,
                    Ty::Stamp => Sql::new(d.epoch_us(&x.text), Ty::Time),
                    Ty::Text => {
                        return Err(NoSqlForm::construct_at(
                            key,
                            "`time(..)` of a text",
                            "the export has no date-time column for it",
                        ))
                    }
                    _ => Sql::null(),
                }
            }
            "date" | "hour" | "weekday" => {
                let x = arg(self, scope, 0)?;
                let us = match x.ty {
                    Ty::Time => x.text,
                    Ty::Stamp => d.epoch_us(&x.text),
                    _ => return Ok(Sql::null()),
                };
                match name {
                    "date" => Sql::new(d.date_text(&us), Ty::Text),
                    "hour" => Sql::new(d.hour(&us), Ty::Int),
                    _ => Sql::new(d.weekday(&us), Ty::Int),
                }
            }
            "days" | "hours" => {
                let x = arg(self, scope, 0)?;
                let per = if name == "days" { 86_400 } else { 3_600 };
                match x.ty {
                    Ty::Int | Ty::Float | Ty::Bool => Sql::new(
                        format!("({} / CAST({per} AS DOUBLE))", self.double(&x)),
                        Ty::Float,
                    ),
                    _ => Sql::null(),
                }
            }
            "lower" => {
                let x = arg(self, scope, 0)?;
                match x.ty {
                    Ty::Text => Sql::new(format!("lower({})", x.text), Ty::Text),
                    _ => Sql::null(),
                }
            }
            "len" => {
                let x = arg(self, scope, 0)?;
                match x.ty {
                    Ty::Text => Sql::new(d.char_length(&x.text), Ty::Int),
                    _ => Sql::null(),
                }
            }
            "exists" => {
                let x = arg(self, scope, 0)?;
                match x.ty {
                    Ty::Null => Sql::new("FALSE", Ty::Bool),
                    _ => Sql::new(format!("({} IS NOT NULL)", x.text), Ty::Bool),
                }
            }
            "min" | "max" => {
                let x = arg(self, scope, 0)?;
                let y = arg(self, scope, 1)?;
                if x.ty == Ty::Null || y.ty == Ty::Null {
                    return Ok(Sql::null());
                }
                let ty = match (x.ty, y.ty) {
                    (Ty::Text, Ty::Text) => Ty::Text,
                    (Ty::Time, Ty::Time) => Ty::Time,
                    (a, b) if a.numeric() && b.numeric() => {
                        if a == b {
                            a
                        } else {
                            Ty::Float
                        }
                    }
                    (a, b) => return Err(Lower::mixed(key, &format!("`{name}(..)`"), a, b)),
                };
                // min: y when x > y, else x; max: x when x > y, else y; null when either is.
                let (when_greater, otherwise) = if name == "min" {
                    (&y.text, &x.text)
                } else {
                    (&x.text, &y.text)
                };
                Sql::new(
                    format!(
                        "(CASE WHEN {} IS NULL OR {} IS NULL THEN NULL WHEN {} > {} THEN {when_greater} ELSE {otherwise} END)",
                        x.text, y.text, x.text, y.text
                    ),
                    ty,
                )
            }
            "abs" => {
                let x = arg(self, scope, 0)?;
                match x.ty {
                    Ty::Int | Ty::Float => Sql::new(format!("abs({})", x.text), x.ty),
                    _ => Sql::null(),
                }
            }
            other => {
                return Err(NoSqlForm::construct_at(
                    key,
                    format!("`{other}(..)`"),
                    "no translation",
                ))
            }
        })
    }

    pub(super) fn get(
        &mut self,
        scope: &mut Scope<'_>,
        key: &str,
        base: &Expr,
        fields: &[String],
    ) -> Result<Sql, NoSqlForm> {
        let d = self.dialect;
        let Expr::Call(name, args) = base else {
            return Err(NoSqlForm::construct_at(
                key,
                "a field of a value",
                "only fields of first(..) and last(..) are translated",
            ));
        };
        let end = match name.as_str() {
            "first" => End::First,
            "last" => End::Last,
            "ref" => return self.reference(scope, key, args, fields),
            other => {
                return Err(NoSqlForm::construct_at(
                    key,
                    format!("a field of `{other}(..)`"),
                    "only fields of first(..) and last(..) are translated",
                ))
            }
        };
        let Some(Expr::Lit(Lit::Str(ty))) = args.first() else {
            return Ok(Sql::null());
        };
        let (i, _) = self.lookup(scope, key, name, ty, args.get(1), None)?;
        scope.ends.insert((i, end));
        let e = scope.end_alias(i, end);
        Ok(match fields.split_first() {
            Some((f, rest)) if f == "payload" => {
                self.payload(key, &e, &BTreeSet::from([ty.clone()]), rest)?
            }
            Some((f, [])) => match f.as_str() {
                "occurred_at" => Sql::new(format!("{e}.occurred_us"), Ty::Time),
                "recorded_at" => Sql::new(format!("{e}.recorded_us"), Ty::Time),
                "position" => Sql::new(
                    format!("CAST({e}.{} AS BIGINT)", d.ident("position")),
                    Ty::Int,
                ),
                "type" => Sql::new(format!("{e}.{}", d.ident("event_type")), Ty::Text),
                _ => Sql::null(),
            },
            _ => Sql::null(),
        })
    }

    /// `ref('category', key).field`: the field's latest non-null value among the referenced
    /// stream's events that occurred by the fact's time, else its earliest one (the event
    /// ranked highest by `position` when it occurred by then, by `-position` otherwise);
    /// `ref(..).created.x`: the referenced stream's creation event's field.
    pub(super) fn reference(
        &mut self,
        scope: &mut Scope<'_>,
        key: &str,
        args: &[Expr],
        fields: &[String],
    ) -> Result<Sql, NoSqlForm> {
        let d = self.dialect;
        if !scope.nested {
            return Err(NoSqlForm::construct_at(
                key,
                "`ref(..)` inside a lookup's condition",
                "a lookup reads the looked-up event alone",
            ));
        }
        let Some(Expr::Lit(Lit::Str(category))) = args.first() else {
            return Ok(Sql::null());
        };
        let k = match args.get(1) {
            Some(e) => self.expr(scope, key, e)?,
            None => Sql::null(),
        };
        let prefix = d.text(&format!("{category}-"));
        let stream = match k.ty {
            Ty::Text => format!("({prefix} || {})", k.text),
            Ty::Int => format!("({prefix} || CAST({} AS {}))", k.text, d.text_type()),
            // The engine names a stream by a text or an integer only.
            _ => return Ok(Sql::null()),
        };
        let types: BTreeSet<String> = DomainEvent::catalog()
            .filter(|(c, _, _)| c == category)
            .map(|(_, t, _)| t.to_owned())
            .collect();
        if types.is_empty() {
            return Err(NoSqlForm::construct_at(
                key,
                format!("`ref('{category}', ..)`"),
                format!("no event type of the domain has the category `{category}`"),
            ));
        }
        let col = |this: &mut Lower<'_>, path: &[String]| this.payload(key, "r", &types, path);
        match fields.split_first() {
            Some((f, _)) if f == "attr" => Err(NoSqlForm::construct_at(
                key,
                "`ref(..).attr.x`",
                "a custom attribute is the stream's value at the fact's time, a time-ordered lookup over AttributesSet events",
            )),
            Some((f, rest)) if f == "created" => {
                let c = col(self, rest)?;
                if c.ty == Ty::Null {
                    return Ok(c);
                }
                Ok(Sql::new(
                    format!(
                        "(SELECT MAX({}) FROM marked r WHERE r.stream_id = {stream} AND r.stream_version = 1)",
                        c.text
                    ),
                    c.ty,
                ))
            }
            Some((f, [])) => {
                let c = col(self, std::slice::from_ref(f))?;
                if c.ty == Ty::Null {
                    return Ok(c);
                }
                let at = format!("{}.occurred_us", scope.alias);
                let rank = format!(
                    "CASE WHEN r.occurred_us <= {at} THEN CAST(r.position AS BIGINT) ELSE -CAST(r.position AS BIGINT) END"
                );
                Ok(Sql::new(
                    format!(
                        "(SELECT max_by({}, {rank}) FROM marked r WHERE r.stream_id = {stream} AND {} IS NOT NULL)",
                        c.text, c.text
                    ),
                    c.ty,
                ))
            }
            _ => Err(NoSqlForm::construct_at(
                key,
                "a field inside an object of another stream",
                "the engine reads the object's latest value as a whole",
            )),
        }
    }
}
