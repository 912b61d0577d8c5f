//! Property test: `from_payload(to_payload(e)) == e` over a representative set of events
//! from every aggregate family, and payloads never carry a type tag.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use chrono::{DateTime, NaiveDate, Utc};
use crm_domain::aggregates::campaign::{CampaignResponded, Respondent, ResponseType};
use crm_domain::aggregates::case::{CaseOpened, CasePriority};
use crm_domain::aggregates::contact::ContactAdded;
use crm_domain::aggregates::feedback::{ReviewPlatform, ReviewPosted, SurveyAnswered};
use crm_domain::aggregates::interaction::{
    Direction, InteractionLogged, InteractionOutcome, Purpose,
};
use crm_domain::aggregates::lead::LeadCaptured;
use crm_domain::aggregates::opportunity::{
    OpportunityEvent, OpportunityKind, OpportunityOpened, OpportunityWon,
};
use crm_domain::aggregates::order::{OrderLine, OrderPlaced};
use crm_domain::aggregates::subscription::{SubscriptionKind, SubscriptionStarted};
use crm_domain::aggregates::{CaseEvent, LeadEvent};
use crm_domain::personal::PersonalData;
use crm_domain::values::{
    Channel, Currency, Label, Money, Probability, Rating, SalesChannel, SurveyKind, SurveyScore,
};
use crm_domain::DomainEvent;
use proptest::prelude::*;

fn arb_id<T>() -> impl Strategy<Value = T>
where
    T: TryFrom<String> + std::fmt::Debug,
    T::Error: std::fmt::Debug,
{
    "[A-Za-z0-9][A-Za-z0-9_.:-]{0,15}".prop_map(|s| T::try_from(s).unwrap())
}

fn arb_label() -> impl Strategy<Value = Label> {
    "[A-Za-zÀ-ÿ0-9]([A-Za-zÀ-ÿ0-9 &'/-]{0,12}[A-Za-z0-9])?".prop_map(|s| Label::new(s).unwrap())
}

fn arb_time() -> impl Strategy<Value = DateTime<Utc>> {
    (0i64..4_102_444_800, 0u32..1_000_000_000)
        .prop_map(|(secs, nanos)| DateTime::from_timestamp(secs, nanos).unwrap())
}

fn arb_date() -> impl Strategy<Value = NaiveDate> {
    (1990i32..2100, 1u32..=12, 1u32..=28)
        .prop_map(|(y, m, d)| NaiveDate::from_ymd_opt(y, m, d).unwrap())
}

fn arb_currency() -> impl Strategy<Value = Currency> {
    prop_oneof![
        Just(Currency::EUR),
        Just(Currency::USD),
        Just(Currency::JPY),
        Just(Currency::new("KWD").unwrap()),
    ]
}

fn arb_money() -> impl Strategy<Value = Money> {
    (any::<i64>(), arb_currency()).prop_map(|(m, c)| Money::new(m, c))
}

fn arb_channel() -> impl Strategy<Value = Channel> {
    prop_oneof![
        Just(Channel::Phone),
        Just(Channel::Email),
        Just(Channel::Chat),
        Just(Channel::InPerson),
        Just(Channel::Web),
    ]
}

fn arb_personal() -> impl Strategy<Value = PersonalData> {
    (
        proptest::option::of("\\PC{0,20}"),
        proptest::option::of("[a-z]{1,8}@[a-z]{1,8}\\.org"),
        proptest::option::of("\\+?[0-9 ]{3,12}"),
    )
        .prop_map(|(full_name, email, phone)| PersonalData {
            full_name,
            email,
            phone,
        })
}

fn arb_opportunity_events() -> impl Strategy<Value = DomainEvent> {
    let won = (
        arb_id(),
        arb_money(),
        proptest::option::of(arb_money()),
        proptest::option::of(arb_money()),
        proptest::option::of(arb_label()),
        arb_time(),
    )
        .prop_map(
            |(opportunity_id, amount, list_price, discount, competitor, occurred_at)| {
                DomainEvent::from(OpportunityEvent::from(OpportunityWon {
                    opportunity_id,
                    amount,
                    list_price,
                    discount,
                    competitor,
                    occurred_at,
                }))
            },
        );
    let opened = (
        (
            arb_id(),
            arb_id(),
            arb_id(),
            arb_id(),
            arb_money(),
            arb_date(),
        ),
        (
            prop_oneof![
                Just(OpportunityKind::New),
                Just(OpportunityKind::Expansion),
                Just(OpportunityKind::Renewal)
            ],
            arb_label(),
            0u8..=100,
            proptest::option::of(arb_id()),
            proptest::option::of(arb_id()),
            any::<bool>(),
            arb_time(),
        ),
    )
        .prop_map(
            |(
                (opportunity_id, account_id, owner, product, amount, expected_close),
                (kind, stage, probability, lead, campaign, is_test, occurred_at),
            )| {
                DomainEvent::from(OpportunityEvent::from(OpportunityOpened {
                    opportunity_id,
                    account_id,
                    owner,
                    product,
                    amount,
                    expected_close,
                    kind,
                    channel: SalesChannel::Partner,
                    stage,
                    probability: Probability::new(probability).unwrap(),
                    lead,
                    campaign,
                    is_test,
                    occurred_at,
                }))
            },
        );
    prop_oneof![won, opened]
}

