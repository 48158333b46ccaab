//! `toaster-device`: the device side of Toaster, for Linux-class devices, tests and
//! tools (`toaster simulate` uses it). Async on tokio, HTTPS through reqwest with
//! rustls.
//!
//! It does the parts that are easy to get wrong:
//!
//! - **Keys**: Ed25519 (or P-256) generated on the device and stored 0600
//!   ([`DeviceKey`]); only the public key ever leaves it.
//! - **Provisioning** with a claim token ([`Device::provision`]).
//! - **Login**: an RFC 7523 assertion (`iss` tenant, `sub` device, `aud`, at most an
//!   hour, a fresh `jti`) exchanged for an access token, refreshed before it expires
//!   ([`RefreshPolicy`]) and again after a 401.
//! - **Telemetry** through a bounded buffer ([`TelemetryBuffer`]) flushed in batches;
//!   a batch whose answer was lost is resent, which the server makes safe (it stores
//!   each reading once and says how many were duplicates: [`Receipt`]).
//! - **Retries**: exponential backoff with full jitter, `Retry-After` honoured on 429
//!   and 503, no retry on a refusal that would repeat ([`RetryPolicy`], [`Error`]).
//! - **OTA**: checks whose manifest signature is verified before anything else
//!   ([`Device::check_update`]), and progress reports.
//! - **State and commands**: the desired state and what is left to do
//!   ([`Device::state`], polled cheaply with its tag), reported state
//!   ([`Device::report_state`]), and commands run by a handler whose results are
//!   posted ([`Device::run_commands`], [`Device::command_loop`]).
//!
//! ```no_run
//! use std::path::Path;
//! use toaster_device::{Config, Device, DeviceKey, Identity, Reading, ReportStatus, TelemetryBuffer};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let config = Config::new("https://toaster.example.com")?;
//! let key = DeviceKey::load_or_generate(Path::new("/var/lib/toaster/device.key"))?;
//! let identity_file = Path::new("/var/lib/toaster/identity.json");
//! let device = match Identity::load(identity_file) {
//!     Ok(identity) => Device::new(config, key, identity)?,
//!     Err(_) => {
//!         let claim = std::env::var("TOASTER_CLAIM_TOKEN")?;
//!         let device = Device::provision(config, key, &claim, "toaster-0001", &[]).await?;
//!         device.identity().save(identity_file)?;
//!         device
//!     }
//! };
//!
//! let buffer = TelemetryBuffer::new(10_000);
//! buffer.try_push(Reading::now("temp_c", 21.5)?)?;
//! let sent = device.flush(&buffer).await?;
//! println!("stored {} (already there: {})", sent.stored, sent.duplicates);
//!
//! if let Some(update) = device.check_update("1.3.2").await? {
//!     let m = &update.manifest;
//!     device.report_update(&m.rollout_id, ReportStatus::Downloading, "1.3.2", None).await?;
//!     // download m.url, then m.verify_image(&bytes)?, install, reboot, and report
//!     // ReportStatus::Installed with m.version.
//! }
//! # Ok(())
//! # }
//! ```

// Functions stay under 100 lines (clippy.toml); tests may run longer.
#![cfg_attr(not(test), warn(clippy::too_many_lines))]

mod control;
mod device;
mod error;
mod key;
mod ota;
mod retry;
mod telemetry;
mod transport;

pub use control::{COMMAND_PAGE, Command, CommandOutcome, DeviceState};
pub use device::{Config, Device, Identity, RefreshPolicy, Stats};
pub use error::{Error, FieldError, FlushError, Problem, Transient};
pub use key::{AssertionClaims, DeviceKey, KeyAlgorithm, KeyError, MAX_ASSERTION_LIFETIME};
pub use ota::{Manifest, OtaError, ReportAck, ReportStatus, SignedManifest, SigningKey, Update};
pub use retry::{RetryPolicy, parse_retry_after};
pub use telemetry::{
    BufferFull, FlushReport, Reading, ReadingError, ReadingValue, Receipt, TelemetryBuffer, now_ms,
};
