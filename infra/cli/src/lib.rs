//! The `toaster` command's library: what its subcommands do beyond serving (which is
//! [`toaster_host`]) and benchmarking (`toaster_bench`), usable from tests: backing up
//! and restoring the database, its daily retention, building the components.

// Functions stay under 100 lines (clippy.toml); tests may run longer.
#![cfg_attr(not(test), warn(clippy::too_many_lines))]

pub mod backup;
pub mod build;
pub mod retention;

/// An error and its causes for a person: each cause once. anyhow's `{:#}` prints every
/// level of the chain, but many errors print their cause in their own message too
/// (tokio-postgres: `error connecting to server: <cause>`, then `<cause>` again as the
/// source), so the same text came out two or three times. A cause already said is
/// left out, and so is one that only wraps a cause already said (`db error: <the
/// server's message>` after the server's message).
pub fn error_message(error: &anyhow::Error) -> String {
    let messages: Vec<String> = error.chain().map(ToString::to_string).collect();
    let mut out = String::new();
    for (i, message) in messages.iter().enumerate() {
        let said = |text: &str| !text.is_empty() && out.contains(text);
        if said(message) {
            continue;
        }
        if let Some(next) = messages.get(i + 1)
            && message.ends_with(next.as_str())
            && said(next)
        {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(message);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Wraps(&'static str, Option<Box<Wraps>>);
    impl std::fmt::Display for Wraps {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(self.0)?;
            match &self.1 {
                // Like tokio-postgres: the cause in the message and as the source.
                Some(cause) if self.0.ends_with("server") || self.0 == "db error" => {
                    write!(f, ": {cause}")
                }
                _ => Ok(()),
            }
        }
    }
    impl std::error::Error for Wraps {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            self.1.as_deref().map(|e| e as _)
        }
    }

    #[test]
    fn each_cause_is_said_once() {
        let refused = Wraps(
            "error connecting to server",
            Some(Box::new(Wraps("Connection refused (os error 111)", None))),
        );
        let e = anyhow::Error::new(refused).context("connecting to PostgreSQL for migrations");
        assert_eq!(
            error_message(&e),
            "connecting to PostgreSQL for migrations: error connecting to server: Connection refused (os error 111)"
        );
        assert_eq!(
            format!("{e:#}").matches("Connection refused").count(),
            2,
            "what anyhow alone prints"
        );

        let db = Wraps(
            "db error",
            Some(Box::new(Wraps(
                "ERROR: relation \"x\" does not exist",
                None,
            ))),
        );
        let e = anyhow::Error::new(db)
            .context("could not migrate: ERROR: relation \"x\" does not exist")
            .context("applying 0002_telemetry.sql");
        assert_eq!(
            error_message(&e),
            "applying 0002_telemetry.sql: could not migrate: ERROR: relation \"x\" does not exist"
        );

        let plain = anyhow::anyhow!("cause").context("what failed");
        assert_eq!(error_message(&plain), "what failed: cause");
    }
}
