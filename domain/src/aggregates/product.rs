//! Product: an entry of the product catalogue (reference data). Opportunities, orders and
//! subscriptions name products by [`ProductId`]; this stream says what the id stands for
//! (name, series, list price), so breakdowns by product and discounts against the list price
//! can be computed.
//!
//! Rules: a product is listed once; a list price is never negative.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::aggregate::Aggregate;
use crate::values::{Label, Money, MoneyError, ProductId};

// ---------------------------------------------------------------------------------------------
// Commands

/// Add a product to the catalogue (creation).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ListProduct {
    pub product_id: ProductId,
    pub name: Label,
    /// Product line or family (`"GTX"`).
    pub series: Option<Label>,
    /// Suggested retail price.
    pub list_price: Option<Money>,
    #[serde(deserialize_with = "crate::values::instant::deserialize")]
    pub occurred_at: DateTime<Utc>,
}

command_enum! {
    /// Commands of the product aggregate.
    pub enum ProductCommand {
        id: product_id: ProductId,
        commands: { ListProduct }
    }
}

// ---------------------------------------------------------------------------------------------
// Events

/// A product was added to the catalogue. Creation event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ProductListed {
    pub product_id: ProductId,
    pub name: Label,
    pub series: Option<Label>,
    pub list_price: Option<Money>,
    #[serde(deserialize_with = "crate::values::instant::deserialize")]
    pub occurred_at: DateTime<Utc>,
}

event_enum! {
    /// Events of the product aggregate.
    pub enum ProductEvent {
        category: "product",
        id: product_id: ProductId,
        events: { ProductListed = 1 }
    }
}

// ---------------------------------------------------------------------------------------------
// Errors

/// Why a product command was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProductError {
    #[error("product `{id}` is already listed; choose another id")]
    AlreadyExists { id: ProductId },
    #[error("product `{id}`: {source}")]
    Money { id: ProductId, source: MoneyError },
}

// ---------------------------------------------------------------------------------------------
// State

/// The product aggregate.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Product {
    listed: Option<ProductId>,
}

impl Product {
    /// True once the product is listed.
    #[must_use]
    pub fn is_listed(&self) -> bool {
        self.listed.is_some()
    }
}

impl Aggregate for Product {
    const CATEGORY: &'static str = ProductEvent::CATEGORY;
    type Command = ProductCommand;
    type Event = ProductEvent;
    type Error = ProductError;

    fn handle(&self, command: &ProductCommand) -> Result<Vec<ProductEvent>, ProductError> {
        match command {
            ProductCommand::ListProduct(c) => {
                if self.listed.is_some() {
                    return Err(ProductError::AlreadyExists {
                        id: c.product_id.clone(),
                    });
                }
                let list_price = c
                    .list_price
                    .map(|m| m.ensure_non_negative("list price"))
                    .transpose()
                    .map_err(|source| ProductError::Money {
                        id: c.product_id.clone(),
                        source,
                    })?;
                Ok(vec![ProductListed {
                    product_id: c.product_id.clone(),
                    name: c.name.clone(),
                    series: c.series.clone(),
                    list_price,
                    occurred_at: c.occurred_at,
                }
                .into()])
            }
        }
    }

    fn apply(&mut self, event: &ProductEvent) {
        match event {
            ProductEvent::ProductListed(e) => self.listed = Some(e.product_id.clone()),
        }
    }
}
