//! Order: a one-off purchase with its invoices, payments, overdue notices and refunds.
//!
//! Rules: an order has 1..=[`ORDER_LINES_MAX`] lines in one currency, quantities of at least 1,
//! non-negative line amounts and costs; invoices are only issued on an order that is not
//! cancelled and never exceed the order total in sum; a payment goes to an issued invoice and
//! never exceeds its open balance; a refund never exceeds what was paid (net of earlier
//! refunds); an order is cancelled at most once. Payments and refunds stay possible after a
//! cancellation (money still moves).

use std::collections::BTreeMap;

use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};

use crate::aggregate::Aggregate;
use crate::values::{
    AccountId, CampaignId, Currency, InvoiceId, Label, Money, MoneyError, OpportunityId, OrderId,
    ProductId, SalesChannel,
};

/// Most lines accepted on one order (a wholesale invoice can run past a thousand lines: the
/// UCI retail export has one of 1,114).
pub const ORDER_LINES_MAX: usize = 10_000;

/// Most lines one event records. An event must stay small (the log caps one at 64 KiB), so
/// [`OrderPlaced`] records the first lines of a longer order and [`OrderLinesRecorded`]
/// events, decided and appended with it, the rest: 200 lines of the longest ids and amounts
/// take about 40 KiB.
pub const ORDER_LINES_PER_EVENT: usize = 200;

/// One line of an order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OrderLine {
    pub product: ProductId,
    /// At least 1.
    pub quantity: u32,
    /// Line total, net of tax.
    pub amount: Money,
    /// Our cost for the line (for margin), when known.
    pub cost: Option<Money>,
}

// ---------------------------------------------------------------------------------------------
// Commands

/// Place an order (creation).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct PlaceOrder {
    pub order_id: OrderId,
    pub account_id: AccountId,
    pub lines: Vec<OrderLine>,
    pub channel: SalesChannel,
    pub campaign: Option<CampaignId>,
    /// Set when the order fulfils a won opportunity (then it is not a separate purchase).
    pub opportunity: Option<OpportunityId>,
    pub is_test: bool,
    #[serde(deserialize_with = "crate::values::instant::deserialize")]
    pub occurred_at: DateTime<Utc>,
}

/// Cancel the order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct CancelOrder {
    pub order_id: OrderId,
    pub reason: Label,
    #[serde(deserialize_with = "crate::values::instant::deserialize")]
    pub occurred_at: DateTime<Utc>,
}

/// Issue an invoice for (part of) the order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct IssueInvoice {
    pub order_id: OrderId,
    pub invoice_id: InvoiceId,
    pub amount: Money,
    pub due_on: NaiveDate,
    #[serde(deserialize_with = "crate::values::instant::deserialize")]
    pub occurred_at: DateTime<Utc>,
}

/// Record a payment against an invoice.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct RecordPayment {
    pub order_id: OrderId,
    pub invoice_id: InvoiceId,
    pub amount: Money,
    #[serde(deserialize_with = "crate::values::instant::deserialize")]
    pub occurred_at: DateTime<Utc>,
}

/// Record that an invoice is overdue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct RecordPaymentOverdue {
    pub order_id: OrderId,
    pub invoice_id: InvoiceId,
    pub days_overdue: u32,
    #[serde(deserialize_with = "crate::values::instant::deserialize")]
    pub occurred_at: DateTime<Utc>,
}

/// Refund money to the customer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct RefundOrder {
    pub order_id: OrderId,
    pub amount: Money,
    /// Cost we get back (returned goods), when any.
    pub cost_reversed: Option<Money>,
    pub reason: Label,
    #[serde(deserialize_with = "crate::values::instant::deserialize")]
    pub occurred_at: DateTime<Utc>,
}

command_enum! {
    /// Commands of the order aggregate.
    pub enum OrderCommand {
        id: order_id: OrderId,
        commands: { PlaceOrder, CancelOrder, IssueInvoice, RecordPayment, RecordPaymentOverdue, RefundOrder }
    }
}

// ---------------------------------------------------------------------------------------------
// Events

