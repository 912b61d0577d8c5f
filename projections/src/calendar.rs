//! The business calendar and business clock of the read models: the domain's
//! [`BusinessCalendar`] (working hours, weekends, holidays, one fixed UTC offset) with the
//! clock functions built on it ([`elapsed`], [`due`]), re-exported here so the read models
//! and their configuration name one type. See [`crm_domain::calendar`].

pub use crm_domain::calendar::{due, elapsed, BusinessCalendar, Stop, CALENDAR_DAYS_MAX};
