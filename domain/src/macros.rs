//! Declarative macros that generate the repetitive parts of every aggregate's command and event
//! enums, so that the type name, schema version and dispatch code cannot drift apart.

/// Generates an aggregate's event enum.
///
/// Each listed event is a struct of the same name with public `occurred_at` and `$id_field`
/// fields. The enum variant name **is** the stored event type name (`"OpportunityWon"`); the
/// number after `=` is the event's current schema version. Generated items:
/// `CATEGORY`, `EVENT_TYPES`, `event_type()`, `schema_version()`, `occurred_at()`,
/// `aggregate_id()`, JSON encode/decode helpers, `From<Struct>` for the enum and
/// `EVENT_TYPE`/`SCHEMA_VERSION` constants on each struct.
macro_rules! event_enum {
    (
        $(#[$meta:meta])*
        pub enum $name:ident {
            category: $category:literal,
            id: $id_field:ident: $id_ty:ty,
            events: { $( $variant:ident = $version:literal ),+ $(,)? }
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
        // The variant name is the stored event type name, so it repeats the aggregate's name.
        #[allow(clippy::enum_variant_names)]
        pub enum $name {
            $(
                #[doc = concat!("See [`", stringify!($variant), "`].")]
                $variant($variant),
            )+
        }

        impl $name {
            /// Stream category of this aggregate.
            pub const CATEGORY: &'static str = $category;

            /// Every event type of this aggregate with its current schema version.
            pub const EVENT_TYPES: &'static [(&'static str, u16)] =
                &[ $( (stringify!($variant), $version), )+ ];

            /// Stable stored type name, equal to the variant name.
            #[must_use]
            pub fn event_type(&self) -> &'static str {
                match self { $( Self::$variant(_) => stringify!($variant), )+ }
            }

            /// The JSON Schema of each event type's payload (the event struct), by type name
            /// in [`Self::EVENT_TYPES`] order; shared types go to `generator`'s definitions.
            pub fn event_schemas(
                generator: &mut schemars::SchemaGenerator,
            ) -> Vec<(&'static str, schemars::Schema)> {
                vec![ $( (
                    stringify!($variant),
                    <$variant as schemars::JsonSchema>::json_schema(generator),
                ), )+ ]
            }

            /// Current schema version of this event type.
            #[must_use]
            pub fn schema_version(&self) -> u16 {
                match self { $( Self::$variant(_) => $version, )+ }
            }

            /// Business time of the fact.
            #[must_use]
            pub fn occurred_at(&self) -> chrono::DateTime<chrono::Utc> {
                match self { $( Self::$variant(e) => e.occurred_at, )+ }
            }

            /// Id of the aggregate instance the event belongs to.
            #[must_use]
            pub fn aggregate_id(&self) -> &$id_ty {
                match self { $( Self::$variant(e) => &e.$id_field, )+ }
            }

            /// JSON bytes of the payload (the struct alone, without a type tag).
            pub(crate) fn encode(&self) -> Result<Vec<u8>, serde_json::Error> {
                match self { $( Self::$variant(e) => serde_json::to_vec(e), )+ }
            }

            /// Decodes a current-version payload; `None` if the type is not one of ours.
            pub(crate) fn decode(
                event_type: &str,
                value: serde_json::Value,
            ) -> Option<Result<Self, serde_json::Error>> {
                match event_type {
                    $( stringify!($variant) =>
                        Some(serde_json::from_value::<$variant>(value).map(Self::$variant)), )+
                    _ => None,
                }
            }

            /// Decodes a current-version payload straight from its JSON bytes
            /// (no intermediate `Value`); `None` if the type is not one of ours.
            pub(crate) fn decode_slice(
                event_type: &str,
                payload: &[u8],
            ) -> Option<Result<Self, serde_json::Error>> {
                match event_type {
                    $( stringify!($variant) =>
                        Some(crate::codec::json_slice::<$variant>(payload).map(Self::$variant)), )+
                    _ => None,
                }
            }
        }

        $(
            impl $variant {
                /// Stable stored type name.
                pub const EVENT_TYPE: &'static str = stringify!($variant);
                /// Current schema version.
                pub const SCHEMA_VERSION: u16 = $version;
            }

            impl From<$variant> for $name {
                fn from(event: $variant) -> Self {
                    Self::$variant(event)
                }
            }
        )+
    };
}

/// Generates an aggregate's command enum: one variant per command struct (same name), plus
/// `target_id()`, `command_type()`, `occurred_at()`, `COMMAND_TYPES` and the
/// [`crate::registry::CommandEnum`] impl the aggregate registry reads (with each command's
/// JSON Schema, from the command struct's `schemars::JsonSchema` derive).
macro_rules! command_enum {
    (
        $(#[$meta:meta])*
        pub enum $name:ident {
            id: $id_field:ident: $id_ty:ty,
            commands: { $( $variant:ident ),+ $(,)? }
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
        #[allow(clippy::enum_variant_names)]
        pub enum $name {
            $(
                #[doc = concat!("See [`", stringify!($variant), "`].")]
                $variant($variant),
            )+
        }

        impl $name {
            /// Id of the aggregate instance the command is for: load stream
            /// `"{CATEGORY}-{target_id}"` before handling it.
            #[must_use]
            pub fn target_id(&self) -> &$id_ty {
                match self { $( Self::$variant(c) => &c.$id_field, )+ }
            }

            /// Name of the command, e.g. `"WinOpportunity"`.
            #[must_use]
            pub fn command_type(&self) -> &'static str {
                match self { $( Self::$variant(_) => stringify!($variant), )+ }
            }

            /// Business time the command reports.
            #[must_use]
            pub fn occurred_at(&self) -> chrono::DateTime<chrono::Utc> {
                match self { $( Self::$variant(c) => c.occurred_at, )+ }
            }

            /// Every command name of the aggregate, in declaration order.
            pub const COMMAND_TYPES: &'static [&'static str] = &[ $( stringify!($variant), )+ ];
        }

        impl crate::registry::CommandEnum for $name {
            const COMMAND_TYPES: &'static [&'static str] = $name::COMMAND_TYPES;

            fn command_type(&self) -> &'static str {
                $name::command_type(self)
            }

            fn target(&self) -> &str {
                self.target_id().as_str()
            }

            fn command_schemas(
                generator: &mut schemars::SchemaGenerator,
            ) -> Vec<(&'static str, schemars::Schema)> {
                vec![ $( (
                    stringify!($variant),
                    <$variant as schemars::JsonSchema>::json_schema(generator),
                ), )+ ]
            }
        }

        $(
            impl From<$variant> for $name {
                fn from(command: $variant) -> Self {
                    Self::$variant(command)
                }
            }
        )+
    };
}