/// An order was placed. Creation event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OrderPlaced {
    pub order_id: OrderId,
    pub account_id: AccountId,
    /// The order's lines, or for an order of more than [`ORDER_LINES_PER_EVENT`] lines its
    /// first ones: the rest follow in [`OrderLinesRecorded`] events appended with this one.
    pub lines: Vec<OrderLine>,
    /// Sum of the amounts of all the order's lines (also those recorded by
    /// [`OrderLinesRecorded`]).
    pub total: Money,
    pub channel: SalesChannel,
    pub campaign: Option<CampaignId>,
    pub opportunity: Option<OpportunityId>,
    pub is_test: bool,
    #[serde(deserialize_with = "crate::values::instant::deserialize")]
    pub occurred_at: DateTime<Utc>,
}

/// More lines of an order placed with more than [`ORDER_LINES_PER_EVENT`] lines, in the
/// order given, appended with its [`OrderPlaced`] (same command, same time). Carries no
/// amount of its own: the order's `total` already counts these lines.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OrderLinesRecorded {
    pub order_id: OrderId,
    pub lines: Vec<OrderLine>,
    #[serde(deserialize_with = "crate::values::instant::deserialize")]
    pub occurred_at: DateTime<Utc>,
}

/// The order was cancelled.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OrderCancelled {
    pub order_id: OrderId,
    pub reason: Label,
    #[serde(deserialize_with = "crate::values::instant::deserialize")]
    pub occurred_at: DateTime<Utc>,
}

/// An invoice was issued.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct InvoiceIssued {
    pub order_id: OrderId,
    pub invoice_id: InvoiceId,
    pub amount: Money,
    pub due_on: NaiveDate,
    #[serde(deserialize_with = "crate::values::instant::deserialize")]
    pub occurred_at: DateTime<Utc>,
}

/// A payment was received.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PaymentReceived {
    pub order_id: OrderId,
    pub invoice_id: InvoiceId,
    pub amount: Money,
    #[serde(deserialize_with = "crate::values::instant::deserialize")]
    pub occurred_at: DateTime<Utc>,
}

/// An invoice is overdue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PaymentOverdue {
    pub order_id: OrderId,
    pub invoice_id: InvoiceId,
    pub days_overdue: u32,
    #[serde(deserialize_with = "crate::values::instant::deserialize")]
    pub occurred_at: DateTime<Utc>,
}

/// Money was refunded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Refunded {
    pub order_id: OrderId,
    pub amount: Money,
    pub cost_reversed: Option<Money>,
    pub reason: Label,
    #[serde(deserialize_with = "crate::values::instant::deserialize")]
    pub occurred_at: DateTime<Utc>,
}

