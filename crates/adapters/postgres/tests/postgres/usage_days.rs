//! Token totals from the daily totals of migration 000014: what a quota check reads
//! agrees with the events for any window (whole days, parts of days, duplicates, events
//! without a user), it really comes from the daily totals, events changed or deleted
//! move their tokens, and the migration rolls up events recorded before it (and a
//! `TRUNCATE` of the events empties the totals).

use super::support::{Scratch, begin_in, owner_url, raw, stmt_with, store, tenant, user};
use chrono::{DateTime, Duration, TimeZone, Utc};
use sea_orm::{ConnectionTrait, Database};
use trellis_content::{TokenUsage, UsageEvent, UsageEventId, UsageMeter, UsageScope};
use trellis_kernel::{TenantCtx, UserId};
use trellis_migrations::{Migrator, MigratorTrait};
use trellis_postgres::PgStore;
use trellis_tenancy::LlmProvider;

fn at(day: u32, hour: u32, minute: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, day, hour, minute, 0).unwrap()
}

fn event(key: &str, user: Option<UserId>, tokens: u32, occurred_at: DateTime<Utc>) -> UsageEvent {
    UsageEvent {
        id: UsageEventId::new(),
        idempotency_key: key.into(),
        user_id: user,
        conversation_id: None,
        message_id: None,
        provider: LlmProvider::Openai,
        model: "gpt-4o".into(),
        usage: TokenUsage {
            prompt_tokens: tokens - tokens / 3,
            completion_tokens: tokens / 3,
        },
        estimated: false,
        occurred_at,
    }
}

/// Records `events` and returns those that count (the first of each key).
async fn record_all(store: &PgStore, ctx: &TenantCtx, events: Vec<UsageEvent>) -> Vec<UsageEvent> {
    let mut counted: Vec<UsageEvent> = Vec::new();
    for e in events {
        UsageMeter::record(store, ctx, e.clone()).await.unwrap();
        if !counted
            .iter()
            .any(|c| c.idempotency_key == e.idempotency_key)
        {
            counted.push(e);
        }
    }
    counted
}

/// What the events say `scope` used in `[from, until)`.
fn expected(
    events: &[UsageEvent],
    scope: UsageScope,
    from: DateTime<Utc>,
    until: DateTime<Utc>,
) -> u64 {
    events
        .iter()
        .filter(|e| match scope {
            UsageScope::Tenant => true,
            UsageScope::User(u) => e.user_id == Some(u),
        })
        .filter(|e| e.occurred_at >= from && e.occurred_at < until)
        .map(|e| e.usage.total())
        .sum()
}

/// Events over three days, two users and none, with a duplicate key.
fn three_days(admin: UserId, other: UserId) -> Vec<UsageEvent> {
    vec![
        event("a", Some(admin), 110, at(10, 10, 0)),
        event("b", Some(admin), 5, at(10, 23, 30)),
        event("c", Some(other), 7, at(11, 0, 0)),
        event("d", None, 3, at(11, 8, 0)),
        event("e", Some(admin), 20, at(11, 12, 0)),
        event("f", Some(other), 1000, at(12, 5, 0)),
        event("a", Some(admin), 999_999, at(11, 9, 0)),
    ]
}

/// Asserts that, for the tenant and both users, every window's total is what the
/// counted events say.
async fn agree_with_events(
    store: &PgStore,
    ctx: &TenantCtx,
    counted: &[UsageEvent],
    users: [UserId; 2],
    windows: &[(DateTime<Utc>, DateTime<Utc>)],
) {
    for &(from, until) in windows {
        for scope in [
            UsageScope::Tenant,
            UsageScope::User(users[0]),
            UsageScope::User(users[1]),
        ] {
            assert_eq!(
                store.total_tokens(ctx, scope, from, until).await.unwrap(),
                expected(counted, scope, from, until),
                "{scope:?} in [{from}, {until})"
            );
        }
    }
}

#[tokio::test]
async fn usage_totals_for_any_window_agree_with_the_events_counted_once() {
    let store = store().await;
    let (_, ctx, admin) = tenant(&store).await;
    let other = user(&store, &ctx, "other@example.com").await.id;
    let counted = record_all(&store, &ctx, three_days(admin, other)).await;

    let windows = [
        (at(1, 0, 0), at(31, 0, 0)),   // a month of whole days
        (at(11, 0, 0), at(12, 0, 0)),  // exactly one day
        (at(10, 12, 0), at(12, 3, 0)), // parts of days at both ends
        (at(10, 23, 0), at(11, 1, 0)), // across midnight, no whole day
        (at(11, 8, 0), at(11, 8, 1)),  // one minute
        (at(12, 6, 0), at(13, 0, 0)),  // nothing in it
    ];
    agree_with_events(&store, &ctx, &counted, [admin, other], &windows).await;
    assert_eq!(
        store
            .total_tokens(&ctx, UsageScope::Tenant, at(12, 0, 0), at(11, 0, 0))
            .await
            .unwrap(),
        0,
        "an empty window"
    );
}

/// Adds `tokens` to a daily total behind the adapter's back, as the owner.
async fn tamper_with_day(
    ctx: &TenantCtx,
    scope_id: uuid::Uuid,
    day: chrono::NaiveDate,
    tokens: i64,
) {
    let owner = raw(&owner_url()).await;
    let txn = begin_in(&owner, ctx.tenant_id()).await;
    let changed = txn
        .execute_raw(stmt_with(
            "UPDATE usage_days SET tokens = tokens + $1 WHERE scope_id = $2 AND day = $3",
            vec![tokens.into(), scope_id.into(), day.into()],
        ))
        .await
        .unwrap();
    assert_eq!(changed.rows_affected(), 1);
    txn.commit().await.unwrap();
}

