//! Logging set-up: human-readable on a terminal, one JSON object per line
//! with `--log-format json`. `RUST_LOG` overrides the level. Metric names
//! live in `metrics`; which parts are alive (readiness) in `health`.

pub mod health;
pub mod metrics;

use clap::ValueEnum;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Human,
    Json,
}

pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    // Colours only for a person at a terminal, never into files or the journal.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Human => builder.with_target(false).try_init(),
        LogFormat::Json => tracing::subscriber::set_global_default(json(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
            std::io::stderr,
        ))
        .map_err(Into::into),
    };
}

/// The JSON log as `--log-format json` writes it, into `writer`.
pub fn json<W>(filter: EnvFilter, writer: W) -> impl tracing::Subscriber + Send + Sync + 'static
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    // No `target` of tracing's own: events carry a `target` field (the
    // delivery target, a device name) that a second key would shadow.
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(false)
        .with_writer(writer)
        .json()
        .with_target(false)
        .flatten_event(true)
        .with_current_span(true)
        .with_span_list(false)
        .finish()
}
