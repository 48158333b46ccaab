//! The per-device marker in the key-value store (`control:{tenant}:{device}`,
//! `toaster_platform::kv::ControlMarker`) that answers a device's poll when nothing
//! changed: its state versions (for `If-None-Match` → 304) and whether it has pending
//! commands (an empty page). Written after every committed write and after a device's
//! read that went to PostgreSQL; a store that fails only costs the next poll a
//! PostgreSQL read, so failures are logged, never answered.

use toaster_core::ids::{DeviceId, TenantId};
use toaster_platform::kv::{self, CommandsMark, ControlMarker, StateMark};
use toaster_platform::time;

/// The device's marker, if the store has one.
pub fn read(tenant: &TenantId, device: &DeviceId) -> Option<ControlMarker> {
    let store = kv::open()
        .map_err(|e| eprintln!("control: key-value store: {}", kv::describe(&e)))
        .ok()?;
    kv::get_json(&store, &kv::control_key(tenant, device))
        .map_err(|e| eprintln!("control: reading a marker: {}", kv::describe(&e)))
        .ok()
        .flatten()
}

/// Merges `news` into the device's marker.
pub fn write(tenant: &TenantId, device: &DeviceId, news: ControlMarker) {
    let Ok(store) = kv::open() else {
        return;
    };
    let key = kv::control_key(tenant, device);
    let current: Option<ControlMarker> = kv::get_json(&store, &key).ok().flatten();
    let merged = current.unwrap_or_default().merge(news);
    if let Err(e) = kv::set_json(&store, &key, &merged) {
        eprintln!("control: writing a marker: {}", kv::describe(&e));
    }
}

/// News about the device's state versions, seen now.
pub fn state(desired: i64, reported: i64) -> ControlMarker {
    ControlMarker {
        state: Some(StateMark {
            desired,
            reported,
            checked_ms: time::now_ms(),
        }),
        commands: None,
    }
}

/// News about the device's commands (`seq`: its newest command's), seen now.
pub fn commands(seq: i64, pending: bool) -> ControlMarker {
    ControlMarker {
        state: None,
        commands: Some(CommandsMark {
            seq,
            pending,
            checked_ms: time::now_ms(),
        }),
    }
}
