//! Churn and lifetime-value figures on small hand-built histories.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::cast_possible_truncation
)]

#[path = "common/gen.rs"]
mod gen;
#[path = "common/history.rs"]
mod history;

use chrono::{DateTime, Duration, NaiveDate, Utc};
use crm_domain::aggregates::account::Account;
use crm_domain::aggregates::case::{Case, EscalateCase};
use crm_domain::aggregates::contact::{AddContact, Contact};
use crm_domain::aggregates::feedback::{AnswerSurvey, Feedback};
use crm_domain::aggregates::order::{
    IssueInvoice, Order, OrderLine, PlaceOrder, RecordPayment, RecordPaymentOverdue, RefundOrder,
};
use crm_domain::aggregates::subscription::Subscription;
use crm_domain::values::{
    AccountId, CaseId, ContactId, FeedbackId, InvoiceId, OrderId, ProductId, SalesChannel,
    SurveyKind,
};
use crm_domain::PersonalData;
use crm_projections::read_models::churn::{self, ChurnConfig, ChurnQuery};
use crm_projections::read_models::lifetime_value::{self, LifetimeValueConfig, LifetimeValueQuery};
use crm_projections::read_models::sla::SlaConfig;
use crm_projections::read_models::{ChurnProjection, LifetimeValueProjection};

use history::*;

/// The churn state of `h` folded with the default configuration.
async fn churn_state(h: &History) -> (ChurnConfig, churn::ChurnState) {
    let config = ChurnConfig::default();
    let state = h
        .fold(&ChurnProjection::new(config.clone(), SlaConfig::default()))
        .await;
    (config, state)
}

/// The churn report at `t`, every customer listed.
fn churn_report(
    state: &churn::ChurnState,
    config: &ChurnConfig,
    t: DateTime<Utc>,
) -> churn::ChurnReport {
    churn::report(
        state,
        config,
        &ChurnQuery {
            as_of: t,
            period: None,
            limit: None,
        },
    )
    .unwrap()
}