event_enum! {
    /// Events of the order aggregate.
    pub enum OrderEvent {
        category: "order",
        id: order_id: OrderId,
        events: {
            OrderPlaced = 1, OrderLinesRecorded = 1, OrderCancelled = 1, InvoiceIssued = 1,
            PaymentReceived = 1, PaymentOverdue = 1, Refunded = 1,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Errors

/// Why an order command was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum OrderError {
    #[error(
        "order `{id}` already exists; choose another id or send a command for the existing order"
    )]
    AlreadyExists { id: OrderId },
    #[error("order `{id}` does not exist; place it (PlaceOrder) first")]
    NotFound { id: OrderId },
    #[error("command is for order `{command}` but stream `order-{loaded}` was loaded; load stream `order-{command}` and retry")]
    WrongInstance { loaded: OrderId, command: OrderId },
    #[error("order `{id}` has {lines} lines; an order needs 1..={ORDER_LINES_MAX} lines, split it or add a line")]
    LineCount { id: OrderId, lines: usize },
    #[error(
        "order `{id}` line {line} has quantity 0; send a quantity of at least 1 or drop the line"
    )]
    ZeroQuantity { id: OrderId, line: usize },
    #[error("order `{id}` was cancelled on {on}; {action} is not possible on a cancelled order")]
    Cancelled {
        id: OrderId,
        action: &'static str,
        on: NaiveDate,
    },
    #[error("invoice `{invoice}` already exists on order `{id}`; use a new invoice id")]
    DuplicateInvoice { id: OrderId, invoice: InvoiceId },
    #[error("invoice `{invoice}` does not exist on order `{id}`; issue it (IssueInvoice) first")]
    UnknownInvoice { id: OrderId, invoice: InvoiceId },
    #[error("{what} on order `{id}` must be greater than zero; send a positive amount")]
    ZeroAmount { id: OrderId, what: &'static str },
    #[error("invoicing {amount} on order `{id}` would exceed the order total {total} ({invoiced} already invoiced); invoice at most {remaining}")]
    OverInvoiced {
        id: OrderId,
        amount: Money,
        total: Money,
        invoiced: Money,
        remaining: Money,
    },
    #[error("payment of {amount} exceeds the open balance {open} of invoice `{invoice}` on order `{id}`; record at most {open}")]
    Overpayment {
        id: OrderId,
        invoice: InvoiceId,
        amount: Money,
        open: Money,
    },
    #[error("invoice `{invoice}` on order `{id}` is fully paid; it cannot be overdue")]
    InvoicePaid { id: OrderId, invoice: InvoiceId },
    #[error("days overdue must be at least 1 for invoice `{invoice}` on order `{id}`")]
    NotOverdue { id: OrderId, invoice: InvoiceId },
    #[error("refund of {amount} on order `{id}` exceeds the refundable {refundable} (paid minus earlier refunds); refund at most {refundable}")]
    OverRefund {
        id: OrderId,
        amount: Money,
        refundable: Money,
    },
    #[error("order `{id}`: {source}")]
    Money { id: OrderId, source: MoneyError },
}

// ---------------------------------------------------------------------------------------------
// State

#[derive(Debug, Clone, PartialEq, Eq)]
struct Invoice {
    amount: Money,
    paid: Money,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct State {
    id: OrderId,
    currency: Currency,
    total: Money,
    invoiced: Money,
    invoices: BTreeMap<InvoiceId, Invoice>,
    paid: Money,
    refunded: Money,
    cancelled_at: Option<DateTime<Utc>>,
}

/// The order aggregate.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Order {
    state: Option<State>,
}

fn money(id: &OrderId, r: Result<Money, MoneyError>) -> Result<Money, OrderError> {
    r.map_err(|source| OrderError::Money {
        id: id.clone(),
        source,
    })
}

impl Order {
    /// Total paid so far, `None` before the order is placed.
    #[must_use]
    pub fn paid(&self) -> Option<Money> {
        self.state.as_ref().map(|s| s.paid)
    }

    /// Total refunded so far, `None` before the order is placed.
    #[must_use]
    pub fn refunded(&self) -> Option<Money> {
        self.state.as_ref().map(|s| s.refunded)
    }

    fn existing(&self, id: &OrderId) -> Result<&State, OrderError> {
        let state = self
            .state
            .as_ref()
            .ok_or_else(|| OrderError::NotFound { id: id.clone() })?;
        if &state.id != id {
            return Err(OrderError::WrongInstance {
                loaded: state.id.clone(),
                command: id.clone(),
            });
        }
        Ok(state)
    }

    fn place(&self, c: &PlaceOrder) -> Result<Vec<OrderEvent>, OrderError> {
        let id = &c.order_id;
        if self.state.is_some() {
            return Err(OrderError::AlreadyExists { id: id.clone() });
        }
        let Some(first) = c.lines.first() else {
            return Err(OrderError::LineCount {
                id: id.clone(),
                lines: 0,
            });
        };
        if c.lines.len() > ORDER_LINES_MAX {
            return Err(OrderError::LineCount {
                id: id.clone(),
                lines: c.lines.len(),
            });
        }
        let currency = first.amount.currency;
        let mut total = Money::zero(currency);
        for (index, line) in c.lines.iter().enumerate() {
            if line.quantity == 0 {
                return Err(OrderError::ZeroQuantity {
                    id: id.clone(),
                    line: index.saturating_add(1),
                });
            }
            let amount = money(
                id,
                line.amount
                    .ensure_non_negative("order line amount")
                    .and_then(|m| m.ensure_currency(currency, "order line amount")),
            )?;
            if let Some(cost) = line.cost {
                money(
                    id,
                    cost.ensure_non_negative("order line cost")
                        .and_then(|m| m.ensure_currency(currency, "order line cost")),
                )?;
            }
            total = money(id, total.checked_add(amount))?;
        }
        let mut chunks = c.lines.chunks(ORDER_LINES_PER_EVENT);
        let placed = OrderPlaced {
            order_id: id.clone(),
            account_id: c.account_id.clone(),
            lines: chunks.next().map(<[OrderLine]>::to_vec).unwrap_or_default(),
            total,
            channel: c.channel,
            campaign: c.campaign.clone(),
            opportunity: c.opportunity.clone(),
            is_test: c.is_test,
            occurred_at: c.occurred_at,
        };
        let more = chunks.map(|lines| {
            OrderLinesRecorded {
                order_id: id.clone(),
                lines: lines.to_vec(),
                occurred_at: c.occurred_at,
            }
            .into()
        });
        Ok(std::iter::once(placed.into()).chain(more).collect())
    }
}

