//! [`DomainEvent`]: every event of every aggregate in one enum, with the metadata the event
//! store's envelope needs (type name, schema version, category, stream id, business time).
//!
//! **Architecture Invariant:** an event type name equals its struct and variant name
//! (`"OpportunityWon"`), is unique across the whole domain and is never renamed once stored;
//! a changed payload gets a new schema version and an upcaster (see [`crate::upcast`]).

use chrono::{DateTime, Utc};

use crate::aggregate::stream_id;
use crate::aggregates::account::AccountEvent;
use crate::aggregates::agent::AgentEvent;
use crate::aggregates::campaign::CampaignEvent;
use crate::aggregates::case::CaseEvent;
use crate::aggregates::contact::ContactEvent;
use crate::aggregates::feedback::FeedbackEvent;
use crate::aggregates::interaction::InteractionEvent;
use crate::aggregates::lead::LeadEvent;
use crate::aggregates::opportunity::OpportunityEvent;
use crate::aggregates::order::OrderEvent;
use crate::aggregates::product::ProductEvent;
use crate::aggregates::subscription::SubscriptionEvent;
use crate::aggregates::{
    Account, Agent, Campaign, Case, Contact, Feedback, Interaction, Lead, Opportunity, Order,
    Product, Subscription,
};

/// An event was converted to the wrong aggregate's event type.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("event `{event_type}` belongs to category `{found}`, not `{expected}`; route it to the `{found}` aggregate")]
pub struct WrongCategory {
    /// Category that was asked for.
    pub expected: &'static str,
    /// Category the event belongs to.
    pub found: &'static str,
    /// The event's type name.
    pub event_type: &'static str,
}

macro_rules! domain_event {
    ($( $variant:ident($inner:ident): $aggregate:ty ),+ $(,)?) => {
        /// Every aggregate of the domain, in the order of [`DomainEvent`]'s variants: the list
        /// [`crate::registry::Registry::builtin`] serves.
        pub(crate) static AGGREGATES: &[&dyn crate::registry::AggregateKind] =
            &[ $( &crate::registry::Kind::<$aggregate>::new(), )+ ];

        /// Any event of the domain, tagged by aggregate.
        #[derive(Debug, Clone, PartialEq, Eq)]
        pub enum DomainEvent {
            $(
                #[doc = concat!("An event of the `", stringify!($variant), "` aggregate.")]
                $variant($inner),
            )+
        }

        /// `(category, [(event type, current schema version)])` for every aggregate.
        pub const EVENT_CATALOG: &[(&str, &[(&str, u16)])] =
            &[ $( ($inner::CATEGORY, $inner::EVENT_TYPES), )+ ];

        impl DomainEvent {
            /// Stable stored type name, e.g. `"OpportunityWon"`.
            #[must_use]
            pub fn event_type(&self) -> &'static str {
                match self { $( Self::$variant(e) => e.event_type(), )+ }
            }

            /// Current schema version of this event type (starts at 1).
            #[must_use]
            pub fn schema_version(&self) -> u16 {
                match self { $( Self::$variant(e) => e.schema_version(), )+ }
            }

            /// Stream category, e.g. `"opportunity"`.
            #[must_use]
            pub fn category(&self) -> &'static str {
                match self { $( Self::$variant(_) => $inner::CATEGORY, )+ }
            }

            /// Business time of the fact.
            #[must_use]
            pub fn occurred_at(&self) -> DateTime<Utc> {
                match self { $( Self::$variant(e) => e.occurred_at(), )+ }
            }

            /// Id of the aggregate instance, as text.
            #[must_use]
            pub fn aggregate_id(&self) -> &str {
                match self { $( Self::$variant(e) => e.aggregate_id().as_str(), )+ }
            }

            /// Stream the event belongs to: `"{category}-{id}"`, e.g. `"opportunity-42"`.
            #[must_use]
            pub fn stream_id(&self) -> String {
                stream_id(self.category(), self.aggregate_id())
            }

            pub(crate) fn encode_json(&self) -> Result<Vec<u8>, serde_json::Error> {
                match self { $( Self::$variant(e) => e.encode(), )+ }
            }

            /// The JSON Schema of every domain event type's payload, by type name in
            /// catalog order; shared types go to `generator`'s definitions.
            pub fn event_schemas(
                generator: &mut schemars::SchemaGenerator,
            ) -> Vec<(&'static str, schemars::Schema)> {
                let mut all = Vec::new();
                $( all.extend($inner::event_schemas(generator)); )+
                all
            }

            pub(crate) fn decode_json(
                event_type: &str,
                value: serde_json::Value,
            ) -> Option<Result<Self, serde_json::Error>> {
                let category = Self::category_of(event_type)?;
                $(
                    if category == $inner::CATEGORY {
                        return $inner::decode(event_type, value)
                            .map(|result| result.map(Self::$variant));
                    }
                )+
                None
            }

            /// As `decode_json`, straight from the payload bytes of a current-version event.
            pub(crate) fn decode_json_slice(
                event_type: &str,
                payload: &[u8],
            ) -> Option<Result<Self, serde_json::Error>> {
                let category = Self::category_of(event_type)?;
                $(
                    if category == $inner::CATEGORY {
                        return $inner::decode_slice(event_type, payload)
                            .map(|result| result.map(Self::$variant));
                    }
                )+
                None
            }
        }

        $(
            impl From<$inner> for DomainEvent {
                fn from(event: $inner) -> Self {
                    Self::$variant(event)
                }
            }

            impl crate::registry::EventEnum for $inner {
                const CATEGORY: &'static str = $inner::CATEGORY;
                const EVENT_TYPES: &'static [(&'static str, u16)] = $inner::EVENT_TYPES;

                fn to_encoded(&self) -> Result<crate::codec::EncodedEvent, crate::codec::CodecError> {
                    DomainEvent::$variant(self.clone()).encode()
                }

                fn from_stored(
                    event_type: &str,
                    schema_version: u16,
                    payload: &[u8],
                ) -> Result<Self, crate::registry::FoldError> {
                    let event = DomainEvent::from_payload(event_type, schema_version, payload)?;
                    Ok(Self::try_from(event)?)
                }

                fn event_schemas(
                    generator: &mut schemars::SchemaGenerator,
                ) -> Vec<(&'static str, schemars::Schema)> {
                    $inner::event_schemas(generator)
                }
            }

            impl TryFrom<DomainEvent> for $inner {
                type Error = WrongCategory;
                fn try_from(event: DomainEvent) -> Result<Self, WrongCategory> {
                    match event {
                        DomainEvent::$variant(e) => Ok(e),
                        other => Err(WrongCategory {
                            expected: $inner::CATEGORY,
                            found: other.category(),
                            event_type: other.event_type(),
                        }),
                    }
                }
            }
        )+
    };
}