fn arb_people_events() -> impl Strategy<Value = DomainEvent> {
    let lead = (
        arb_id(),
        arb_label(),
        arb_channel(),
        proptest::option::of(arb_id()),
        proptest::option::of(arb_personal()),
        any::<bool>(),
        arb_time(),
    )
        .prop_map(
            |(lead_id, source, channel, campaign, personal, is_test, occurred_at)| {
                DomainEvent::from(LeadEvent::from(LeadCaptured {
                    lead_id,
                    source,
                    channel,
                    campaign,
                    product: None,
                    industry: None,
                    region: None,
                    referred_by: None,
                    personal,
                    is_test,
                    occurred_at,
                }))
            },
        );
    let contact = (
        arb_id(),
        arb_id(),
        arb_label(),
        proptest::option::of(arb_personal()),
        any::<bool>(),
        arb_time(),
    )
        .prop_map(
            |(contact_id, account_id, role, personal, is_test, occurred_at)| {
                DomainEvent::from(crm_domain::aggregates::ContactEvent::from(ContactAdded {
                    contact_id,
                    account_id,
                    role,
                    personal,
                    is_test,
                    occurred_at,
                }))
            },
        );
    prop_oneof![lead, contact]
}

fn arb_commerce_events() -> impl Strategy<Value = DomainEvent> {
    let line = (
        arb_id(),
        1u32..1000,
        arb_money(),
        proptest::option::of(arb_money()),
    )
        .prop_map(|(product, quantity, amount, cost)| OrderLine {
            product,
            quantity,
            amount,
            cost,
        });
    let order = (
        arb_id(),
        arb_id(),
        proptest::collection::vec(line, 1..4),
        arb_money(),
        proptest::option::of(arb_id()),
        arb_time(),
    )
        .prop_map(
            |(order_id, account_id, lines, total, opportunity, occurred_at)| {
                DomainEvent::from(crm_domain::aggregates::OrderEvent::from(OrderPlaced {
                    order_id,
                    account_id,
                    lines,
                    total,
                    channel: SalesChannel::Online,
                    campaign: None,
                    opportunity,
                    is_test: false,
                    occurred_at,
                }))
            },
        );
    let subscription = (
        (
            arb_id(),
            arb_id(),
            arb_label(),
            arb_id(),
            arb_money(),
            1u32..=120,
        ),
        (
            arb_time(),
            arb_time(),
            any::<bool>(),
            proptest::option::of(arb_id()),
        ),
    )
        .prop_map(
            |(
                (subscription_id, account_id, plan, product, monthly_amount, term_months),
                (occurred_at, term_end, trial, order),
            )| {
                DomainEvent::from(crm_domain::aggregates::SubscriptionEvent::from(
                    SubscriptionStarted {
                        subscription_id,
                        account_id,
                        plan,
                        product,
                        kind: SubscriptionKind::ServiceContract,
                        monthly_amount,
                        term_months,
                        term_end,
                        trial,
                        order,
                        opportunity: None,
                        is_test: true,
                        occurred_at,
                    },
                ))
            },
        );
    prop_oneof![order, subscription]
}

