//! The answers' shapes (`DeviceState`, `Command`, `DeviceCommand` in
//! schemas/openapi.yaml), read from rows.

use serde::Serialize;
use serde_json::{Map, Value};
use toaster_core::control::state;
use toaster_core::problem::Problem;
use toaster_platform::db::{self, DbValue};
use toaster_platform::time;

use crate::error::ControlError;

/// The columns a [`StateView`] is read from, in order, from `device_state s` (NULLs for
/// a device without a row: empty documents at version 0).
pub const STATE_COLUMNS: &str = "coalesce(s.desired, '{}'), coalesce(s.desired_version, 0), \
     coalesce(s.desired_times, '{}'), coalesce(s.reported, '{}'), \
     coalesce(s.reported_version, 0), coalesce(s.reported_times, '{}')";

/// A device's state: both documents, their versions, when each top-level member last
/// changed, and the delta the device still has to act on.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StateView {
    pub device_id: String,
    pub desired: Map<String, Value>,
    pub desired_version: i64,
    pub desired_changed_at: Map<String, Value>,
    pub reported: Map<String, Value>,
    pub reported_version: i64,
    pub reported_changed_at: Map<String, Value>,
    pub delta: Map<String, Value>,
}

impl StateView {
    /// From [`STATE_COLUMNS`] starting at column `at`.
    pub fn from_row(device_id: &str, row: &[DbValue], at: usize) -> Result<Self, Problem> {
        let object = |i: usize, what: &'static str| -> Result<Map<String, Value>, Problem> {
            match db::column::<Value>(row, at + i)? {
                Value::Object(map) => Ok(map),
                _ => Err(ControlError::Corrupt(what).into()),
            }
        };
        let version = |i: usize| db::column::<i64>(row, at + i);
        let desired = object(0, "device_state.desired")?;
        let reported = object(3, "device_state.reported")?;
        Ok(StateView {
            device_id: device_id.to_owned(),
            delta: state::delta(&desired, &reported),
            desired,
            desired_version: version(1)?,
            desired_changed_at: times(object(2, "device_state.desired_times")?),
            reported,
            reported_version: version(4)?,
            reported_changed_at: times(object(5, "device_state.reported_times")?),
        })
    }

    /// The state's entity tag: both versions.
    pub fn etag(&self) -> String {
        state::etag(self.desired_version, self.reported_version)
    }
}

/// Unix ms per member → RFC 3339 per member.
fn times(ms: Map<String, Value>) -> Map<String, Value> {
    ms.into_iter()
        .map(|(key, at)| {
            let shown = at
                .as_i64()
                .map_or(Value::Null, |ms| Value::String(time::rfc3339_ms(ms)));
            (key, shown)
        })
        .collect()
}

/// The columns a [`CommandView`] is read from, in order, from `commands c`. A pending
/// command past its expiry reads as `expired`, finished at its expiry, whether or not
/// a statement has stored that yet.
pub const COMMAND_COLUMNS: &str = "c.command_id, c.device_id, c.name, c.parameters, \
     CASE WHEN c.status IN ('queued', 'delivered') AND c.expires_at <= now() \
          THEN 'expired' ELSE c.status END, \
     c.output, c.batch_id, c.created_by, \
     (extract(epoch FROM c.created_at) * 1000)::int8, \
     (extract(epoch FROM c.expires_at) * 1000)::int8, \
     (extract(epoch FROM c.delivered_at) * 1000)::int8, \
     (extract(epoch FROM coalesce(c.finished_at, CASE WHEN c.status IN ('queued', 'delivered') \
          AND c.expires_at <= now() THEN c.expires_at END)) * 1000)::int8, \
     c.seq";

/// One command, as operators see it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CommandView {
    pub id: String,
    pub device_id: String,
    pub name: String,
    pub parameters: Value,
    pub status: String,
    pub output: Option<Value>,
    pub batch_id: Option<String>,
    pub created_by: String,
    pub created_at: String,
    pub expires_at: String,
    pub delivered_at: Option<String>,
    pub finished_at: Option<String>,
    #[serde(skip)]
    pub seq: i64,
}

impl CommandView {
    /// From [`COMMAND_COLUMNS`] starting at column `at`.
    pub fn from_row(row: &[DbValue], at: usize) -> Result<Self, Problem> {
        let when = |i: usize| -> Result<Option<String>, Problem> {
            Ok(db::column::<Option<i64>>(row, at + i)?.map(time::rfc3339_ms))
        };
        let required = |i: usize, what: &'static str| -> Result<String, Problem> {
            when(i)?.ok_or_else(|| ControlError::Corrupt(what).into())
        };
        Ok(CommandView {
            id: db::column(row, at)?,
            device_id: db::column(row, at + 1)?,
            name: db::column(row, at + 2)?,
            parameters: db::column(row, at + 3)?,
            status: db::column(row, at + 4)?,
            output: db::column(row, at + 5)?,
            batch_id: db::column(row, at + 6)?,
            created_by: db::column(row, at + 7)?,
            created_at: required(8, "commands.created_at")?,
            expires_at: required(9, "commands.expires_at")?,
            delivered_at: when(10)?,
            finished_at: when(11)?,
            seq: db::column(row, at + 12)?,
        })
    }

    /// What the device sees of it: no operator names, no batch.
    pub fn for_device(&self) -> Value {
        serde_json::json!({
            "id": self.id,
            "name": self.name,
            "parameters": self.parameters,
            "status": self.status,
            "created_at": self.created_at,
            "expires_at": self.expires_at,
        })
    }
}
