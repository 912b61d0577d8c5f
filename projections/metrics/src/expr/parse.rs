//! Lexer and recursive-descent parser of the expression language (grammar in the parent
//! module). Errors name the character offset and what was expected.

use super::{BinOp, Expr, ExprError, Lit, Root};

/// Longest expression text accepted.
pub(crate) const EXPR_SIZE_MAX_BYTES: usize = 4_096;
/// Deepest nesting accepted (parentheses, calls, operators).
const DEPTH_MAX: usize = 64;

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Num(Lit),
    Str(String),
    Ident(String),
    Sym(&'static str),
}

fn lex(text: &str) -> Result<Vec<(usize, Tok)>, ExprError> {
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while let Some(&c) = bytes.get(i) {
        if c.is_ascii_whitespace() {
            i += 1;
            continue;
        }
        let start = i;
        if c.is_ascii_digit() {
            while bytes
                .get(i)
                .is_some_and(|b| b.is_ascii_digit() || *b == b'.')
            {
                i += 1;
            }
            let number = &text[start..i];
            let unit = match bytes.get(i) {
                Some(b's') => Some(1),
                Some(b'm') => Some(60),
                Some(b'h') => Some(3_600),
                Some(b'd') => Some(86_400),
                Some(b'w') => Some(604_800),
                _ => None,
            };
            let lit = if let Some(scale) = unit {
                if bytes.get(i + 1).is_some_and(|b| b.is_ascii_alphanumeric()) {
                    return Err(ExprError::BadNumber { at: start });
                }
                i += 1;
                let n: i64 = number.parse().map_err(|_| ExprError::DurationNotWhole {
                    text: text[start..i].to_owned(),
                    at: start,
                })?;
                Lit::Int(
                    n.checked_mul(scale)
                        .ok_or(ExprError::DurationTooLarge { at: start })?,
                )
            } else if number.contains('.') {
                Lit::Float(number.parse().map_err(|_| ExprError::Unreadable {
                    text: number.to_owned(),
                    at: start,
                })?)
            } else {
                Lit::Int(number.parse().map_err(|_| ExprError::NumberTooLarge {
                    text: number.to_owned(),
                    at: start,
                })?)
            };
            out.push((start, Tok::Num(lit)));
            continue;
        }
        if c == b'\'' || c == b'"' {
            i += 1;
            let body_start = i;
            while bytes.get(i).is_some_and(|b| *b != c) {
                i += 1;
            }
            if i >= bytes.len() {
                return Err(ExprError::UnclosedText { at: start });
            }
            out.push((start, Tok::Str(text[body_start..i].to_owned())));
            i += 1;
            continue;
        }
        if c.is_ascii_alphabetic() || c == b'_' {
            while bytes
                .get(i)
                .is_some_and(|b| b.is_ascii_alphanumeric() || *b == b'_')
            {
                i += 1;
            }
            out.push((start, Tok::Ident(text[start..i].to_owned())));
            continue;
        }
        let two = text.get(i..i + 2).unwrap_or("");
        let sym = match two {
            "==" => Some("=="),
            "!=" => Some("!="),
            "<=" => Some("<="),
            ">=" => Some(">="),
            "??" => Some("??"),
            "&&" => Some("and"),
            "||" => Some("or"),
            _ => None,
        };
        if let Some(s) = sym {
            out.push((start, Tok::Sym(s)));
            i += 2;
            continue;
        }
        let one = match c {
            b'+' => "+",
            b'-' => "-",
            b'*' => "*",
            b'/' => "/",
            b'%' => "%",
            b'<' => "<",
            b'>' => ">",
            b'(' => "(",
            b')' => ")",
            b'[' => "[",
            b']' => "]",
            b',' => ",",
            b'.' => ".",
            b'!' => "not",
            _ => {
                return Err(ExprError::UnexpectedCharacter {
                    found: char::from(c),
                    at: start,
                })
            }
        };
        out.push((start, Tok::Sym(one)));
        i += 1;
    }
    Ok(out)
}

struct Parser {
    toks: Vec<(usize, Tok)>,
    at: usize,
    depth: usize,
    len: usize,
}

