-- 0006 token revocation: operator and admin access tokens by id, so that one can be
-- revoked without rotating the signing key; and claim tokens that can be revoked.
-- Owned by the `auth` component; read on every operator or admin request through
-- `toaster_platform::auth` (cached in the key-value store, see docs/identity.md).
--
-- access_tokens: one row per token minted through the API
-- (`POST /v1/tenants/{id}/tokens`), and one per token revoked by presenting it
-- (`POST /v1/auth/revoke`: tokens minted offline by `toaster token`, or before tokens
-- had ids). token_id is the token's `jti` (or, without one, the id derived from its
-- signature): `tok_` and 32 hex digits, never the token itself, which is not stored.
-- tenant_id is NULL exactly for operator tokens. No foreign key to tenants: an admin
-- token minted offline for a tenant nobody created can still be revoked.
-- minted_at/minted_by are NULL for tokens the API did not mint.
--
-- The revocation list of one scope (a tenant's admin tokens, or the operators') is
-- the rows with revoked_at set whose token has not expired: the partial index serves
-- exactly that query. Expired rows are deleted a day after expiry by the statements
-- that insert rows, so the table holds about the tokens still alive.
--
-- Timestamps: components pass Unix seconds (`to_timestamp($n::int8)`).

CREATE TABLE access_tokens (
    token_id    text        PRIMARY KEY CHECK (token_id ~ '^tok_[0-9a-f]{32}$'),
    tenant_id   text        CHECK (tenant_id ~ '^[a-z0-9][a-z0-9-]{0,62}$'),
    role        text        NOT NULL CHECK (role IN ('operator', 'admin')),
    subject     text        NOT NULL CHECK (char_length(subject) BETWEEN 1 AND 256),
    expires_at  timestamptz NOT NULL,
    minted_at   timestamptz,
    minted_by   text,
    revoked_at  timestamptz,
    revoked_by  text,
    seq         bigserial   NOT NULL UNIQUE,
    CHECK ((role = 'operator') = (tenant_id IS NULL)),
    CHECK ((revoked_at IS NULL) = (revoked_by IS NULL))
);

-- The tokens list: a tenant's (or every) token, newest first.
CREATE INDEX access_tokens_by_tenant ON access_tokens (tenant_id, seq DESC);
-- The revocation list of a scope.
CREATE INDEX access_tokens_revoked ON access_tokens (tenant_id, expires_at)
    WHERE revoked_at IS NOT NULL;

-- Claims can be revoked: provisioning then refuses them like an expired one. The row
-- stays (devices name their claim; the audit log names it).
ALTER TABLE claims
    ADD COLUMN revoked_at timestamptz,
    ADD COLUMN revoked_by text,
    ADD CONSTRAINT claims_revoked_by CHECK ((revoked_at IS NULL) = (revoked_by IS NULL));

-- The claims list: a tenant's claims, newest first.
CREATE INDEX claims_by_created ON claims (tenant_id, created_at DESC, claim_id DESC);
