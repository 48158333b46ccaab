-- 0001 identity: tenants, the device registry with its public keys, claim tokens for
-- zero-touch provisioning, and the audit log. Owned by the `auth` component; every
-- other component reads devices only through `toaster_platform::auth`.
--
-- Conventions:
-- - every row carries tenant_id and every query filters by it (taken from the
--   verified token); identifiers are the validated strings of toaster_core::ids;
-- - timestamps are timestamptz; components pass Unix milliseconds and convert in SQL;
-- - the CHECK constraints repeat the domain's rules so that a bug in a component
--   cannot store what the API would refuse.

CREATE TABLE tenants (
    tenant_id   text        PRIMARY KEY CHECK (tenant_id ~ '^[a-z0-9][a-z0-9-]{0,62}$'),
    name        text        NOT NULL CHECK (char_length(name) BETWEEN 1 AND 200),
    created_at  timestamptz NOT NULL DEFAULT now(),
    created_by  text        NOT NULL
);

-- status: active → disabled ⇄ active; any → decommissioned (terminal; the row stays as
-- a tombstone so the id cannot be reused and the audit trail keeps its subject).
-- key_generation: bumped when the device is disabled, decommissioned, or a key
-- rotation completes; access tokens carry it and are refused once it moves on.
CREATE TABLE devices (
    tenant_id       text        NOT NULL REFERENCES tenants (tenant_id),
    device_id       text        NOT NULL CHECK (char_length(device_id) BETWEEN 1 AND 128),
    model           text        NOT NULL CHECK (char_length(model) BETWEEN 1 AND 64),
    channel         text        NOT NULL CHECK (char_length(channel) BETWEEN 1 AND 64),
    tags            text[]      NOT NULL DEFAULT '{}' CHECK (cardinality(tags) <= 32),
    status          text        NOT NULL DEFAULT 'active'
                                CHECK (status IN ('active', 'disabled', 'decommissioned')),
    key_generation  int8        NOT NULL DEFAULT 1 CHECK (key_generation >= 1),
    claim_id        text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, device_id)
);

-- Listing filters by model, channel and tag, ordered by device_id (keyset pagination).
CREATE INDEX devices_by_model ON devices (tenant_id, model, device_id);
CREATE INDEX devices_by_channel ON devices (tenant_id, channel, device_id);
CREATE INDEX devices_by_tag ON devices USING gin (tags);

-- A device's public keys: one `current`, and during a rotation one `pending`. Both may
-- log in; the rotation completes (pending → current, the old key deleted) when the
-- device logs in with the pending key or an admin completes it.
CREATE TABLE device_keys (
    tenant_id       text        NOT NULL,
    device_id       text        NOT NULL,
    state           text        NOT NULL CHECK (state IN ('current', 'pending')),
    algorithm       text        NOT NULL CHECK (algorithm IN ('ES256', 'EdDSA')),
    public_key_pem  text        NOT NULL CHECK (char_length(public_key_pem) <= 4096),
    fingerprint     text        NOT NULL CHECK (fingerprint ~ '^[0-9a-f]{64}$'),
    created_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, device_id, state),
    FOREIGN KEY (tenant_id, device_id) REFERENCES devices (tenant_id, device_id) ON DELETE CASCADE
);

-- Claim tokens: shown once at creation, stored only as their SHA-256. Provisioning
-- spends one unit of quota with a single conditional UPDATE inside the transaction
-- that inserts the device, so racing devices can never overspend it.
CREATE TABLE claims (
    tenant_id   text        NOT NULL REFERENCES tenants (tenant_id),
    claim_id    text        NOT NULL,
    token_hash  bytea       NOT NULL UNIQUE CHECK (octet_length(token_hash) = 32),
    model       text        NOT NULL,
    channel     text        NOT NULL,
    tags        text[]      NOT NULL DEFAULT '{}',
    quota       int4        NOT NULL CHECK (quota BETWEEN 1 AND 100000),
    used        int4        NOT NULL DEFAULT 0 CHECK (used BETWEEN 0 AND quota),
    expires_at  timestamptz NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    created_by  text        NOT NULL,
    PRIMARY KEY (tenant_id, claim_id)
);

-- Append-only. `seq` orders entries (newest first by seq DESC) and is the cursor.
-- actor_role/actor: who (the token's role and subject); action/target: what;
-- at: when; details: the change, never a secret (claim tokens and keys appear only by
-- id or fingerprint).
CREATE TABLE audit_log (
    seq         bigserial   PRIMARY KEY,
    tenant_id   text        NOT NULL,
    at          timestamptz NOT NULL DEFAULT now(),
    actor_role  text        NOT NULL CHECK (actor_role IN ('operator', 'admin', 'device', 'claim')),
    actor       text        NOT NULL,
    action      text        NOT NULL,
    target      text        NOT NULL,
    details     jsonb       NOT NULL DEFAULT '{}'
);

CREATE INDEX audit_log_by_tenant ON audit_log (tenant_id, seq DESC);
