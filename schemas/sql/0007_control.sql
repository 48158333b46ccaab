-- 0007 control: talking back to devices. Per-device state documents (`desired`, set
-- by the tenant's admins; `reported`, set by the device) and commands with a
-- lifecycle. Owned by the `control` component (docs/control.md).
--
-- Every write is one statement (no BEGIN … COMMIT spread over calls), so each is
-- atomic on every runtime, including those whose PostgreSQL interface takes any pooled
-- connection for each call.

-- RFC 7386 JSON Merge Patch: `patch` applied to `target`. `null` deletes a member, an
-- object merges member by member, anything else replaces. The component checks the
-- patch itself (an object, depth, members per object) before sending it; this
-- function checks what only the result shows, raising:
-- - SQLSTATE 'TCBIG' when the document would be over max_bytes (measured as
--   PostgreSQL prints it, jsonb's text form);
-- - SQLSTATE 'TCKEY' when an object of the document would have more than max_members.
-- A raised error aborts the statement, so nothing is written (for a bulk change:
-- for no device). The depth needs no check here: a merge is never deeper than the
-- deeper of the document and the patch.
CREATE FUNCTION control_merge_patch(target jsonb, patch jsonb) RETURNS jsonb
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
DECLARE
    result jsonb;
    member record;
BEGIN
    IF jsonb_typeof(patch) IS DISTINCT FROM 'object' THEN
        RETURN patch;
    END IF;
    result := CASE WHEN jsonb_typeof(target) = 'object' THEN target ELSE '{}'::jsonb END;
    FOR member IN SELECT key, value FROM jsonb_each(patch) LOOP
        IF jsonb_typeof(member.value) = 'null' THEN
            result := result - member.key;
        ELSE
            result := result || jsonb_build_object(
                member.key, control_merge_patch(result -> member.key, member.value));
        END IF;
    END LOOP;
    RETURN result;
END $$;

CREATE FUNCTION control_checked(doc jsonb, max_bytes int4, max_members int4) RETURNS jsonb
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
DECLARE
    size int4 := octet_length(doc::text);
    widest int4;
BEGIN
    IF size > max_bytes THEN
        RAISE EXCEPTION 'the document would be % bytes, over the limit of % (state_max_bytes)',
            size, max_bytes USING ERRCODE = 'TCBIG';
    END IF;
    SELECT max((SELECT count(*) FROM jsonb_object_keys(v)))::int4 INTO widest
    FROM jsonb_path_query(doc, 'strict $.**') AS v
    WHERE jsonb_typeof(v) = 'object';
    IF widest > max_members THEN
        RAISE EXCEPTION 'an object of the document would have % members, over the limit of % (state_max_keys)',
            widest, max_members USING ERRCODE = 'TCKEY';
    END IF;
    RETURN doc;
END $$;

-- The time (Unix ms) each top-level member of `after` last changed: `at_ms` for a
-- member that is new or whose value differs from `before`, its time in `times`
-- otherwise. Members no longer in `after` drop out.
CREATE FUNCTION control_member_times(before jsonb, after jsonb, times jsonb, at_ms int8)
RETURNS jsonb LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT coalesce(jsonb_object_agg(k,
        CASE WHEN before -> k IS NOT DISTINCT FROM after -> k AND times ? k
             THEN times -> k ELSE to_jsonb(at_ms) END), '{}'::jsonb)
    FROM jsonb_object_keys(after) AS k
$$;

-- One row per device that has ever had state; a device without a row has empty
-- documents at version 0. Versions grow by one on every write that changes the
-- document (a patch that changes nothing leaves the version).
CREATE TABLE device_state (
    tenant_id         text   NOT NULL,
    device_id         text   NOT NULL,
    desired           jsonb  NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(desired) = 'object'),
    desired_version   int8   NOT NULL DEFAULT 0 CHECK (desired_version >= 0),
    desired_times     jsonb  NOT NULL DEFAULT '{}',
    reported          jsonb  NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(reported) = 'object'),
    reported_version  int8   NOT NULL DEFAULT 0 CHECK (reported_version >= 0),
    reported_times    jsonb  NOT NULL DEFAULT '{}',
    PRIMARY KEY (tenant_id, device_id),
    FOREIGN KEY (tenant_id, device_id) REFERENCES devices (tenant_id, device_id) ON DELETE CASCADE
);

