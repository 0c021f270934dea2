//! `tracing` setup: pretty or JSON lines, filtered by a directive (overridable with `RUST_LOG`).

use tracing_subscriber::EnvFilter;

use crate::config::{LogConfig, LogFormat};

/// Targets that log every SIP message at `info` and `debug`: held to `warn` unless the configured
/// directive names them (the gateway logs nothing per packet; the SIP bridge logs per call).
const CHATTY_TARGETS: [&str; 1] = ["rsipstack"];

/// The configured level with the chatty targets held to `warn`.
fn configured_directive(level: &str) -> String {
    let mut directive = level.trim().to_string();
    for target in CHATTY_TARGETS {
        if !directive.contains(target) {
            if !directive.is_empty() {
                directive.push(',');
            }
            directive.push_str(target);
            directive.push_str("=warn");
        }
    }
    directive
}

/// Installs the global subscriber; `RUST_LOG`, when set, wins over the configured level.
pub fn init(config: &LogConfig) -> anyhow::Result<()> {
    let filter = match std::env::var("RUST_LOG") {
        Ok(directive) if !directive.is_empty() => EnvFilter::try_new(directive)?,
        _ => EnvFilter::try_new(configured_directive(&config.level))?,
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    let installed = match config.format {
        LogFormat::Pretty => builder.try_init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .try_init(),
    };
    installed.map_err(|e| anyhow::anyhow!("installing the logger: {e}"))
}

#[cfg(test)]
mod tests {
    use super::configured_directive;

    #[test]
    fn the_sip_stack_is_held_to_warnings_unless_named() {
        assert_eq!(configured_directive("info"), "info,rsipstack=warn");
        assert_eq!(
            configured_directive("debug,dartmouth=trace"),
            "debug,dartmouth=trace,rsipstack=warn"
        );
        assert_eq!(configured_directive("rsipstack=debug"), "rsipstack=debug");
        assert_eq!(configured_directive(""), "rsipstack=warn");
    }
}
