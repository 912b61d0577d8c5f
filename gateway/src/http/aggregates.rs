//! The aggregates the API takes commands for: their stream category, their command names and
//! event types, and the glue that lets [`super::commands`] run any of them generically.

use crm_domain::aggregates::{
    AccountCommand, AgentCommand, CampaignCommand, CaseCommand, ContactCommand, FeedbackCommand,
    InteractionCommand, LeadCommand, OpportunityCommand, OrderCommand, ProductCommand,
    SubscriptionCommand,
};
use crm_domain::EVENT_CATALOG;
use serde::de::DeserializeOwned;
use serde::Serialize;
use utoipa::ToSchema;

/// What the API needs of a command enum: its target instance and its name.
pub trait CommandOf: DeserializeOwned {
    /// Id of the aggregate instance (the stream is `"{category}-{target}"`).
    fn target(&self) -> &str;
    /// The command's name, e.g. `"WinOpportunity"`.
    fn name(&self) -> &'static str;
}

macro_rules! api_aggregates {
    ($( $command:ty ),+ $(,)?) => {
        $(
            impl CommandOf for $command {
                fn target(&self) -> &str {
                    self.target_id().as_str()
                }
                fn name(&self) -> &'static str {
                    self.command_type()
                }
            }
        )+
    };
}

api_aggregates! {
    LeadCommand, AccountCommand, ContactCommand, OpportunityCommand, SubscriptionCommand,
    OrderCommand, InteractionCommand, CaseCommand, FeedbackCommand, CampaignCommand,
    ProductCommand, AgentCommand,
}

/// Command names per stream category. The domain's command enums do not list their variants,
/// so they are written out here; a test checks each list against the enum's deserializer.
pub const COMMANDS: &[(&str, &[&str])] = &[
    (
        "lead",
        &[
            "CaptureLead",
            "ScoreLead",
            "QualifyLead",
            "DisqualifyLead",
            "RecycleLead",
            "ConvertLead",
            "EraseLeadPersonalData",
        ],
    ),
    (
        "account",
        &["OpenAccount", "ChangeAccountOwner", "ChangeAccountSegment"],
    ),
    (
        "contact",
        &[
            "AddContact",
            "RecordContactDeparture",
            "OptOutContact",
            "ChangeContactPersonalData",
            "EraseContactPersonalData",
        ],
    ),
    (
        "opportunity",
        &[
            "OpenOpportunity",
            "ChangeOpportunityStage",
            "ChangeOpportunityAmount",
            "ChangeOpportunityCloseDate",
            "ChangeOpportunityOwner",
            "IdentifyCompetitor",
            "SendProposal",
            "WinOpportunity",
            "LoseOpportunity",
            "ReopenOpportunity",
            "VoidOpportunity",
        ],
    ),
    (
        "subscription",
        &[
            "StartSubscription",
            "ChangeSubscription",
            "RenewSubscription",
            "CancelSubscription",
            "ExpireSubscription",
            "RecordSubscriptionDetails",
        ],
    ),
    (
        "order",
        &[
            "PlaceOrder",
            "CancelOrder",
            "IssueInvoice",
            "RecordPayment",
            "RecordPaymentOverdue",
            "RefundOrder",
        ],
    ),
    ("interaction", &["LogInteraction"]),
    (
        "case",
        &[
            "OpenCase",
            "ReclassifyCase",
            "AssignCase",
            "RecordFirstResponse",
            "PauseCaseSla",
            "ResumeCaseSla",
            "EscalateCase",
            "ResolveCase",
            "ReopenCase",
            "CloseCase",
            "RepeatCaseClose",
        ],
    ),
    (
        "feedback",
        &["SendSurvey", "AnswerSurvey", "PostReview", "RemoveReview"],
    ),
    (
        "campaign",
        &[
            "LaunchCampaign",
            "RecordCampaignCost",
            "RecordCampaignResponse",
            "EndCampaign",
            "CancelCampaign",
        ],
    ),
    ("product", &["ListProduct"]),
    ("agent", &["RegisterAgent", "AssignRep"]),
];

