//! Order, invoice, payment and refund rules, given/when/then.

mod common;

use common::*;
use crm_domain::aggregates::order::*;
use crm_domain::values::{InvoiceId, MoneyError, OrderId, SalesChannel, ID_LEN_MAX_BYTES};

fn oid() -> OrderId {
    id("ORD-1")
}

fn inv(s: &str) -> InvoiceId {
    id(s)
}

fn line(cents: i64) -> OrderLine {
    OrderLine {
        product: id("GTX-Pro"),
        quantity: 2,
        amount: eur(cents),
        cost: Some(eur(cents / 2)),
    }
}

fn place_cmd() -> PlaceOrder {
    PlaceOrder {
        order_id: oid(),
        account_id: id("A-1"),
        lines: vec![line(60_000), line(40_000)],
        channel: SalesChannel::Online,
        campaign: None,
        opportunity: None,
        is_test: false,
        occurred_at: day(1),
    }
}

fn placed() -> OrderEvent {
    let c = place_cmd();
    OrderPlaced {
        order_id: c.order_id,
        account_id: c.account_id,
        lines: c.lines,
        total: eur(100_000),
        channel: c.channel,
        campaign: c.campaign,
        opportunity: c.opportunity,
        is_test: c.is_test,
        occurred_at: c.occurred_at,
    }
    .into()
}

fn issued(invoice: &str, cents: i64) -> OrderEvent {
    InvoiceIssued {
        order_id: oid(),
        invoice_id: inv(invoice),
        amount: eur(cents),
        due_on: date(4, 1),
        occurred_at: day(2),
    }
    .into()
}

fn issue_cmd(invoice: &str, cents: i64) -> IssueInvoice {
    IssueInvoice {
        order_id: oid(),
        invoice_id: inv(invoice),
        amount: eur(cents),
        due_on: date(4, 1),
        occurred_at: day(2),
    }
}

fn paid(invoice: &str, cents: i64) -> OrderEvent {
    PaymentReceived {
        order_id: oid(),
        invoice_id: inv(invoice),
        amount: eur(cents),
        occurred_at: day(3),
    }
    .into()
}

fn pay_cmd(invoice: &str, cents: i64) -> RecordPayment {
    RecordPayment {
        order_id: oid(),
        invoice_id: inv(invoice),
        amount: eur(cents),
        occurred_at: day(3),
    }
}

fn refund_cmd(cents: i64) -> RefundOrder {
    RefundOrder {
        order_id: oid(),
        amount: eur(cents),
        cost_reversed: None,
        reason: label("damaged"),
        occurred_at: day(5),
    }
}

fn refunded(cents: i64) -> OrderEvent {
    Refunded {
        order_id: oid(),
        amount: eur(cents),
        cost_reversed: None,
        reason: label("damaged"),
        occurred_at: day(5),
    }
    .into()
}

fn cancelled() -> OrderEvent {
    OrderCancelled {
        order_id: oid(),
        reason: label("customer request"),
        occurred_at: day(4),
    }
    .into()
}

fn cancel_cmd() -> CancelOrder {
    CancelOrder {
        order_id: oid(),
        reason: label("customer request"),
        occurred_at: day(4),
    }
}

#[test]
fn placing_sums_the_lines() {
    given_nothing::<Order>()
        .when(place_cmd())
        .then(vec![placed()]);
}

#[test]
fn placing_twice_is_an_error() {
    given::<Order>(vec![placed()])
        .when(place_cmd())
        .then_err(|e| matches!(e, OrderError::AlreadyExists { .. }));
}

#[test]
fn commands_on_a_missing_order_are_errors() {
    given_nothing::<Order>()
        .when(refund_cmd(1))
        .then_err(|e| matches!(e, OrderError::NotFound { .. }));
}

#[test]
fn an_order_needs_lines_with_a_quantity() {
    let mut empty = place_cmd();
    empty.lines.clear();
    given_nothing::<Order>()
        .when(empty)
        .then_err(|e| matches!(e, OrderError::LineCount { lines: 0, .. }));
    let mut zero = place_cmd();
    zero.lines[1].quantity = 0;
    given_nothing::<Order>()
        .when(zero)
        .then_err(|e| matches!(e, OrderError::ZeroQuantity { line: 2, .. }));
}