#[tokio::test]
async fn churn_rate_by_contract_type_and_revenue_and_an_explained_risk_score() {
    let start = at(2022, 1, 1, 0, 0);
    let end = at(2024, 1, 1, 0, 0);
    let mut h = History::default();
    let customers = [
        ("m1", "Month-to-month", 1, 5_000, true),
        ("m2", "Month-to-month", 1, 7_000, false),
        ("y1", "One year", 12, 6_000, false),
        ("y2", "Two year", 24, 2_000, true),
    ];
    for (acc, plan, term, monthly, churned) in customers {
        let mut a = Account::default();
        h.run(&mut a, open_account(acc, "Residential", start));
        let mut s = Subscription::default();
        h.run(&mut s, start_sub(acc, acc, plan, term, monthly, start));
        if churned {
            h.run(&mut s, cancel(acc, end));
        }
    }
    // m2: a detractor with two recent escalations and an overdue invoice.
    let mut k = Contact::default();
    h.run(
        &mut k,
        AddContact {
            contact_id: ContactId::new("k1").unwrap(),
            account_id: AccountId::new("m2").unwrap(),
            role: l("champion"),
            personal: PersonalData {
                full_name: Some("Kim".into()),
                ..PersonalData::default()
            },
            is_test: false,
            occurred_at: start,
        },
    );
    let mut f = Feedback::default();
    h.run(
        &mut f,
        AnswerSurvey {
            feedback_id: FeedbackId::new("f1").unwrap(),
            kind: SurveyKind::Nps,
            score: 5,
            contact: Some(ContactId::new("k1").unwrap()),
            trigger: None,
            by_employee: false,
            is_test: false,
            occurred_at: end - Duration::days(10),
        },
    );
    let mut c = Case::default();
    let mut oc = open_case("c1", end - Duration::days(20));
    oc.account_id = Some(AccountId::new("m2").unwrap());
    h.run(&mut c, oc);
    for (level, days) in [(1, 15), (2, 5)] {
        h.run(
            &mut c,
            EscalateCase {
                case_id: CaseId::new("c1").unwrap(),
                level,
                reason: l("angry"),
                occurred_at: end - Duration::days(days),
            },
        );
    }
    let mut o = Order::default();
    h.run(
        &mut o,
        PlaceOrder {
            order_id: OrderId::new("o1").unwrap(),
            account_id: AccountId::new("m2").unwrap(),
            lines: vec![OrderLine {
                product: ProductId::new("router").unwrap(),
                quantity: 1,
                amount: usd(10_000),
                cost: None,
            }],
            channel: SalesChannel::Online,
            campaign: None,
            opportunity: None,
            is_test: false,
            occurred_at: end - Duration::days(40),
        },
    )
    .run(
        &mut o,
        IssueInvoice {
            order_id: OrderId::new("o1").unwrap(),
            invoice_id: InvoiceId::new("i1").unwrap(),
            amount: usd(10_000),
            due_on: NaiveDate::from_ymd_opt(2023, 12, 1).unwrap(),
            occurred_at: end - Duration::days(40),
        },
    )
    .run(
        &mut o,
        RecordPaymentOverdue {
            order_id: OrderId::new("o1").unwrap(),
            invoice_id: InvoiceId::new("i1").unwrap(),
            days_overdue: 10,
            occurred_at: end - Duration::days(20),
        },
    );
    let (config, state) = churn_state(&h).await;
    let r = churn_report(&state, &config, end);
    assert_eq!(
        (r.overall.by_count.numerator, r.overall.by_count.denominator),
        (2, 4)
    );
    assert_eq!(r.overall.by_count.percent, Some(50.0));
    assert_eq!(r.overall.by_revenue.numerator_minor, 7_000);
    assert_eq!(r.overall.by_revenue.denominator_minor, 20_000);
    let m2m = r
        .by_contract_type
        .iter()
        .find(|g| g.key == "Month-to-month")
        .unwrap();
    assert_eq!((m2m.by_count.numerator, m2m.by_count.denominator), (1, 2));
    let one = r
        .by_contract_type
        .iter()
        .find(|g| g.key == "One year")
        .unwrap();
    assert_eq!(one.by_count.percent, Some(0.0));
    assert_eq!(r.by_cohort[0].key, "2022");
    // Before the cancellations nobody had churned.
    let earlier = churn::report(
        &state,
        &config,
        &ChurnQuery {
            as_of: end - Duration::days(1),
            period: None,
            limit: None,
        },
    )
    .unwrap();
    assert_eq!(earlier.overall.by_count.numerator, 0);
    // The period form: customers active at the start of 2023, churned during 2023 (exclusive end).
    let in_2023 = churn::report(
        &state,
        &config,
        &ChurnQuery {
            as_of: end,
            period: Some((at(2023, 1, 1, 0, 0), end + Duration::seconds(1))),
            limit: None,
        },
    )
    .unwrap();
    assert_eq!(in_2023.overall.by_count.numerator, 2);
    // The risk score of m2, signal by signal.
    let m2 = churn::customer(&state, &config, "m2", end).unwrap();
    assert_eq!(m2.status, "active");
    assert_eq!(m2.tenure_months, 24);
    assert_eq!(m2.latest_nps, Some(5));
    assert_eq!(
        (
            m2.open_cases,
            m2.escalated_open_cases,
            m2.overdue_invoices,
            m2.failed_payments
        ),
        (1, 1, 1, 1)
    );
    let fired: Vec<(&str, u32)> = m2
        .risk
        .signals
        .iter()
        .filter(|s| s.fired)
        .map(|s| (s.signal.as_str(), s.points))
        .collect();
    assert_eq!(
        fired,
        vec![
            ("escalations", 20),
            ("low_nps", 20),
            ("payment_overdue", 15),
            ("silence", 10)
        ]
    );
    assert_eq!(m2.risk.score_percent, 65);
    assert!(m2.risk.at_risk);
    assert_eq!(m2.risk.signals.len(), 7);
    let m1 = churn::customer(&state, &config, "m1", end).unwrap();
    assert_eq!(
        (m1.status.as_str(), m1.monthly_amount_minor),
        ("churned", 5_000)
    );
    // Every customer at once (rows grouped by account in one pass) equals each one alone.
    let one_by_one: Vec<_> = ["m1", "m2", "y1", "y2"]
        .into_iter()
        .filter_map(|a| churn::customer(&state, &config, a, end))
        .collect();
    assert_eq!(one_by_one.len(), 4);
    assert_eq!(churn::customers(&state, &config, end).unwrap(), one_by_one);
}

