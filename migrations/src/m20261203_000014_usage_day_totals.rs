//! Token totals per UTC day, so that a quota check reads a few rows instead of
//! summing every usage event of its period.
//!
//! Every answer checks the tenant's and the user's budgets (day or month) before the
//! model is called. Summing the period's `usage_events` grew with the tenant's traffic:
//! late in the month a busy tenant's check read every event since the first. A trigger
//! on `usage_events` now adds each event's tokens, in the event's own transaction, to
//! `usage_days`: one row for the tenant as a whole (`scope_id` is the nil UUID) and one
//! for the event's user. An event skipped as a duplicate (same idempotency key) fires
//! nothing, so it counts once here too; an update or delete moves the tokens out of the
//! day they were counted in, and a `TRUNCATE` empties the totals with the events.
//! Existing events are rolled up when this runs: with forced row-level security even
//! the owner sees no rows, so the backfill lifts it on
//! `usage_events` for the duration of this migration's transaction (whose `ALTER TABLE`
//! also holds back inserts until the trigger is in place).

use sea_orm_migration::prelude::*;

const UP: &str = r#"
CREATE TABLE usage_days (
    tenant_id uuid   NOT NULL CONSTRAINT usage_days_tenant_id_fkey REFERENCES tenants (id),
    -- The user, or the nil UUID for the whole tenant.
    scope_id  uuid   NOT NULL,
    -- The UTC day of the events' `occurred_at`.
    day       date   NOT NULL,
    tokens    bigint NOT NULL CHECK (tokens >= 0),
    CONSTRAINT usage_days_pkey PRIMARY KEY (tenant_id, scope_id, day)
);

ALTER TABLE usage_events NO FORCE ROW LEVEL SECURITY;
INSERT INTO usage_days (tenant_id, scope_id, day, tokens)
SELECT e.tenant_id, s.scope_id, (e.occurred_at AT TIME ZONE 'UTC')::date,
       sum(e.prompt_tokens + e.completion_tokens)
  FROM usage_events e
 CROSS JOIN LATERAL unnest(ARRAY['00000000-0000-0000-0000-000000000000'::uuid, e.user_id])
       AS s (scope_id)
 WHERE s.scope_id IS NOT NULL
 GROUP BY 1, 2, 3;
ALTER TABLE usage_events FORCE ROW LEVEL SECURITY;

ALTER TABLE usage_days ENABLE ROW LEVEL SECURITY;
ALTER TABLE usage_days FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON usage_days
    USING (tenant_id = NULLIF(current_setting('trellis.tenant_id', true), '')::uuid)
    WITH CHECK (tenant_id = NULLIF(current_setting('trellis.tenant_id', true), '')::uuid);

-- Runs as the writer of the event, in its tenant, under the policy above. The tenant's
-- row comes before the user's in every transaction, so two never wait on each other
-- in opposite orders.
CREATE FUNCTION trellis_roll_up_usage() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP IN ('UPDATE', 'DELETE') THEN
        -- Never below zero, so that a total someone changed by hand cannot block the
        -- deletion of old events.
        UPDATE usage_days
           SET tokens = GREATEST(tokens - (OLD.prompt_tokens + OLD.completion_tokens), 0)
         WHERE tenant_id = OLD.tenant_id
           AND scope_id IN ('00000000-0000-0000-0000-000000000000'::uuid, OLD.user_id)
           AND day = (OLD.occurred_at AT TIME ZONE 'UTC')::date;
    END IF;
    IF TG_OP IN ('INSERT', 'UPDATE') THEN
        INSERT INTO usage_days AS d (tenant_id, scope_id, day, tokens)
        SELECT NEW.tenant_id, s.scope_id, (NEW.occurred_at AT TIME ZONE 'UTC')::date,
               NEW.prompt_tokens + NEW.completion_tokens
          FROM unnest(ARRAY['00000000-0000-0000-0000-000000000000'::uuid, NEW.user_id])
               WITH ORDINALITY AS s (scope_id, position)
         WHERE s.scope_id IS NOT NULL
         ORDER BY s.position
        ON CONFLICT (tenant_id, scope_id, day) DO UPDATE SET tokens = d.tokens + EXCLUDED.tokens;
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER usage_events_roll_up
    AFTER INSERT OR DELETE
       OR UPDATE OF tenant_id, user_id, occurred_at, prompt_tokens, completion_tokens
    ON usage_events
    FOR EACH ROW EXECUTE FUNCTION trellis_roll_up_usage();

-- Row triggers do not see TRUNCATE: emptying the events empties their totals.
CREATE FUNCTION trellis_truncate_usage_days() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    TRUNCATE usage_days;
    RETURN NULL;
END
$$;

CREATE TRIGGER usage_events_truncated
    AFTER TRUNCATE ON usage_events
    FOR EACH STATEMENT EXECUTE FUNCTION trellis_truncate_usage_days();
"#;

const DOWN: &str = r#"
DROP TRIGGER IF EXISTS usage_events_truncated ON usage_events;
DROP FUNCTION IF EXISTS trellis_truncate_usage_days();
DROP TRIGGER IF EXISTS usage_events_roll_up ON usage_events;
DROP FUNCTION IF EXISTS trellis_roll_up_usage();
DROP TABLE IF EXISTS usage_days;
"#;

sql_migration!();