impl State {
    /// A strictly positive amount in the order's currency.
    fn positive(&self, m: Money, what: &'static str) -> Result<Money, OrderError> {
        let m = money(
            &self.id,
            m.ensure_non_negative(what)
                .and_then(|m| m.ensure_currency(self.currency, what)),
        )?;
        if m.is_zero() {
            return Err(OrderError::ZeroAmount {
                id: self.id.clone(),
                what,
            });
        }
        Ok(m)
    }

    fn invoice(&self, invoice: &InvoiceId) -> Result<&Invoice, OrderError> {
        self.invoices
            .get(invoice)
            .ok_or_else(|| OrderError::UnknownInvoice {
                id: self.id.clone(),
                invoice: invoice.clone(),
            })
    }

    fn cancel(&self, c: &CancelOrder) -> Result<Vec<OrderEvent>, OrderError> {
        if let Some(at) = self.cancelled_at {
            return Err(OrderError::Cancelled {
                id: self.id.clone(),
                action: "cancelling again",
                on: at.date_naive(),
            });
        }
        Ok(vec![OrderCancelled {
            order_id: self.id.clone(),
            reason: c.reason.clone(),
            occurred_at: c.occurred_at,
        }
        .into()])
    }

    fn issue_invoice(&self, c: &IssueInvoice) -> Result<Vec<OrderEvent>, OrderError> {
        if let Some(at) = self.cancelled_at {
            return Err(OrderError::Cancelled {
                id: self.id.clone(),
                action: "issuing an invoice",
                on: at.date_naive(),
            });
        }
        if self.invoices.contains_key(&c.invoice_id) {
            return Err(OrderError::DuplicateInvoice {
                id: self.id.clone(),
                invoice: c.invoice_id.clone(),
            });
        }
        let amount = self.positive(c.amount, "invoice amount")?;
        let remaining = money(&self.id, self.total.checked_sub(self.invoiced))?;
        if amount.minor_units > remaining.minor_units {
            return Err(OrderError::OverInvoiced {
                id: self.id.clone(),
                amount,
                total: self.total,
                invoiced: self.invoiced,
                remaining,
            });
        }
        Ok(vec![InvoiceIssued {
            order_id: self.id.clone(),
            invoice_id: c.invoice_id.clone(),
            amount,
            due_on: c.due_on,
            occurred_at: c.occurred_at,
        }
        .into()])
    }

    fn pay(&self, c: &RecordPayment) -> Result<Vec<OrderEvent>, OrderError> {
        let invoice = self.invoice(&c.invoice_id)?;
        let amount = self.positive(c.amount, "payment")?;
        let open = money(&self.id, invoice.amount.checked_sub(invoice.paid))?;
        if amount.minor_units > open.minor_units {
            return Err(OrderError::Overpayment {
                id: self.id.clone(),
                invoice: c.invoice_id.clone(),
                amount,
                open,
            });
        }
        Ok(vec![PaymentReceived {
            order_id: self.id.clone(),
            invoice_id: c.invoice_id.clone(),
            amount,
            occurred_at: c.occurred_at,
        }
        .into()])
    }