#[tokio::test]
async fn lifetime_value_rfm_quintiles_margin_and_predicted_clv_inputs() {
    let t = at(2024, 1, 1, 0, 0);
    let mut h = History::default();
    // Five order customers: customer i buys i times, 100 × i each, the last i × 10 days ago.
    for i in 1..=5i64 {
        let acc = format!("c{i}");
        let mut a = Account::default();
        h.run(
            &mut a,
            open_account(&acc, "Retail", t - Duration::days(300)),
        );
        for n in 0..i {
            let mut o = Order::default();
            let id = format!("{acc}-o{n}");
            h.run(
                &mut o,
                PlaceOrder {
                    order_id: OrderId::new(&id).unwrap(),
                    account_id: AccountId::new(&acc).unwrap(),
                    lines: vec![OrderLine {
                        product: ProductId::new("kit").unwrap(),
                        quantity: 1,
                        amount: usd(100 * i),
                        cost: Some(usd(40 * i)),
                    }],
                    channel: SalesChannel::Online,
                    campaign: None,
                    opportunity: None,
                    is_test: false,
                    occurred_at: t - Duration::days(100 - 10 * i + n) - Duration::days(10 * i - n),
                },
            );
            if i == 5 && n == 0 {
                let inv = || InvoiceId::new("inv").unwrap();
                h.run(
                    &mut o,
                    IssueInvoice {
                        order_id: OrderId::new(&id).unwrap(),
                        invoice_id: inv(),
                        amount: usd(500),
                        due_on: NaiveDate::from_ymd_opt(2023, 12, 1).unwrap(),
                        occurred_at: t - Duration::days(9),
                    },
                )
                .run(
                    &mut o,
                    RecordPayment {
                        order_id: OrderId::new(&id).unwrap(),
                        invoice_id: inv(),
                        amount: usd(500),
                        occurred_at: t - Duration::days(8),
                    },
                );
                h.run(
                    &mut o,
                    RefundOrder {
                        order_id: OrderId::new(&id).unwrap(),
                        amount: usd(100),
                        cost_reversed: Some(usd(40)),
                        reason: l("broken"),
                        occurred_at: t - Duration::days(5),
                    },
                );
            }
        }
    }
    // A subscriber: 12 monthly billings of 1,000 in 2023.
    let mut a = Account::default();
    h.run(&mut a, open_account("sub", "Retail", at(2023, 1, 1, 0, 0)));
    let mut s = Subscription::default();
    h.run(
        &mut s,
        start_sub(
            "sub",
            "sub",
            "Month-to-month",
            1,
            1_000,
            at(2023, 1, 1, 0, 0),
        ),
    );
    let config = LifetimeValueConfig::default();
    let state = h.fold(&LifetimeValueProjection::new(config.clone())).await;
    let r = lifetime_value::report(
        &state,
        &config,
        &LifetimeValueQuery {
            as_of: t,
            account: None,
            limit: None,
        },
    )
    .unwrap();
    assert_eq!(r.customers_total, 6);
    let c = |id: &str| r.customers.iter().find(|c| c.account == id).unwrap();
    assert_eq!(
        (
            c("c1").revenue_minor,
            c("c1").margin_minor,
            c("c1").order_count
        ),
        (100, 60, 1)
    );
    // c5: 5 orders of 500, one refunded by 100 (cost 40 reversed).
    assert_eq!(c("c5").revenue_minor, 2_400);
    assert_eq!(c("c5").margin_minor, 5 * 300 - 100 + 40);
    assert_eq!(c("c5").average_order_value_minor, Some(480.0));
    assert_eq!(c("sub").billing_count, 13); // Jan 2023 ..= Jan 2024 (the as_of instant)
    assert_eq!(c("sub").revenue_minor, 13_000);
    assert_eq!(c("sub").revenue_without_cost_minor, 13_000);
    let rfm = |id: &str| c(id).rfm.clone().unwrap();
    assert_eq!((rfm("c5").f, rfm("c5").m), (4, 4)); // the subscriber has 12 billings
    assert_eq!((rfm("c1").f, rfm("c1").m), (1, 1));
    assert_eq!(rfm("sub").f, 5);
    assert_eq!(r.rfm_cells.values().sum::<u64>(), 6);
    // Nobody churned: lifetime is the cap, and the inputs say why.
    let p = &c("c5").prediction;
    assert_eq!((p.segment.as_str(), p.segment_churned), ("Retail", 0));
    assert_eq!(p.segment_monthly_churn, Some(0.0));
    assert_eq!(p.expected_lifetime_months, 60.0);
    assert!((p.predicted_clv_minor - p.monthly_margin_minor * 60.0).abs() < 1e-9);
    assert!(p.active && p.monthly_margin_minor > 0.0);
}