#[tokio::test]
async fn a_budget_periods_total_comes_from_the_daily_totals_not_from_every_event() {
    let store = store().await;
    let (_, ctx, admin) = tenant(&store).await;
    record_all(
        &store,
        &ctx,
        vec![event("a", Some(admin), 40, at(10, 10, 0))],
    )
    .await;
    tamper_with_day(&ctx, admin.as_uuid(), at(10, 0, 0).date_naive(), 1000).await;

    let month = (at(1, 0, 0), at(31, 0, 0));
    assert_eq!(
        store
            .total_tokens(&ctx, UsageScope::User(admin), month.0, month.1)
            .await
            .unwrap(),
        1040
    );
    assert_eq!(
        store
            .total_tokens(&ctx, UsageScope::Tenant, month.0, month.1)
            .await
            .unwrap(),
        40,
        "the tenant's own daily total was not touched"
    );
}

#[tokio::test]
async fn an_event_moved_or_deleted_takes_its_tokens_out_of_the_day_it_was_counted_in() {
    let store = store().await;
    let (_, ctx, admin) = tenant(&store).await;
    let moved = event("moved", Some(admin), 30, at(10, 10, 0));
    let deleted = event("deleted", Some(admin), 7, at(10, 11, 0));
    record_all(&store, &ctx, vec![moved.clone(), deleted.clone()]).await;

    let owner = raw(&owner_url()).await;
    let txn = begin_in(&owner, ctx.tenant_id()).await;
    for (sql, id) in [
        (
            "UPDATE usage_events SET occurred_at = occurred_at + interval '1 day' WHERE id = $1",
            moved.id,
        ),
        ("DELETE FROM usage_events WHERE id = $1", deleted.id),
    ] {
        txn.execute_raw(stmt_with(sql, vec![id.as_uuid().into()]))
            .await
            .unwrap();
    }
    txn.commit().await.unwrap();

    let day = |d: u32| (at(d, 0, 0), at(d, 0, 0) + Duration::days(1));
    for scope in [UsageScope::Tenant, UsageScope::User(admin)] {
        let (from, until) = day(10);
        assert_eq!(
            store.total_tokens(&ctx, scope, from, until).await.unwrap(),
            0
        );
        let (from, until) = day(11);
        assert_eq!(
            store.total_tokens(&ctx, scope, from, until).await.unwrap(),
            30
        );
    }
}

#[tokio::test]
async fn the_migration_rolls_up_events_recorded_before_it() {
    let scratch = Scratch::new().await;
    let db = Database::connect(scratch.url.as_str()).await.unwrap();
    let before_day_totals = Migrator::get_migration_files()
        .iter()
        .position(|m| m.name().contains("usage_day_totals"))
        .unwrap();
    Migrator::up(&db, Some(u32::try_from(before_day_totals).unwrap()))
        .await
        .unwrap();
    let old = PgStore::connect(&scratch.url, 2).await.unwrap();
    let (_, ctx, admin) = tenant(&old).await;
    let other = user(&old, &ctx, "other@example.com").await.id;
    let counted = record_all(&old, &ctx, three_days(admin, other)).await;
    drop(old);

    Migrator::up(&db, None).await.unwrap();
    let store = PgStore::connect(&scratch.url, 2).await.unwrap();
    let days = [
        (at(10, 0, 0), at(11, 0, 0)),
        (at(11, 0, 0), at(12, 0, 0)),
        (at(1, 0, 0), at(31, 0, 0)),
    ];
    agree_with_events(&store, &ctx, &counted, [admin, other], &days).await;

    db.execute_unprepared("TRUNCATE usage_events")
        .await
        .unwrap();
    agree_with_events(&store, &ctx, &[], [admin, other], &days).await;
    drop(store);
    db.close().await.unwrap();
    scratch.drop_database().await;
}

#[tokio::test]
async fn a_sessions_temporary_table_cannot_take_the_usage_roll_up() {
    let store = store().await;
    let (t, ctx, admin) = tenant(&store).await;
    // The app role may create temporary tables, which come first in a default search
    // path; migration 000015 pins the trigger function's path with pg_temp last.
    let db = raw(&super::support::app_url()).await;
    let txn = begin_in(&db, t.id).await;
    txn.execute_unprepared(
        "CREATE TEMPORARY TABLE usage_days (tenant_id uuid, scope_id uuid, day date, \
         tokens bigint, PRIMARY KEY (tenant_id, scope_id, day)) ON COMMIT DROP",
    )
    .await
    .unwrap();
    txn.execute_raw(stmt_with(
        "INSERT INTO usage_events (tenant_id, id, idempotency_key, user_id, provider, model, \
         prompt_tokens, completion_tokens, occurred_at) \
         VALUES ($1, gen_random_uuid(), 'temp-shadow', $2, 'openai', 'gpt-4o', 30, 12, $3)",
        vec![
            t.id.as_uuid().into(),
            admin.as_uuid().into(),
            at(14, 9, 0).into(),
        ],
    ))
    .await
    .unwrap();
    let shadowed = txn
        .query_one_raw(stmt_with(
            "SELECT count(*) AS n FROM pg_temp.usage_days",
            vec![],
        ))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(shadowed.try_get::<i64>("", "n").unwrap(), 0);
    txn.commit().await.unwrap();

    let used =
        UsageMeter::total_tokens(&store, &ctx, UsageScope::Tenant, at(14, 0, 0), at(15, 0, 0))
            .await
            .unwrap();
    assert_eq!(used, 42);
}