/// One aggregate in the catalog the API publishes.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct AggregateInfo {
    /// Stream category, e.g. `opportunity`; streams are `"{category}-{id}"`.
    pub category: &'static str,
    /// Command names: the `type` of a command body.
    pub commands: Vec<&'static str>,
    /// Event types the aggregate records, with their current schema version.
    pub events: Vec<EventTypeInfo>,
}

/// An event type and its current schema version.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct EventTypeInfo {
    /// Stored type name, e.g. `OpportunityWon`.
    pub event_type: &'static str,
    /// Current schema version.
    pub schema_version: u16,
}

/// Every aggregate with its commands and event types.
#[must_use]
pub fn catalog() -> Vec<AggregateInfo> {
    COMMANDS
        .iter()
        .map(|(category, commands)| AggregateInfo {
            category,
            commands: commands.to_vec(),
            events: EVENT_CATALOG
                .iter()
                .filter(|(c, _)| c == category)
                .flat_map(|(_, types)| types.iter())
                .map(|(event_type, schema_version)| EventTypeInfo {
                    event_type,
                    schema_version: *schema_version,
                })
                .collect(),
        })
        .collect()
}

/// The categories of [`COMMANDS`], for error messages.
#[must_use]
pub fn categories() -> String {
    COMMANDS
        .iter()
        .map(|(c, _)| *c)
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crm_domain::aggregates::{
        Account, Agent, Campaign, Case, Contact, Feedback, Lead, Opportunity, Order, Subscription,
    };
    use crm_domain::Aggregate;

    /// The names serde expects for `C`, read from its "unknown variant" message.
    fn variants<C: DeserializeOwned>() -> Vec<String> {
        let err = serde_json::from_value::<C>(serde_json::json!({"NoSuchCommand": {}}))
            .err()
            .unwrap()
            .to_string();
        // "unknown variant `X`, expected `A`", "... expected `A` or `B`",
        // "... expected one of `A`, `B`, `C`".
        let list = err.rsplit("expected ").next().unwrap_or(&err);
        let list = list.split(" at line").next().unwrap_or(list);
        let list = list.trim_start_matches("one of ");
        list.split(", ")
            .flat_map(|s| s.split(" or "))
            .map(|s| s.trim_matches(|c| c == '`' || c == ' ').to_owned())
            .filter(|s| !s.is_empty())
            .collect()
    }

    fn listed(category: &str) -> Vec<String> {
        COMMANDS
            .iter()
            .find(|(c, _)| *c == category)
            .unwrap()
            .1
            .iter()
            .map(|s| (*s).to_owned())
            .collect()
    }

    #[test]
    fn command_lists_match_the_domain_enums() {
        let expect = |category: &str, names: Vec<String>| {
            assert_eq!(listed(category), names, "{category}");
        };
        expect(Lead::CATEGORY, variants::<LeadCommand>());
        expect(Account::CATEGORY, variants::<AccountCommand>());
        expect(Contact::CATEGORY, variants::<ContactCommand>());
        expect(Opportunity::CATEGORY, variants::<OpportunityCommand>());
        expect(Subscription::CATEGORY, variants::<SubscriptionCommand>());
        expect(Order::CATEGORY, variants::<OrderCommand>());
        expect(Case::CATEGORY, variants::<CaseCommand>());
        expect(Feedback::CATEGORY, variants::<FeedbackCommand>());
        expect(Campaign::CATEGORY, variants::<CampaignCommand>());
        expect(Agent::CATEGORY, variants::<AgentCommand>());
        // Single-variant enums: serde names the one variant.
        assert_eq!(variants::<ProductCommand>(), ["ListProduct"]);
        assert_eq!(variants::<InteractionCommand>(), ["LogInteraction"]);
    }

    #[test]
    fn every_category_with_events_takes_commands() {
        let cats: Vec<_> = COMMANDS.iter().map(|(c, _)| *c).collect();
        for (category, _) in EVENT_CATALOG {
            assert!(cats.contains(category), "{category}");
        }
        assert!(catalog().iter().all(|a| !a.events.is_empty()));
    }
}