/// Test and internal accounts are no customers of either report, and the purchases left out
/// for their currency are counted for the other accounts only.
#[tokio::test]
async fn excluded_accounts_are_left_out_of_both_reports_with_their_other_currency_purchases() {
    let start = at(2023, 1, 1, 0, 0);
    let t = at(2024, 1, 1, 0, 0);
    let mut h = History::default();
    // (account, test, internal, a purchase in euros)
    let accounts = [
        ("a1", false, false, true),
        ("a2", true, false, true),
        ("a3", false, true, false),
        ("a4", false, false, true),
        ("a5", false, false, false),
    ];
    for (acc, is_test, is_internal, euros) in accounts {
        let mut a = Account::default();
        let mut open = open_account(acc, "Retail", start);
        open.is_test = is_test;
        open.is_internal = is_internal;
        h.run(&mut a, open);
        let mut s = Subscription::default();
        h.run(
            &mut s,
            start_sub(acc, acc, "Month-to-month", 1, 1_000, start),
        );
        let mut currencies = vec![usd(5_000)];
        if euros {
            currencies.push(crm_domain::values::Money::new(
                7_000,
                crm_domain::values::Currency::EUR,
            ));
        }
        for (n, amount) in currencies.into_iter().enumerate() {
            let mut o = Order::default();
            h.run(
                &mut o,
                PlaceOrder {
                    order_id: OrderId::new(format!("{acc}-o{n}")).unwrap(),
                    account_id: AccountId::new(acc).unwrap(),
                    lines: vec![OrderLine {
                        product: ProductId::new("kit").unwrap(),
                        quantity: 1,
                        amount,
                        cost: None,
                    }],
                    channel: SalesChannel::Online,
                    campaign: None,
                    opportunity: None,
                    is_test: false,
                    occurred_at: start + Duration::days(30),
                },
            );
        }
    }
    let customers = ["a1", "a4", "a5"];

    let config = LifetimeValueConfig::default();
    let state = h.fold(&LifetimeValueProjection::new(config.clone())).await;
    let query = |account: Option<&str>| LifetimeValueQuery {
        as_of: t,
        account: account.map(str::to_owned),
        limit: None,
    };
    let r = lifetime_value::report(&state, &config, &query(None)).unwrap();
    let listed: Vec<&str> = r.customers.iter().map(|c| c.account.as_str()).collect();
    let mut listed_sorted = listed.clone();
    listed_sorted.sort_unstable();
    assert_eq!(listed_sorted, customers);
    assert_eq!(r.customers_total, 3);
    // The euro orders of a1 and a4; not a2's (a test account).
    assert_eq!(r.other_currency, 2);
    for c in &r.customers {
        // One order of 5,000 and the monthly billings of 1,000 from 2023-01-01 to t
        // (2024-01-01) included.
        assert_eq!(c.revenue_minor, 5_000 + 13 * 1_000, "{}", c.account);
        assert_eq!(c.order_count, 1, "{}", c.account);
    }
    for excluded in ["a2", "a3"] {
        let one = lifetime_value::report(&state, &config, &query(Some(excluded))).unwrap();
        assert!(one.customers.is_empty(), "{excluded}: {:?}", one.customers);
    }

    let (config, state) = churn_state(&h).await;
    let r = churn_report(&state, &config, t);
    let mut listed: Vec<&str> = r.customers.iter().map(|c| c.account.as_str()).collect();
    listed.sort_unstable();
    assert_eq!(listed, customers);
    assert_eq!(r.customers_total, 3);
    assert_eq!(r.overall.by_count.denominator, 3);
    for excluded in ["a2", "a3"] {
        assert!(churn::customer(&state, &config, excluded, t).is_none());
    }
    for customer in customers {
        let one = churn::customer(&state, &config, customer, t).unwrap();
        assert_eq!(
            Some(&one),
            r.customers.iter().find(|c| c.account == customer)
        );
    }
}
