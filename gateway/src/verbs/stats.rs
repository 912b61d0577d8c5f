//! `crm stats`: events per type and stream category, and the head as an anchor.

use std::io::Write;
use std::process::ExitCode;

use crm_app::config::Flags;
use crm_app::inspect;
use crm_app::store::Create;

use super::{with_store, Globals, JsonFlag};

/// Runs `crm stats`.
///
/// # Errors
/// No log, or a read failure.
pub async fn run(globals: &Globals, args: JsonFlag) -> anyhow::Result<ExitCode> {
    let config = globals.config(Flags::default())?;
    let stats = with_store(&config, Create::Never, async |store| {
        Ok(inspect::stats(store).await?)
    })
    .await?;
    let mut stdout = std::io::stdout().lock();
    if args.json {
        writeln!(stdout, "{}", serde_json::to_string(&stats)?)?;
    } else {
        write!(stdout, "{stats}")?;
    }
    Ok(ExitCode::SUCCESS)
}