// The one list of the domain's aggregates: adding an aggregate here (and its module) makes it
// known to the codec, the registry, and through it to every layer above.
domain_event! {
    Lead(LeadEvent): Lead,
    Account(AccountEvent): Account,
    Contact(ContactEvent): Contact,
    Opportunity(OpportunityEvent): Opportunity,
    Subscription(SubscriptionEvent): Subscription,
    Order(OrderEvent): Order,
    Interaction(InteractionEvent): Interaction,
    Case(CaseEvent): Case,
    Feedback(FeedbackEvent): Feedback,
    Campaign(CampaignEvent): Campaign,
    Product(ProductEvent): Product,
    Agent(AgentEvent): Agent,
}

impl DomainEvent {
    /// True for events whose payload holds a `personal` field ([`crate::personal`]): the event
    /// store encrypts that field with the key of [`DomainEvent::stream_id`]'s person.
    #[must_use]
    pub fn carries_personal_data(&self) -> bool {
        matches!(
            self,
            Self::Lead(LeadEvent::LeadCaptured(_))
                | Self::Contact(
                    ContactEvent::ContactAdded(_) | ContactEvent::ContactPersonalDataChanged(_)
                )
                | Self::Agent(AgentEvent::AgentRegistered(_))
        )
    }

    /// Every `(category, event type, current schema version)` of the domain.
    pub fn catalog() -> impl Iterator<Item = (&'static str, &'static str, u16)> {
        EVENT_CATALOG.iter().flat_map(|(category, types)| {
            types
                .iter()
                .map(move |(event_type, version)| (*category, *event_type, *version))
        })
    }

    /// The top-level payload fields of `event_type` (current schema version), `None` if the
    /// type is unknown.
    #[must_use]
    pub fn payload_fields(event_type: &str) -> Option<&'static [String]> {
        static FIELDS: std::sync::OnceLock<std::collections::BTreeMap<&'static str, Vec<String>>> =
            std::sync::OnceLock::new();
        FIELDS
            .get_or_init(|| {
                let mut generator = schemars::SchemaGenerator::default();
                Self::event_schemas(&mut generator)
                    .into_iter()
                    .map(|(t, schema)| {
                        let fields = schema
                            .get("properties")
                            .and_then(serde_json::Value::as_object)
                            .map(|p| p.keys().cloned().collect())
                            .unwrap_or_default();
                        (t, fields)
                    })
                    .collect()
            })
            .get(event_type)
            .map(Vec::as_slice)
    }

    /// Current schema version of `event_type`, `None` if the type is unknown.
    #[must_use]
    pub fn current_schema_version(event_type: &str) -> Option<u16> {
        Self::catalog()
            .find(|(_, t, _)| *t == event_type)
            .map(|(_, _, v)| v)
    }

    /// Category of `event_type`, `None` if the type is unknown.
    #[must_use]
    pub fn category_of(event_type: &str) -> Option<&'static str> {
        Self::catalog()
            .find(|(_, t, _)| *t == event_type)
            .map(|(c, _, _)| c)
    }
}