#[test]
fn a_long_order_records_its_lines_over_several_events() {
    // 450 lines: OrderPlaced with the first 200 and the total of all, then 200 and 50 more.
    let mut long = place_cmd();
    long.lines = (1..=450).map(|i| line(i * 100)).collect();
    let events = given_nothing::<Order>().when(long.clone()).then_ok();
    assert_eq!(events.len(), 3);
    let OrderEvent::OrderPlaced(head) = &events[0] else {
        panic!("first event {:?}", events[0]);
    };
    assert_eq!(head.lines.len(), ORDER_LINES_PER_EVENT);
    assert_eq!(head.total, eur((1..=450).map(|i| i * 100).sum()));
    let mut recorded = head.lines.clone();
    for event in &events[1..] {
        let OrderEvent::OrderLinesRecorded(more) = event else {
            panic!("continuation {event:?}");
        };
        assert_eq!(
            (&more.order_id, more.occurred_at),
            (&long.order_id, long.occurred_at)
        );
        recorded.extend(more.lines.iter().cloned());
    }
    assert_eq!(recorded, long.lines, "every line once, in order");
    // Invoicing and paying work on the whole total.
    let state = given_nothing::<Order>().when(long).then(events);
    assert!(state.paid().is_some());

    let mut too_long = place_cmd();
    too_long.lines = vec![line(100); ORDER_LINES_MAX + 1];
    let message = given_nothing::<Order>().when(too_long).then_err(
        |e| matches!(e, OrderError::LineCount { lines, .. } if *lines == ORDER_LINES_MAX + 1),
    );
    assert!(message.contains("10000"), "{message}");
}

#[test]
fn the_largest_order_event_stays_under_the_log_event_bound() {
    // The log refuses an event over 64 KiB (payload, metadata, type and actor): a full
    // event of lines with the longest ids and the widest amounts leaves 4 KiB for the rest.
    let widest = OrderLine {
        product: id(&"P".repeat(ID_LEN_MAX_BYTES)),
        quantity: u32::MAX,
        amount: eur(i64::MAX / 1_000_000),
        cost: Some(eur(i64::MAX / 1_000_000)),
    };
    let mut order = place_cmd();
    order.order_id = id(&"O".repeat(ID_LEN_MAX_BYTES));
    order.account_id = id(&"A".repeat(ID_LEN_MAX_BYTES));
    order.lines = vec![widest; ORDER_LINES_PER_EVENT * 2];
    for event in given_nothing::<Order>().when(order).then_ok() {
        let payload = crm_domain::DomainEvent::from(event).to_payload().unwrap();
        assert!(payload.len() <= 60 * 1024, "{} bytes", payload.len());
    }
}

#[test]
fn line_amounts_and_costs_are_non_negative_in_one_currency() {
    let mut negative = place_cmd();
    negative.lines[0].amount = eur(-5);
    given_nothing::<Order>().when(negative).then_err(|e| {
        matches!(
            e,
            OrderError::Money {
                source: MoneyError::Negative { .. },
                ..
            }
        )
    });
    let mut negative_cost = place_cmd();
    negative_cost.lines[0].cost = Some(eur(-5));
    given_nothing::<Order>()
        .when(negative_cost)
        .then_err(|e| matches!(e, OrderError::Money { .. }));
    let mut mixed = place_cmd();
    mixed.lines[1].amount = usd(100);
    given_nothing::<Order>().when(mixed).then_err(|e| {
        matches!(
            e,
            OrderError::Money {
                source: MoneyError::CurrencyMismatch { .. },
                ..
            }
        )
    });
}

#[test]
fn invoices_never_exceed_the_order_total() {
    given::<Order>(vec![placed(), issued("I-1", 70_000)])
        .when(issue_cmd("I-2", 30_000))
        .then(vec![issued("I-2", 30_000)]);
    let msg = given::<Order>(vec![placed(), issued("I-1", 70_000)])
        .when(issue_cmd("I-2", 30_001))
        .then_err(|e| matches!(e, OrderError::OverInvoiced { .. }));
    assert!(msg.contains("invoice at most EUR 300.00"), "{msg}");
}

