-- 0003 OTA: firmware releases, staged rollouts, and each device's progress through a
-- rollout. Owned by the `ota` component; decisions in docs/ota.md.
--
-- Race safety:
-- - every change of a rollout's state (advance, pause, resume, abort, the automatic
--   halt) runs in a transaction that first locks the rollout row (SELECT ... FOR
--   UPDATE), and the halt decision counts the devices while holding that lock, so two
--   concurrent reports cannot both miss the threshold;
-- - the device check records an offer with one statement that takes FOR SHARE on the
--   rollout row and requires state = 'active': an offer racing with a halt either
--   commits before the halt's transaction locks the row (and is counted), or waits
--   for it and then sees 'halted' and offers nothing.

-- Immutable once created: no UPDATE is ever issued. `release` is the version without
-- build metadata; it is unique per (tenant, model), so 1.2.0+b1 and 1.2.0+b2 cannot
-- both exist.
CREATE TABLE firmware (
    tenant_id    text        NOT NULL REFERENCES tenants (tenant_id),
    firmware_id  text        NOT NULL CHECK (firmware_id ~ '^fw_[0-9a-f]{16}$'),
    model        text        NOT NULL CHECK (char_length(model) BETWEEN 1 AND 64),
    version      text        NOT NULL CHECK (char_length(version) BETWEEN 5 AND 128),
    release      text        NOT NULL CHECK (char_length(release) BETWEEN 5 AND 128),
    url          text        NOT NULL CHECK (url LIKE 'https://%' AND char_length(url) <= 2048),
    sha256       text        NOT NULL CHECK (sha256 ~ '^[0-9a-f]{64}$'),
    size         int8        NOT NULL CHECK (size >= 1),
    notes        text        NOT NULL DEFAULT '' CHECK (char_length(notes) <= 4096),
    created_at   timestamptz NOT NULL DEFAULT now(),
    created_by   text        NOT NULL,
    PRIMARY KEY (tenant_id, firmware_id),
    UNIQUE (tenant_id, model, release)
);

-- state: active ⇄ paused; active/paused → halted (automatic); any → aborted (terminal).
-- stage: index into stages. The selector: channel, tags (a device must carry all of
-- them) and version_range (a semver requirement on the device's current version,
-- checked by the component). threshold_ppm: failure_threshold in parts per million.
CREATE TABLE rollouts (
    tenant_id           text        NOT NULL,
    rollout_id          text        NOT NULL CHECK (rollout_id ~ '^ro_[0-9a-f]{16}$'),
    firmware_id         text        NOT NULL,
    model               text        NOT NULL,
    channel             text        NOT NULL CHECK (char_length(channel) BETWEEN 1 AND 64),
    tags                text[]      NOT NULL DEFAULT '{}' CHECK (cardinality(tags) <= 32),
    version_range       text        NOT NULL CHECK (char_length(version_range) BETWEEN 1 AND 256),
    stages              int4[]      NOT NULL CHECK (cardinality(stages) BETWEEN 1 AND 20),
    stage               int4        NOT NULL DEFAULT 0 CHECK (stage >= 0 AND stage < cardinality(stages)),
    threshold_ppm       int4        NOT NULL CHECK (threshold_ppm BETWEEN 1 AND 1000000),
    min_reports         int4        NOT NULL CHECK (min_reports >= 1),
    report_timeout_secs int4        NOT NULL CHECK (report_timeout_secs >= 1),
    state               text        NOT NULL DEFAULT 'active'
                                    CHECK (state IN ('active', 'paused', 'halted', 'aborted')),
    halt_reason         text,
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now(),
    created_by          text        NOT NULL,
    PRIMARY KEY (tenant_id, rollout_id),
    FOREIGN KEY (tenant_id, firmware_id) REFERENCES firmware (tenant_id, firmware_id)
);

-- At most one rollout per (tenant, model, channel) that is not aborted.
CREATE UNIQUE INDEX rollouts_one_open ON rollouts (tenant_id, model, channel)
    WHERE state <> 'aborted';
CREATE INDEX rollouts_by_tenant ON rollouts (tenant_id, created_at DESC);

-- One row per device offered a rollout. state is stored; "timed out" is derived:
-- an unfinished row whose offered_at + report_timeout has passed.
CREATE TABLE rollout_devices (
    tenant_id     text        NOT NULL,
    rollout_id    text        NOT NULL,
    device_id     text        NOT NULL,
    state         text        NOT NULL DEFAULT 'offered'
                              CHECK (state IN ('offered', 'downloading', 'installing', 'installed', 'failed')),
    from_version  text        NOT NULL CHECK (char_length(from_version) <= 128),
    error         text        CHECK (char_length(error) <= 1024),
    offered_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, rollout_id, device_id),
    FOREIGN KEY (tenant_id, rollout_id) REFERENCES rollouts (tenant_id, rollout_id)
);

-- Erasing a device (DELETE /v1/devices/{id}?erase=true) deletes its rows here.
CREATE INDEX rollout_devices_by_device ON rollout_devices (tenant_id, device_id);
