-- 0005 assertion replay: the `jti`s of device assertions already exchanged at
-- `POST /v1/auth/token`, kept until the assertion would be refused as expired anyway.
-- Owned by the `auth` component; replaces the key-value replay cache (`jti:` keys),
-- whose read-modify-write let two simultaneous exchanges of one assertion both pass.
--
-- Race safety: login records the jti with one statement,
--   INSERT ... ON CONFLICT DO NOTHING RETURNING 1
-- so of any number of concurrent exchanges of the same assertion the primary key lets
-- exactly one insert; the others get no row back and are refused.
--
-- Bounded: the same statement deletes the device's expired rows, so the table holds
-- at most the assertions each device exchanged within their lifetime (an hour plus the
-- 60 s leeway at most, and every exchange counts against the device's rate limit).
-- Decommissioning deletes the device's rows (it can never log in again).
--
-- No foreign key to devices: device rows are never deleted (decommissioned devices stay
-- as tombstones), a row is only inserted after the device was read as active, and the
-- key check would lock the device's row on every login.
--
-- expires_at: components pass Unix seconds (`to_timestamp($n::int8)`).

CREATE TABLE used_assertions (
    tenant_id   text        NOT NULL,
    device_id   text        NOT NULL,
    jti         text        NOT NULL CHECK (char_length(jti) BETWEEN 1 AND 128),
    expires_at  timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, device_id, jti)
);