#[test]
fn invoice_ids_are_unique_per_order() {
    given::<Order>(vec![placed(), issued("I-1", 10_000)])
        .when(issue_cmd("I-1", 10_000))
        .then_err(|e| matches!(e, OrderError::DuplicateInvoice { .. }));
}

#[test]
fn a_cancelled_order_gets_no_new_invoice() {
    given::<Order>(vec![placed(), cancelled()])
        .when(issue_cmd("I-1", 10_000))
        .then_err(|e| matches!(e, OrderError::Cancelled { .. }));
}

#[test]
fn an_order_is_cancelled_once() {
    given::<Order>(vec![placed()])
        .when(cancel_cmd())
        .then(vec![cancelled()]);
    given::<Order>(vec![placed(), cancelled()])
        .when(cancel_cmd())
        .then_err(|e| matches!(e, OrderError::Cancelled { .. }));
}

#[test]
fn a_payment_cannot_exceed_the_open_invoice() {
    given::<Order>(vec![placed(), issued("I-1", 50_000), paid("I-1", 20_000)])
        .when(pay_cmd("I-1", 30_000))
        .then(vec![paid("I-1", 30_000)]);
    let msg = given::<Order>(vec![placed(), issued("I-1", 50_000), paid("I-1", 20_000)])
        .when(pay_cmd("I-1", 30_001))
        .then_err(|e| matches!(e, OrderError::Overpayment { .. }));
    assert!(msg.contains("record at most EUR 300.00"), "{msg}");
}

#[test]
fn a_payment_needs_an_issued_invoice_and_a_positive_amount() {
    given::<Order>(vec![placed()])
        .when(pay_cmd("I-404", 100))
        .then_err(|e| matches!(e, OrderError::UnknownInvoice { .. }));
    given::<Order>(vec![placed(), issued("I-1", 50_000)])
        .when(pay_cmd("I-1", 0))
        .then_err(|e| matches!(e, OrderError::ZeroAmount { .. }));
    given::<Order>(vec![placed(), issued("I-1", 50_000)])
        .when(pay_cmd("I-1", -1))
        .then_err(|e| matches!(e, OrderError::Money { .. }));
}

#[test]
fn a_refund_cannot_exceed_what_was_paid() {
    let history = || vec![placed(), issued("I-1", 50_000), paid("I-1", 50_000)];
    given::<Order>(history())
        .when(refund_cmd(50_001))
        .then_err(|e| matches!(e, OrderError::OverRefund { .. }));
    let mut after_refund = history();
    after_refund.push(refunded(30_000));
    given::<Order>(after_refund.clone())
        .when(refund_cmd(20_001))
        .then_err(|e| matches!(e, OrderError::OverRefund { .. }));
    let state = given::<Order>(after_refund)
        .when(refund_cmd(20_000))
        .then(vec![refunded(20_000)]);
    assert_eq!(state.refunded(), Some(eur(50_000)));
}

#[test]
fn nothing_paid_means_nothing_to_refund() {
    given::<Order>(vec![placed()])
        .when(refund_cmd(1))
        .then_err(|e| matches!(e, OrderError::OverRefund { .. }));
}

#[test]
fn a_cancelled_order_can_still_be_refunded() {
    given::<Order>(vec![
        placed(),
        issued("I-1", 50_000),
        paid("I-1", 50_000),
        cancelled(),
    ])
    .when(refund_cmd(50_000))
    .then(vec![refunded(50_000)]);
}

#[test]
fn only_an_unpaid_invoice_can_be_overdue() {
    let overdue = |days| RecordPaymentOverdue {
        order_id: oid(),
        invoice_id: inv("I-1"),
        days_overdue: days,
        occurred_at: day(20),
    };
    given::<Order>(vec![placed(), issued("I-1", 50_000)])
        .when(overdue(7))
        .then_ok();
    given::<Order>(vec![placed(), issued("I-1", 50_000), paid("I-1", 50_000)])
        .when(overdue(7))
        .then_err(|e| matches!(e, OrderError::InvoicePaid { .. }));
    given::<Order>(vec![placed(), issued("I-1", 50_000)])
        .when(overdue(0))
        .then_err(|e| matches!(e, OrderError::NotOverdue { .. }));
}