-- Commands. status: queued → delivered → succeeded | failed | rejected; queued →
-- canceled; queued | delivered → expired (stored by the statements that find it
-- overdue and by the retention run; reads treat an overdue pending command as expired).
-- seq orders a device's commands (oldest first for the device, newest first for lists).
-- idempotency_key: the client's key on send; one command per (tenant, device, key).
-- batch_id: the send to a selector that made it (`cb_…`), for finding its siblings.
CREATE TABLE commands (
    seq              int8        GENERATED ALWAYS AS IDENTITY,
    tenant_id        text        NOT NULL,
    device_id        text        NOT NULL,
    command_id       text        NOT NULL CHECK (command_id ~ '^cmd_[0-9a-f]{16}$'),
    name             text        NOT NULL CHECK (name ~ '^[a-z][a-z0-9_.-]{0,63}$'),
    parameters       jsonb       NOT NULL DEFAULT '{}',
    status           text        NOT NULL DEFAULT 'queued' CHECK (status IN
                        ('queued', 'delivered', 'succeeded', 'failed', 'rejected', 'expired', 'canceled')),
    output           jsonb,
    idempotency_key  text        CHECK (char_length(idempotency_key) BETWEEN 1 AND 128),
    batch_id         text        CHECK (batch_id ~ '^cb_[0-9a-f]{16}$'),
    created_at       timestamptz NOT NULL DEFAULT now(),
    created_by       text        NOT NULL,
    expires_at       timestamptz NOT NULL,
    delivered_at     timestamptz,
    finished_at      timestamptz,
    PRIMARY KEY (tenant_id, command_id),
    FOREIGN KEY (tenant_id, device_id) REFERENCES devices (tenant_id, device_id) ON DELETE CASCADE,
    CHECK ((status IN ('queued', 'delivered')) = (finished_at IS NULL))
);

CREATE UNIQUE INDEX commands_idempotency ON commands (tenant_id, device_id, idempotency_key)
    WHERE idempotency_key IS NOT NULL;
-- A device's pending commands, oldest first (its fetch, the queue cap).
CREATE INDEX commands_pending ON commands (tenant_id, device_id, seq)
    WHERE status IN ('queued', 'delivered');
-- A device's commands, newest first (the operator's list).
CREATE INDEX commands_by_device ON commands (tenant_id, device_id, seq DESC);
-- The retention run: finished commands by age, and pending ones by expiry.
CREATE INDEX commands_finished ON commands (finished_at) WHERE finished_at IS NOT NULL;
CREATE INDEX commands_expiring ON commands (expires_at) WHERE status IN ('queued', 'delivered');

-- The retention run's part (`toaster retention --command-retention`, default 30 days):
-- pending commands past their expiry are stored as `expired` (finished at their
-- expiry), then finished commands older than p_keep_secs are deleted. p_tenant NULL:
-- every tenant.
CREATE FUNCTION control_retention_run(p_keep_secs int8, p_tenant text)
RETURNS TABLE (commands_expired int8, commands_deleted int8)
LANGUAGE plpgsql AS $$
BEGIN
    UPDATE commands SET status = 'expired', finished_at = expires_at
    WHERE status IN ('queued', 'delivered') AND expires_at <= now()
      AND (p_tenant IS NULL OR tenant_id = p_tenant);
    GET DIAGNOSTICS commands_expired = ROW_COUNT;
    DELETE FROM commands
    WHERE finished_at < now() - make_interval(secs => p_keep_secs)
      AND (p_tenant IS NULL OR tenant_id = p_tenant);
    GET DIAGNOSTICS commands_deleted = ROW_COUNT;
    RETURN NEXT;
END $$;