fn arb_service_events() -> impl Strategy<Value = DomainEvent> {
    let case = (
        arb_id(),
        proptest::option::of(arb_id()),
        arb_label(),
        prop_oneof![Just(CasePriority::Low), Just(CasePriority::Urgent)],
        arb_channel(),
        proptest::option::of(arb_label()),
        any::<bool>(),
        arb_time(),
    )
        .prop_map(
            |(
                case_id,
                account_id,
                case_type,
                priority,
                channel,
                sla_policy,
                is_complaint,
                occurred_at,
            )| {
                DomainEvent::from(CaseEvent::from(CaseOpened {
                    case_id,
                    account_id,
                    contact_id: None,
                    case_type,
                    category: None,
                    priority,
                    channel,
                    sla_policy,
                    is_complaint,
                    is_test: false,
                    occurred_at,
                }))
            },
        );
    let interaction = (
        (
            arb_id(),
            proptest::option::of(arb_id()),
            arb_channel(),
            any::<u32>(),
            any::<u32>(),
            any::<u32>(),
        ),
        (
            proptest::option::of(arb_id()),
            prop_oneof![
                Just(InteractionOutcome::Connected),
                Just(InteractionOutcome::NoAnswer),
                Just(InteractionOutcome::AutoReply)
            ],
            proptest::option::of(arb_label()),
            proptest::option::of(arb_id()),
            arb_time(),
        ),
    )
        .prop_map(
            |(
                (interaction_id, account, channel, duration_s, hold_s, wrap_s),
                (agent, outcome, call_id, case, occurred_at),
            )| {
                DomainEvent::from(crm_domain::aggregates::InteractionEvent::from(
                    InteractionLogged {
                        interaction_id,
                        account,
                        contact: None,
                        lead: None,
                        channel,
                        direction: Direction::Outbound,
                        purpose: Purpose::Sales,
                        duration_s,
                        hold_s,
                        wrap_s,
                        agent,
                        outcome,
                        call_id,
                        opportunity: None,
                        case,
                        campaign: None,
                        is_test: false,
                        occurred_at,
                    },
                ))
            },
        );
    prop_oneof![case, interaction]
}

fn arb_feedback_events() -> impl Strategy<Value = DomainEvent> {
    let survey = (
        arb_id(),
        prop_oneof![
            (0u8..=10).prop_map(|s| SurveyScore::new(SurveyKind::Nps, s).unwrap()),
            (1u8..=5).prop_map(|s| SurveyScore::new(SurveyKind::Csat, s).unwrap()),
            (1u8..=7).prop_map(|s| SurveyScore::new(SurveyKind::Ces, s).unwrap()),
        ],
        proptest::option::of(arb_id()),
        proptest::option::of(any::<u128>()),
        any::<bool>(),
        arb_time(),
    )
        .prop_map(
            |(feedback_id, answer, contact, trigger, by_employee, occurred_at)| {
                DomainEvent::from(crm_domain::aggregates::FeedbackEvent::from(
                    SurveyAnswered {
                        feedback_id,
                        answer,
                        contact,
                        trigger: trigger.map(uuid::Uuid::from_u128),
                        by_employee,
                        is_test: false,
                        occurred_at,
                    },
                ))
            },
        );
    let review = (
        arb_id(),
        (1u8..=10).prop_flat_map(|max| (1..=max, Just(max))),
        arb_label(),
        arb_time(),
    )
        .prop_map(|(feedback_id, (value, max), author_ref, occurred_at)| {
            DomainEvent::from(crm_domain::aggregates::FeedbackEvent::from(ReviewPosted {
                feedback_id,
                platform: ReviewPlatform::Community,
                rating: Rating::new(value, max).unwrap(),
                product: None,
                author_ref,
                by_employee: false,
                is_test: false,
                occurred_at,
            }))
        });
    let response = (
        arb_id(),
        prop_oneof![
            arb_id().prop_map(Respondent::Lead),
            arb_id().prop_map(Respondent::Contact)
        ],
        arb_time(),
    )
        .prop_map(|(campaign_id, respondent, occurred_at)| {
            DomainEvent::from(crm_domain::aggregates::CampaignEvent::from(
                CampaignResponded {
                    campaign_id,
                    respondent,
                    response_type: ResponseType::Attend,
                    occurred_at,
                },
            ))
        });
    prop_oneof![survey, review, response]
}

fn arb_event() -> impl Strategy<Value = DomainEvent> {
    prop_oneof![
        arb_opportunity_events(),
        arb_people_events(),
        arb_commerce_events(),
        arb_service_events(),
        arb_feedback_events(),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn codec_round_trip(event in arb_event()) {
        let payload = event.to_payload().unwrap();
        let back = DomainEvent::from_payload(event.event_type(), event.schema_version(), &payload).unwrap();
        prop_assert_eq!(back, event);
    }

    #[test]
    fn payload_carries_no_type_tag(event in arb_event()) {
        let payload = event.to_payload().unwrap();
        let json: serde_json::Value = serde_json::from_slice(&payload).unwrap();
        let obj = json.as_object().unwrap();
        prop_assert!(obj.contains_key("occurred_at"));
        prop_assert!(!obj.contains_key(event.event_type()));
        prop_assert_eq!(event.carries_personal_data(), obj.contains_key("personal"));
    }
}