    fn overdue(&self, c: &RecordPaymentOverdue) -> Result<Vec<OrderEvent>, OrderError> {
        let invoice = self.invoice(&c.invoice_id)?;
        if invoice.paid.minor_units >= invoice.amount.minor_units {
            return Err(OrderError::InvoicePaid {
                id: self.id.clone(),
                invoice: c.invoice_id.clone(),
            });
        }
        if c.days_overdue == 0 {
            return Err(OrderError::NotOverdue {
                id: self.id.clone(),
                invoice: c.invoice_id.clone(),
            });
        }
        Ok(vec![PaymentOverdue {
            order_id: self.id.clone(),
            invoice_id: c.invoice_id.clone(),
            days_overdue: c.days_overdue,
            occurred_at: c.occurred_at,
        }
        .into()])
    }

    fn refund(&self, c: &RefundOrder) -> Result<Vec<OrderEvent>, OrderError> {
        let amount = self.positive(c.amount, "refund")?;
        let cost_reversed = c
            .cost_reversed
            .map(|m| {
                money(
                    &self.id,
                    m.ensure_non_negative("cost reversed")
                        .and_then(|m| m.ensure_currency(self.currency, "cost reversed")),
                )
            })
            .transpose()?;
        let refundable = money(&self.id, self.paid.checked_sub(self.refunded))?;
        if amount.minor_units > refundable.minor_units {
            return Err(OrderError::OverRefund {
                id: self.id.clone(),
                amount,
                refundable,
            });
        }
        Ok(vec![Refunded {
            order_id: self.id.clone(),
            amount,
            cost_reversed,
            reason: c.reason.clone(),
            occurred_at: c.occurred_at,
        }
        .into()])
    }
}

impl Aggregate for Order {
    const CATEGORY: &'static str = OrderEvent::CATEGORY;
    type Command = OrderCommand;
    type Event = OrderEvent;
    type Error = OrderError;

    fn handle(&self, command: &OrderCommand) -> Result<Vec<OrderEvent>, OrderError> {
        use OrderCommand as C;
        if let C::PlaceOrder(c) = command {
            return self.place(c);
        }
        let s = self.existing(command.target_id())?;
        match command {
            C::PlaceOrder(c) => self.place(c),
            C::CancelOrder(c) => s.cancel(c),
            C::IssueInvoice(c) => s.issue_invoice(c),
            C::RecordPayment(c) => s.pay(c),
            C::RecordPaymentOverdue(c) => s.overdue(c),
            C::RefundOrder(c) => s.refund(c),
        }
    }

    fn apply(&mut self, event: &OrderEvent) {
        use OrderEvent as E;
        if let E::OrderPlaced(e) = event {
            let currency = e.total.currency;
            self.state = Some(State {
                id: e.order_id.clone(),
                currency,
                total: e.total,
                invoiced: Money::zero(currency),
                invoices: BTreeMap::new(),
                paid: Money::zero(currency),
                refunded: Money::zero(currency),
                cancelled_at: None,
            });
            return;
        }
        let Some(s) = self.state.as_mut() else {
            return;
        };
        // Amounts were checked by `handle`; saturating sums keep `apply` infallible.
        let add = |a: Money, b: Money| {
            Money::new(a.minor_units.saturating_add(b.minor_units), a.currency)
        };
        match event {
            E::OrderPlaced(_) | E::OrderLinesRecorded(_) | E::PaymentOverdue(_) => {}
            E::OrderCancelled(e) => s.cancelled_at = Some(e.occurred_at),
            E::InvoiceIssued(e) => {
                s.invoiced = add(s.invoiced, e.amount);
                s.invoices.insert(
                    e.invoice_id.clone(),
                    Invoice {
                        amount: e.amount,
                        paid: Money::zero(s.currency),
                    },
                );
            }
            E::PaymentReceived(e) => {
                s.paid = add(s.paid, e.amount);
                if let Some(invoice) = s.invoices.get_mut(&e.invoice_id) {
                    invoice.paid = add(invoice.paid, e.amount);
                }
            }
            E::Refunded(e) => s.refunded = add(s.refunded, e.amount),
        }
    }
}