/// Parses an expression.
pub(crate) fn parse(text: &str) -> Result<Expr, ExprError> {
    if text.len() > EXPR_SIZE_MAX_BYTES {
        return Err(ExprError::TooLong {
            size_bytes: text.len(),
            limit: EXPR_SIZE_MAX_BYTES,
        });
    }
    let toks = lex(text)?;
    if toks.is_empty() {
        return Err(ExprError::Empty);
    }
    let mut p = Parser {
        toks,
        at: 0,
        depth: 0,
        len: text.len(),
    };
    let e = p.coalesce()?;
    if let Some((pos, t)) = p.toks.get(p.at) {
        return Err(ExprError::Unexpected {
            found: show(t),
            at: *pos,
        });
    }
    super::check_calls(&e)?;
    Ok(e)
}

fn show(t: &Tok) -> String {
    match t {
        Tok::Num(_) => "number".into(),
        Tok::Str(s) => format!("text '{s}'"),
        Tok::Ident(s) => format!("`{s}`"),
        Tok::Sym(s) => format!("`{s}`"),
    }
}

impl Parser {
    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.at).map(|(_, t)| t)
    }

    fn pos(&self) -> usize {
        self.toks.get(self.at).map_or(self.len, |(p, _)| *p)
    }

    fn eat_sym(&mut self, s: &str) -> bool {
        if matches!(self.peek(), Some(Tok::Sym(x)) if *x == s) {
            self.at += 1;
            true
        } else {
            false
        }
    }

    fn eat_word(&mut self, w: &str) -> bool {
        if matches!(self.peek(), Some(Tok::Ident(x)) if x == w) {
            self.at += 1;
            true
        } else {
            false
        }
    }

    fn expect_sym(&mut self, s: &'static str) -> Result<(), ExprError> {
        if self.eat_sym(s) {
            Ok(())
        } else {
            Err(ExprError::Expected {
                expected: s,
                at: self.pos(),
            })
        }
    }

    fn enter(&mut self) -> Result<(), ExprError> {
        self.depth += 1;
        if self.depth > DEPTH_MAX {
            return Err(ExprError::TooDeep {
                at: self.pos(),
                limit: DEPTH_MAX,
            });
        }
        Ok(())
    }

    fn coalesce(&mut self) -> Result<Expr, ExprError> {
        self.enter()?;
        let mut left = self.or()?;
        while self.eat_sym("??") {
            let right = self.or()?;
            left = Expr::Bin(BinOp::Coalesce, Box::new(left), Box::new(right));
        }
        self.depth -= 1;
        Ok(left)
    }

    fn or(&mut self) -> Result<Expr, ExprError> {
        let mut left = self.and()?;
        while self.eat_word("or") || self.eat_sym("or") {
            let right = self.and()?;
            left = Expr::Bin(BinOp::Or, Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn and(&mut self) -> Result<Expr, ExprError> {
        let mut left = self.not()?;
        while self.eat_word("and") || self.eat_sym("and") {
            let right = self.not()?;
            left = Expr::Bin(BinOp::And, Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn not(&mut self) -> Result<Expr, ExprError> {
        if self.eat_word("not") || self.eat_sym("not") {
            self.enter()?;
            let e = self.not()?;
            self.depth -= 1;
            return Ok(Expr::Not(Box::new(e)));
        }
        self.cmp()
    }

    fn cmp(&mut self) -> Result<Expr, ExprError> {
        let left = self.add()?;
        let op = match self.peek() {
            Some(Tok::Sym("==")) => Some(BinOp::Eq),
            Some(Tok::Sym("!=")) => Some(BinOp::Ne),
            Some(Tok::Sym("<")) => Some(BinOp::Lt),
            Some(Tok::Sym("<=")) => Some(BinOp::Le),
            Some(Tok::Sym(">")) => Some(BinOp::Gt),
            Some(Tok::Sym(">=")) => Some(BinOp::Ge),
            Some(Tok::Ident(w)) if w == "in" => Some(BinOp::In),
            Some(Tok::Ident(w)) if w == "not" => {
                if matches!(self.toks.get(self.at + 1), Some((_, Tok::Ident(w))) if w == "in") {
                    self.at += 1;
                    Some(BinOp::NotIn)
                } else {
                    None
                }
            }
            _ => None,
        };
        let Some(op) = op else {
            return Ok(left);
        };
        self.at += 1;
        let right = self.add()?;
        Ok(Expr::Bin(op, Box::new(left), Box::new(right)))
    }

    fn add(&mut self) -> Result<Expr, ExprError> {
        let mut left = self.mul()?;
        loop {
            let op = if self.eat_sym("+") {
                BinOp::Add
            } else if self.eat_sym("-") {
                BinOp::Sub
            } else {
                return Ok(left);
            };
            let right = self.mul()?;
            left = Expr::Bin(op, Box::new(left), Box::new(right));
        }
    }

    fn mul(&mut self) -> Result<Expr, ExprError> {
        let mut left = self.unary()?;
        loop {
            let op = if self.eat_sym("*") {
                BinOp::Mul
            } else if self.eat_sym("/") {
                BinOp::Div
            } else if self.eat_sym("%") {
                BinOp::Rem
            } else {
                return Ok(left);
            };
            let right = self.unary()?;
            left = Expr::Bin(op, Box::new(left), Box::new(right));
        }
    }

    fn unary(&mut self) -> Result<Expr, ExprError> {
        if self.eat_sym("-") {
            self.enter()?;
            let e = self.unary()?;
            self.depth -= 1;
            return Ok(Expr::Neg(Box::new(e)));
        }
        self.postfix()
    }

    fn fields(&mut self) -> Result<Vec<String>, ExprError> {
        let mut fields = Vec::new();
        while self.eat_sym(".") {
            match self.toks.get(self.at) {
                Some((_, Tok::Ident(name))) => {
                    fields.push(name.clone());
                    self.at += 1;
                }
                _ => return Err(ExprError::FieldNameExpected { at: self.pos() }),
            }
        }
        Ok(fields)
    }

    fn postfix(&mut self) -> Result<Expr, ExprError> {
        let e = self.primary()?;
        if matches!(e, Expr::Call(..) | Expr::Var(_)) && matches!(self.peek(), Some(Tok::Sym(".")))
        {
            let fields = self.fields()?;
            return Ok(Expr::Get(Box::new(e), fields));
        }
        Ok(e)
    }

    fn primary(&mut self) -> Result<Expr, ExprError> {
        let pos = self.pos();
        let Some((_, tok)) = self.toks.get(self.at).cloned() else {
            return Err(ExprError::EndsEarly { at: self.len });
        };
        self.at += 1;
        match tok {
            Tok::Num(lit) => Ok(Expr::Lit(lit)),
            Tok::Str(s) => Ok(Expr::Lit(Lit::Str(s))),
            Tok::Sym("(") => {
                let e = self.coalesce()?;
                self.expect_sym(")")?;
                Ok(e)
            }
            Tok::Sym("[") => {
                let mut items = Vec::new();
                if !self.eat_sym("]") {
                    loop {
                        items.push(self.coalesce()?);
                        if self.eat_sym("]") {
                            break;
                        }
                        self.expect_sym(",")?;
                    }
                }
                Ok(Expr::List(items))
            }
            Tok::Ident(name) => self.ident(name, pos),
            Tok::Sym(s) => Err(ExprError::Unexpected {
                found: format!("`{s}`"),
                at: pos,
            }),
        }
    }

    fn ident(&mut self, name: String, pos: usize) -> Result<Expr, ExprError> {
        match name.as_str() {
            "true" => return Ok(Expr::Lit(Lit::Bool(true))),
            "false" => return Ok(Expr::Lit(Lit::Bool(false))),
            "null" => return Ok(Expr::Lit(Lit::Null)),
            "occurred_at" => return Ok(Expr::OccurredAt),
            "recorded_at" => return Ok(Expr::RecordedAt),
            "now" => return Ok(Expr::Now),
            _ => {}
        }
        let root = match name.as_str() {
            "payload" => Some(Root::Payload),
            "stream" => Some(Root::Stream),
            "meta" => Some(Root::Meta),
            "params" => Some(Root::Params),
            "event" => Some(Root::Event),
            "attr" => Some(Root::Attr),
            _ => None,
        };
        if let Some(root) = root {
            let fields = self.fields()?;
            if root == Root::Event {
                const EVENT_FIELDS: &[&str] = &[
                    "type", "stream", "category", "position", "version", "id", "actor",
                ];
                match fields.as_slice() {
                    [f] if EVENT_FIELDS.contains(&f.as_str()) => {}
                    _ => {
                        return Err(ExprError::EventField {
                            at: pos,
                            fields: EVENT_FIELDS,
                        })
                    }
                }
            }
            if root == Root::Attr {
                match fields.as_slice() {
                    [f] if crm_domain::attributes::valid_name(f) => {}
                    _ => return Err(ExprError::AttributeName { at: pos }),
                }
            }
            if fields.is_empty() && root != Root::Payload && root != Root::Stream {
                return Err(ExprError::FieldNeeded { name, at: pos });
            }
            return Ok(Expr::Path(root, fields));
        }
        if self.eat_sym("(") {
            self.enter()?;
            let mut args = Vec::new();
            if !self.eat_sym(")") {
                loop {
                    args.push(self.coalesce()?);
                    if self.eat_sym(")") {
                        break;
                    }
                    self.expect_sym(",")?;
                }
            }
            self.depth -= 1;
            return Ok(Expr::Call(name, args));
        }
        Ok(Expr::Var(name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_precedence_and_paths() {
        let e =
            parse("payload.kind in ['new', 'expansion'] and not has('OpportunityVoided')").unwrap();
        assert!(matches!(e, Expr::Bin(BinOp::And, _, _)));
        let e = parse("1 + 2 * 3").unwrap();
        assert_eq!(
            e,
            Expr::Bin(
                BinOp::Add,
                Box::new(Expr::Lit(Lit::Int(1))),
                Box::new(Expr::Bin(
                    BinOp::Mul,
                    Box::new(Expr::Lit(Lit::Int(2))),
                    Box::new(Expr::Lit(Lit::Int(3)))
                ))
            )
        );
        assert_eq!(parse("30d").unwrap(), Expr::Lit(Lit::Int(30 * 86_400)));
        assert!(matches!(
            parse("first('CaseOpened').occurred_at").unwrap(),
            Expr::Get(_, _)
        ));
        assert!(matches!(
            parse("a not in [1]").unwrap(),
            Expr::Bin(BinOp::NotIn, _, _)
        ));
    }

    #[test]
    fn reports_errors_with_position() {
        assert!(parse("payload.x ==")
            .unwrap_err()
            .to_string()
            .contains("ends too early"));
        assert!(parse("frobnicate(1)")
            .unwrap_err()
            .to_string()
            .contains("unknown function"));
        assert!(parse("has(payload.x)")
            .unwrap_err()
            .to_string()
            .contains("quoted name"));
        assert!(parse("'open")
            .unwrap_err()
            .to_string()
            .contains("not closed"));
        assert!(parse("event.nope")
            .unwrap_err()
            .to_string()
            .contains("takes one of"));
        assert!(parse("1 2")
            .unwrap_err()
            .to_string()
            .contains("character 2"));
    }

    #[test]
    fn errors_are_typed_with_their_position() {
        assert_eq!(
            parse("1 2"),
            Err(ExprError::Unexpected {
                found: "number".into(),
                at: 2
            })
        );
        assert_eq!(parse("(1").unwrap_err().position(), Some(2));
        assert_eq!(parse("x.").unwrap_err().position(), Some(2));
        assert_eq!(parse("has(1)").unwrap_err().position(), None);
        let e = crate::DefinitionError::Expression {
            key: "facts.where".into(),
            text: "a ==".into(),
            reason: parse("a ==").unwrap_err(),
        };
        assert_eq!(
            e.to_string(),
            "`facts.where`: cannot parse expression \"a ==\": expression ends too early"
        );
    }
}
