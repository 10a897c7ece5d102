//! What only a real database shows about the adapter: units of work are atomic,
//! `mark_used` is a true compare-and-set under concurrency, constraint violations
//! become the right domain errors, cascades run under row security, and a corrupt row
//! is an error rather than a panic. (The port contracts themselves are covered by the
//! conformance suite, which runs the same cases against every adapter.)

use super::support::{
    begin_in, conversation, email, first_admin, new_tenant, owner_url, raw, stmt_with, store,
    tenant, unique_slug, user,
};
use sea_orm::ConnectionTrait;
use trellis_content::{ConversationRepo, MessageRepo, NewMessage};
use trellis_identity::{
    ApiKeyRepo, IdentityError, Membership, MembershipRepo, NewApiKey, RefreshToken,
    RefreshTokenRepo, UserRepo,
};
use trellis_kernel::{
    ApiKeyId, MembershipId, PlatformCtx, RefreshTokenId, Role, SessionFamilyId, UserId,
};
use trellis_postgres::PgStore;
use trellis_tenancy::{FirstAdmin, Hostname, TenancyError, TenantPatch, TenantRepo};

fn token(user: UserId, membership: Option<MembershipId>) -> RefreshToken {
    let now = chrono::Utc::now();
    RefreshToken {
        id: RefreshTokenId::new(),
        family_id: SessionFamilyId::new(),
        user_id: user,
        membership_id: membership,
        token_hash: uuid::Uuid::now_v7().simple().to_string(),
        expires_at: now + chrono::Duration::days(1),
        used_at: None,
        revoked_at: None,
        created_at: now,
    }
}

#[tokio::test]
async fn a_tenant_whose_first_admin_cannot_be_stored_is_not_created_either() {
    let store = store().await;
    let slug = unique_slug("atomic");
    let new = new_tenant(&slug);
    let id = new.id;
    // An empty name breaks the users table's CHECK after the tenant row went in.
    let bad_admin = FirstAdmin {
        name: String::new(),
        ..first_admin()
    };
    let failed = store.create(&PlatformCtx::system(), new, bad_admin).await;
    assert!(
        matches!(failed, Err(TenancyError::Unexpected(_))),
        "{failed:?}"
    );
    assert!(matches!(
        TenantRepo::get(&store, &PlatformCtx::system(), id).await,
        Err(TenancyError::NotFound)
    ));
    // The slug was never taken.
    store
        .create(&PlatformCtx::system(), new_tenant(&slug), first_admin())
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn of_concurrent_refreshes_with_one_token_exactly_one_wins() {
    let store = store().await;
    let (_, ctx, admin) = tenant(&store).await;
    let t = token(admin, None);
    RefreshTokenRepo::insert(&store, &ctx, t.clone())
        .await
        .unwrap();
    let attempts: Vec<_> = (0..8)
        .map(|_| {
            let (store, ctx, hash) = (store.clone(), ctx.clone(), t.token_hash.clone());
            tokio::spawn(async move {
                store
                    .mark_used(&ctx, &hash, chrono::Utc::now())
                    .await
                    .unwrap()
            })
        })
        .collect();
    let mut wins = 0;
    for attempt in attempts {
        wins += usize::from(attempt.await.unwrap());
    }
    assert_eq!(wins, 1);
}

#[tokio::test]
async fn unique_violations_become_conflicts_that_say_what_is_taken() {
    let store = store().await;
    let (t, ctx, _) = tenant(&store).await;
    user(&store, &ctx, "dup@example.com").await;
    let mut again = trellis_identity::NewUser {
        id: UserId::new(),
        email: email("dup@example.com"),
        email_verified: false,
        name: "Dup".into(),
        username: None,
        avatar_url: None,
        role: Role::User,
        tier: trellis_identity::Tier::Free,
        password_hash: None,
        oauth: None,
        preferences: trellis_identity::Preferences::default(),
    };
    let err = UserRepo::insert(&store, &ctx, again.clone())
        .await
        .unwrap_err();
    assert_eq!(err.to_string(), "a user with this email already exists");

    again.email = email("other@example.com");
    again.username = Some(trellis_identity::Username::parse("same.name").unwrap());
    UserRepo::insert(&store, &ctx, again.clone()).await.unwrap();
    again.id = UserId::new();
    again.email = email("third@example.com");
    let err = UserRepo::insert(&store, &ctx, again).await.unwrap_err();
    assert_eq!(err.to_string(), "a user with this username already exists");

    // Another slug but the same subdomain.
    let mut clash = new_tenant(&unique_slug("clash"));
    clash.subdomain = t.subdomain.clone();
    let err = store
        .create(&PlatformCtx::system(), clash, first_admin())
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "a tenant with this subdomain already exists"
    );
}

#[tokio::test]
async fn an_api_key_cannot_name_a_creator_from_another_tenant() {
    let store = store().await;
    let (_, a, _) = tenant(&store).await;
    let (_, _, b_admin) = tenant(&store).await;
    let new = NewApiKey {
        id: ApiKeyId::new(),
        name: "ci".into(),
        prefix: "abcdefabcdef".into(),
        secret_hash: "h".into(),
        scopes: vec![],
        created_by: b_admin,
        expires_at: None,
    };
    let err = ApiKeyRepo::insert(&store, &a, new).await.unwrap_err();
    assert!(matches!(err, IdentityError::NotFound("user")), "{err:?}");
}

#[tokio::test]
async fn removing_a_guest_ends_the_guests_sessions() {
    let store = store().await;
    let (home, home_ctx, _) = tenant(&store).await;
    let (_, host, _) = tenant(&store).await;
    let guest = user(&store, &home_ctx, "guest@example.com").await;
    let m = MembershipRepo::insert(
        &store,
        &host,
        Membership {
            id: MembershipId::new(),
            tenant_id: host.tenant_id(),
            home_tenant_id: home.id,
            user_id: guest.id,
            email: guest.email.clone(),
            role: Role::User,
            created_at: chrono::Utc::now(),
        },
    )
    .await
    .unwrap();
    let t = token(guest.id, Some(m.id));
    RefreshTokenRepo::insert(&store, &host, t.clone())
        .await
        .unwrap();
    MembershipRepo::delete(&store, &host, m.id).await.unwrap();
    assert!(
        store
            .find_by_hash(&host, &t.token_hash)
            .await
            .unwrap()
            .is_none()
    );
}

#[tokio::test]
async fn a_corrupt_row_is_an_unexpected_error_not_a_panic() {
    let store = store().await;
    let (t, ctx, _) = tenant(&store).await;
    let u = user(&store, &ctx, "corrupt@example.com").await;
    // Even the owner is subject to the (forced) policy, so it scopes itself too.
    let owner = raw(&owner_url()).await;
    let txn = begin_in(&owner, t.id).await;
    txn.execute_raw(stmt_with(
        "UPDATE users SET username = 'not a username!' WHERE tenant_id = $1 AND id = $2",
        vec![t.id.as_uuid().into(), u.id.as_uuid().into()],
    ))
    .await
    .unwrap();
    txn.commit().await.unwrap();

    let err = UserRepo::get(&store, &ctx, u.id).await.unwrap_err();
    let IdentityError::Unexpected(e) = err else {
        panic!("expected Unexpected, got {err:?}");
    };
    assert!(
        format!("{e:#}").contains(&format!("users row {} has an invalid username", u.id)),
        "{e:#}"
    );
}

#[tokio::test]
async fn a_deleted_tenants_custom_domain_is_free_again_but_its_subdomain_is_not() {
    let store = store().await;
    let (old, old_ctx, _) = tenant(&store).await;
    let domain = Hostname::parse(&format!("{}.example.com", unique_slug("cd"))).unwrap();
    let patch = TenantPatch {
        custom_domain: Some(Some(domain.clone())),
        ..TenantPatch::default()
    };
    TenantRepo::update(&store, &old_ctx, patch.clone())
        .await
        .unwrap();
    TenantRepo::soft_delete(&store, &PlatformCtx::system(), old.id)
        .await
        .unwrap();

    let (_, new_ctx, _) = tenant(&store).await;
    let moved = TenantRepo::update(&store, &new_ctx, patch).await.unwrap();
    assert_eq!(moved.custom_domain, Some(domain));

    let mut reuse = new_tenant(&unique_slug("reuse"));
    reuse.subdomain = old.subdomain.clone();
    let err = store
        .create(&PlatformCtx::system(), reuse, first_admin())
        .await
        .unwrap_err();
    assert!(matches!(err, TenancyError::Conflict(_)), "{err:?}");
}

#[tokio::test]
async fn a_rolled_back_unit_of_work_leaves_no_tenant_setting_behind() {
    // With one pooled connection, every unit of work reuses it; neither a committed
    // platform one (creating the tenant) nor a failed tenant one may leave its
    // settings on it for the next user.
    super::support::migrated().await;
    let store = PgStore::connect(&super::support::app_url(), 1)
        .await
        .unwrap();
    let (_, a, _) = tenant(&store).await;
    let missing = UserRepo::get(&store, &a, UserId::new()).await;
    assert!(matches!(missing, Err(IdentityError::NotFound(_))));
    let row = store
        .connection()
        .query_one_raw(stmt_with(
            "SELECT coalesce(current_setting('trellis.tenant_id', true), '') AS t, \
                        coalesce(current_setting('trellis.platform', true), '') AS p",
            vec![],
        ))
        .await
        .unwrap()
        .unwrap();
    let t: String = row.try_get("", "t").unwrap();
    let p: String = row.try_get("", "p").unwrap();
    assert_eq!((t.as_str(), p.as_str()), ("", ""));
}

#[tokio::test]
async fn reads_and_writes_taking_turns_on_one_pooled_connection_all_commit_and_stay_in_their_tenant()
 {
    // Read-only units end with a rollback that is only queued (it goes out with the
    // pool's check of the returned connection). On one pooled connection every unit
    // follows such a read: each write must still commit, and no read may see the
    // other tenant's rows.
    super::support::migrated().await;
    let store = PgStore::connect(&super::support::app_url(), 1)
        .await
        .unwrap();
    let (_, a, _) = tenant(&store).await;
    let (_, b, _) = tenant(&store).await;
    let all = trellis_kernel::PageRequest::default();
    let mut added = Vec::new();
    for i in 0..3 {
        let a_users = UserRepo::list(&store, &a, &Default::default(), all)
            .await
            .unwrap();
        assert_eq!(a_users.items.len(), 1, "tenant A holds only its admin");
        added.push(user(&store, &b, &format!("turn{i}@b.example")).await.id);
        let b_users = UserRepo::list(&store, &b, &Default::default(), all)
            .await
            .unwrap();
        assert_eq!(b_users.items.len(), 2 + i);
    }
    // Another connection sees every write: none was swallowed by a rollback.
    let other = raw(&super::support::app_url()).await;
    let other = begin_in(&other, b.tenant_id()).await;
    let ids = added
        .iter()
        .map(|id| format!("'{id}'"))
        .collect::<Vec<_>>()
        .join(",");
    let rows = super::support::query(
        &other,
        &format!("SELECT count(*) AS n FROM users WHERE id IN ({ids})"),
    )
    .await;
    let n: i64 = rows[0].try_get("", "n").unwrap();
    assert_eq!(n, 3);
}

/// The app's pooled connections that sit inside an open transaction.
async fn idle_in_transaction(observer: &sea_orm::DatabaseConnection, application: &str) -> i64 {
    let rows = super::support::query(
        observer,
        &format!(
            "SELECT count(*) AS n FROM pg_stat_activity
              WHERE application_name = '{application}' AND state = 'idle in transaction'"
        ),
    )
    .await;
    rows[0].try_get("", "n").unwrap()
}

/// A store of one connection (per pool) whose sessions carry their own
/// `application_name`, so a test can find them in `pg_stat_activity`; and that name.
async fn named_store(prefix: &str) -> (PgStore, String) {
    let application = format!("{prefix}_{}", uuid::Uuid::now_v7().simple());
    let url = super::support::app_url();
    let sep = if url.contains('?') { '&' } else { '?' };
    let store = PgStore::connect(&format!("{url}{sep}application_name={application}"), 1)
        .await
        .unwrap();
    (store, application)
}

#[tokio::test]
async fn a_request_dropped_while_its_transaction_begins_leaves_no_open_transaction_behind() {
    dropped_requests_leave_no_open_transaction(false, Read::User).await;
    dropped_requests_leave_no_open_transaction(false, Read::ConversationWithMessages).await;
}

#[tokio::test]
async fn a_request_dropped_while_its_pipelined_read_runs_leaves_no_open_transaction_behind() {
    dropped_requests_leave_no_open_transaction(true, Read::User).await;
}

#[tokio::test]
async fn a_request_dropped_while_its_two_statement_pipelined_read_runs_leaves_no_open_transaction_behind()
 {
    dropped_requests_leave_no_open_transaction(true, Read::ConversationWithMessages).await;
}

/// What the dropped requests read: one statement, or two in one read.
#[derive(Clone, Copy)]
enum Read {
    User,
    ConversationWithMessages,
}

async fn dropped_requests_leave_no_open_transaction(pipelined: bool, what: Read) {
    let setup = store().await;
    let (_, ctx, admin) = tenant(&setup).await;
    let conversation = conversation(&setup, &ctx, admin).await;
    MessageRepo::insert(
        &setup,
        &ctx,
        NewMessage::from_user(conversation, None, admin, "Still there?".into(), vec![]),
    )
    .await
    .unwrap();
    let (store, application) = named_store("trellis_drop").await;
    let store = if pipelined {
        store
    } else {
        store.without_pipelined_reads()
    };
    let read = |store: &PgStore| {
        let store = store.clone();
        let ctx = ctx.clone();
        async move {
            match what {
                Read::User => UserRepo::get(&store, &ctx, admin).await.map(|_| ()).ok(),
                Read::ConversationWithMessages => {
                    let (_, messages) = store.with_messages(&ctx, conversation).await.ok()?;
                    (messages.len() == 1).then_some(())
                }
            }
        }
    };
    let url = super::support::app_url();
    // Open the pool's one connection, so the next unit of work starts at once.
    read(&store).await.unwrap();
    // The app role sees its own sessions' state in pg_stat_activity.
    let observer = raw(&url).await;
    let sessions_before = sessions(&observer, &application).await;
    for polls in 1..=20 {
        // Dropped after `polls` polls, as when a client hangs up mid-request: after one
        // poll the unit of work has sent BEGIN and waits for the answer.
        {
            let mut call = std::pin::pin!(read(&store));
            for _ in 0..polls {
                let polled = std::future::poll_fn(|cx| {
                    std::task::Poll::Ready(call.as_mut().poll(cx).is_ready())
                })
                .await;
                if polled {
                    break;
                }
                tokio::task::yield_now().await;
            }
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        let n = idle_in_transaction(&observer, &application).await;
        assert_eq!(
            n, 0,
            "dropped after {polls} polls: a pooled connection was left inside the request's transaction"
        );
        // And the connection still serves the next request.
        read(&store).await.unwrap();
    }
    if pipelined {
        // A pipelined read's requests all leave in its first poll and run to their
        // ROLLBACK, so its connection goes back to the pool: no reconnecting per
        // cancelled request.
        assert_eq!(sessions(&observer, &application).await, sessions_before);
    }
}

#[tokio::test]
async fn a_pipelined_read_dropped_before_its_large_answer_is_read_does_not_hold_its_session() {
    // More rows than loopback's socket buffers hold unread: were no one to read them,
    // the backend would wait to send, inside the read's snapshot, until the
    // connection's next use.
    let setup = store().await;
    let (_, ctx, admin) = tenant(&setup).await;
    let conversation = conversation(&setup, &ctx, admin).await;
    let long = "x".repeat(256 * 1024);
    for _ in 0..64 {
        MessageRepo::insert(
            &setup,
            &ctx,
            NewMessage::from_user(conversation, None, admin, long.clone(), vec![]),
        )
        .await
        .unwrap();
    }
    let (store, application) = named_store("trellis_drop_large").await;
    let read = || async {
        let (_, messages) = store.with_messages(&ctx, conversation).await.unwrap();
        assert_eq!(messages.len(), 64);
    };
    read().await;
    let observer = raw(&super::support::app_url()).await;
    let sessions_before = sessions(&observer, &application).await;
    // When the store's sessions last began a statement (the first read's ROLLBACK):
    // the abandoned read has ended once they are all idle after a later one.
    let rows = super::support::query(
        &observer,
        &format!(
            "SELECT max(query_start)::text AS at FROM pg_stat_activity
              WHERE application_name = '{application}'"
        ),
    )
    .await;
    let before: String = rows[0].try_get("", "at").unwrap();
    {
        // One poll sends the read; then the client is gone.
        let mut call = std::pin::pin!(read());
        let polled =
            std::future::poll_fn(|cx| std::task::Poll::Ready(call.as_mut().poll(cx).is_ready()))
                .await;
        assert!(!polled);
    }
    // Waits for the session to be idle after a later statement, for far longer than
    // sending 16 MiB on loopback takes.
    let mut ended = false;
    for _ in 0..200 {
        let rows = super::support::query(
            &observer,
            &format!(
                "SELECT bool_and(state = 'idle') AND max(query_start) > '{before}'::timestamptz
                        AS ended
                   FROM pg_stat_activity WHERE application_name = '{application}'"
            ),
        )
        .await;
        ended = rows[0].try_get("", "ended").unwrap();
        if ended {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(ended, "the abandoned read's session never finished");
    read().await;
    assert_eq!(sessions(&observer, &application).await, sessions_before);
}

/// The process ids of the sessions named `application`, in order.
async fn sessions(observer: &sea_orm::DatabaseConnection, application: &str) -> Vec<i32> {
    let rows = super::support::query(
        observer,
        &format!(
            "SELECT pid FROM pg_stat_activity WHERE application_name = '{application}' ORDER BY pid"
        ),
    )
    .await;
    rows.iter().map(|r| r.try_get("", "pid").unwrap()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reads_of_several_tenants_sharing_one_pipelined_connection_each_see_only_their_own_rows() {
    // Reads on four threads queue their requests on one shared connection at once. No
    // read's opening, statement and ROLLBACK may have another's in between, or its
    // statement would run under the other tenant's setting.
    let setup = store().await;
    let mut tenants = Vec::new();
    for i in 0..4 {
        let (_, ctx, admin) = tenant(&setup).await;
        for j in 0..i {
            user(&setup, &ctx, &format!("shared{j}@t{i}.example")).await;
        }
        tenants.push((ctx, admin, 1 + i));
    }
    let (store, application) = named_store("trellis_shared").await;
    let store = store.with_pipelined_connections(1);
    if !store.pipelines_reads() {
        return; // a DATABASE_URL that needs TLS: no pipelined reads to share
    }
    let readers = tenants.into_iter().map(|(ctx, admin, users)| {
        let store = store.clone();
        tokio::spawn(async move {
            for _ in 0..250 {
                let page = UserRepo::list(&store, &ctx, &Default::default(), Default::default())
                    .await
                    .unwrap();
                assert_eq!(
                    page.items.len(),
                    users,
                    "a page holds only its tenant's users"
                );
                assert!(page.items.iter().all(|u| u.tenant_id == ctx.tenant_id()));
                assert_eq!(UserRepo::get(&store, &ctx, admin).await.unwrap().id, admin);
            }
        })
    });
    for reader in futures::future::join_all(readers).await {
        reader.unwrap();
    }
    // The main pool's one connection and the one shared for the reads: no read waited
    // for a connection of its own.
    let observer = raw(&super::support::app_url()).await;
    let open = sessions(&observer, &application).await.len();
    assert!(open <= 2, "{open} sessions");
    assert_eq!(store.pipelined_connections(), Some(1));
}

#[tokio::test]
async fn concurrent_reads_open_no_more_pipelined_connections_than_configured() {
    let setup = store().await;
    let (_, ctx, admin) = tenant(&setup).await;
    let (store, application) = named_store("trellis_bounded").await;
    let store = store.with_pipelined_connections(3);
    if !store.pipelines_reads() {
        return;
    }
    let reads = (0..48).map(|_| UserRepo::get(&store, &ctx, admin));
    for read in futures::future::join_all(reads).await {
        assert_eq!(read.unwrap().id, admin);
    }
    let observer = raw(&super::support::app_url()).await;
    let open = sessions(&observer, &application).await.len();
    // The main pool's one and at most three for the reads.
    assert!((2..=4).contains(&open), "{open} sessions");
}

#[tokio::test]
async fn pipelined_reads_open_at_most_eight_connections_or_the_main_pools_size_if_smaller() {
    let url = super::support::app_url();
    let large = PgStore::connect(&url, 16).await.unwrap();
    if !large.pipelines_reads() {
        return;
    }
    assert_eq!(
        large.pipelined_connections(),
        Some(trellis_postgres::DEFAULT_PIPELINED_CONNECTIONS)
    );
    assert_eq!(trellis_postgres::DEFAULT_PIPELINED_CONNECTIONS, 8);
    let small = PgStore::connect(&url, 3).await.unwrap();
    assert_eq!(small.pipelined_connections(), Some(3));
    assert_eq!(
        small.with_pipelined_connections(12).pipelined_connections(),
        Some(12)
    );
}

#[tokio::test]
async fn one_read_after_another_takes_turns_on_the_open_pipelined_connections() {
    // Were the first idle connection always taken, one backend would run every read
    // of a quiet moment and a few nearly all of a busy one, which the kernel then
    // holds off the CPU for long stretches with reads queued on them.
    let setup = store().await;
    let (_, ctx, admin) = tenant(&setup).await;
    let (store, application) = named_store("trellis_turns").await;
    let store = store.with_pipelined_connections(3);
    if !store.pipelines_reads() {
        return;
    }
    let reads = (0..48).map(|_| UserRepo::get(&store, &ctx, admin));
    futures::future::join_all(reads).await;
    let observer = raw(&super::support::app_url()).await;
    // Beside the main pool's one session.
    let pipelined = sessions(&observer, &application).await.len() - 1;
    assert!(
        pipelined >= 2,
        "a burst of reads opened {pipelined} pipelined connections"
    );

    let rows = super::support::query(&observer, "SELECT clock_timestamp()::text AS t").await;
    let before: String = rows[0].try_get("", "t").unwrap();
    for _ in 0..4 * pipelined {
        assert_eq!(UserRepo::get(&store, &ctx, admin).await.unwrap().id, admin);
    }
    let rows = super::support::query(
        &observer,
        &format!(
            "SELECT count(*) AS n FROM pg_stat_activity
              WHERE application_name = '{application}' AND state_change > '{before}'"
        ),
    )
    .await;
    let used: i64 = rows[0].try_get("", "n").unwrap();
    assert_eq!(
        usize::try_from(used).unwrap(),
        pipelined,
        "every open pipelined connection ran some of the reads made one after another"
    );
}

#[tokio::test]
async fn on_a_loopback_server_one_statement_reads_are_pipelined_unless_turned_off() {
    // `cargo xtask test` provisions a loopback server; a DATABASE_URL elsewhere may
    // rightly get none (TLS), and the conformance suite covers both paths anyway.
    let url = super::support::app_url();
    let local = ["@127.0.0.1", "@localhost", "@[::1]"]
        .iter()
        .any(|host| url.contains(host));
    let store = store().await;
    if local {
        assert!(store.pipelines_reads());
    }
    assert!(!store.without_pipelined_reads().pipelines_reads());
}

#[tokio::test]
async fn a_pipelined_connection_the_server_ended_is_replaced_without_failing_a_read() {
    let setup = store().await;
    let (_, ctx, admin) = tenant(&setup).await;
    let (store, application) = named_store("trellis_ended").await;
    let url = super::support::app_url();
    UserRepo::get(&store, &ctx, admin).await.unwrap();
    // As after a server restart or an idle timeout: every session of the store ends.
    let observer = raw(&url).await;
    let rows = super::support::query(
        &observer,
        &format!(
            "SELECT count(pg_terminate_backend(pid)) AS n FROM pg_stat_activity
              WHERE application_name = '{application}'"
        ),
    )
    .await;
    let ended: i64 = rows[0].try_get("", "n").unwrap();
    assert!(ended >= 1, "the store's sessions were found and ended");
    // No pause: the pooled connection may not know yet that it was ended, and the read
    // must still succeed (on a new connection).
    let page = UserRepo::list(&store, &ctx, &Default::default(), Default::default())
        .await
        .unwrap();
    assert_eq!(page.items.len(), 1);
    assert_eq!(UserRepo::get(&store, &ctx, admin).await.unwrap().id, admin);
}

#[tokio::test]
async fn a_url_only_sqlx_reads_gets_no_pipelined_reads_and_still_serves_them() {
    let setup = store().await;
    let (_, ctx, admin) = tenant(&setup).await;
    let url = super::support::app_url();
    let sep = if url.contains('?') { '&' } else { '?' };
    // A parameter sqlx knows and tokio-postgres refuses.
    let store = PgStore::connect(&format!("{url}{sep}statement-cache-capacity=8"), 1)
        .await
        .unwrap();
    assert!(!store.pipelines_reads());
    let page = UserRepo::list(&store, &ctx, &Default::default(), Default::default())
        .await
        .unwrap();
    assert_eq!(page.items.len(), 1);
    assert_eq!(UserRepo::get(&store, &ctx, admin).await.unwrap().id, admin);
}

/// Reads `admin` 32 times at once through `store` on the calling thread's runtime.
async fn burst_of_reads(store: &PgStore, ctx: &trellis_kernel::TenantCtx, admin: UserId) {
    let reads = (0..32).map(|_| UserRepo::get(store, ctx, admin));
    for read in futures::future::join_all(reads).await {
        assert_eq!(read.unwrap().id, admin);
    }
}

/// Starts a second single-threaded runtime on a thread of its own, marked as runtime 1,
/// and returns once a burst of reads on it is done. It runs until `end` is sent.
async fn second_runtime_reading(
    store: &PgStore,
    ctx: &trellis_kernel::TenantCtx,
    admin: UserId,
) -> (
    tokio::sync::oneshot::Sender<()>,
    std::thread::JoinHandle<()>,
) {
    let (read, was_read) = tokio::sync::oneshot::channel();
    let (end, ended) = tokio::sync::oneshot::channel::<()>();
    let thread = std::thread::spawn({
        let (store, ctx) = (store.clone(), ctx.clone());
        move || {
            trellis_postgres::enter_runtime(1);
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async {
                burst_of_reads(&store, &ctx, admin).await;
                read.send(()).unwrap();
                let _ = ended.await;
            });
        }
    });
    was_read.await.unwrap();
    (end, thread)
}

#[tokio::test]
async fn each_runtime_reads_over_pipelined_connections_of_its_own_which_end_with_it() {
    // A connection's task runs on the runtime that opened it; a read from another
    // runtime's thread would wait for that thread to run it, and would break once that
    // runtime is gone.
    let setup = store().await;
    let (_, ctx, admin) = tenant(&setup).await;
    let (store, application) = named_store("trellis_runtimes").await;
    let store = store.with_pipelined_connections(2).with_runtimes(2);
    if !store.pipelines_reads() {
        return;
    }
    assert_eq!(store.pipelined_runtimes(), Some(2));
    let observer = raw(&super::support::app_url()).await;
    // Beside the main pool's one session. A connection let go ends a moment later (the
    // one the store checked its URL with, the second runtime's), so this waits up to
    // five seconds for the count to reach `expected`.
    let pipelined = |observer, expected: usize| {
        let application = application.clone();
        async move {
            let mut open = sessions(observer, &application).await.len() - 1;
            for _ in 0..100 {
                if open == expected {
                    break;
                }
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                open = sessions(observer, &application).await.len() - 1;
            }
            open
        }
    };

    // This test's runtime never entered one, so it is the first.
    burst_of_reads(&store, &ctx, admin).await;
    assert_eq!(
        pipelined(&observer, 1).await,
        1,
        "the first runtime opened its share of two"
    );

    let (end, second) = second_runtime_reading(&store, &ctx, admin).await;
    assert_eq!(
        pipelined(&observer, 2).await,
        2,
        "the second runtime opened a connection of its own"
    );

    end.send(()).unwrap();
    tokio::task::spawn_blocking(move || second.join())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        pipelined(&observer, 1).await,
        1,
        "the second runtime's connection ended with it"
    );
    burst_of_reads(&store, &ctx, admin).await;
    assert_eq!(
        pipelined(&observer, 1).await,
        1,
        "the first runtime still reads over its own connection"
    );
}

/// A local backend stopped with `SIGSTOP` (as the kernel holding it off the CPU would
/// leave it) until this is dropped.
struct StoppedBackend(i32);

impl StoppedBackend {
    /// Stops `pid`, the backend serving the client at `client_port`, or `None` where
    /// no such backend runs on this machine (a server elsewhere, in a container, say)
    /// or this user may not signal it. A backend's command line names its client
    /// (`postgres: app trellis 127.0.0.1(54321) idle`), which tells it apart from any
    /// other process that happens to have the same pid here.
    fn stop(pid: i32, client_port: i32) -> Option<Self> {
        let cmdline = std::fs::read_to_string(format!("/proc/{pid}/cmdline")).ok()?;
        if !cmdline.starts_with("postgres") || !cmdline.contains(&format!("({client_port})")) {
            return None;
        }
        let stopped = std::process::Command::new("kill")
            .args(["-STOP", &pid.to_string()])
            .status()
            .ok()?
            .success();
        stopped.then_some(Self(pid))
    }
}

impl Drop for StoppedBackend {
    fn drop(&mut self) {
        let _ = std::process::Command::new("kill")
            .args(["-CONT", &self.0.to_string()])
            .status();
    }
}

#[tokio::test]
async fn a_read_queued_on_a_backend_that_does_not_run_is_answered_by_another_connection() {
    let setup = store().await;
    let (_, ctx, admin) = tenant(&setup).await;
    let (store, application) = named_store("trellis_hedged").await;
    let store = store.with_pipelined_connections(2);
    if !store.pipelines_reads() {
        return;
    }
    burst_of_reads(&store, &ctx, admin).await;
    let observer = raw(&super::support::app_url()).await;
    let main = main_backend(&store).await;
    let pipelined = pipelined_backends(&observer, &application, main).await;
    assert_eq!(pipelined.len(), 2, "a burst opened both connections");
    let (pid, port) = pipelined[0];
    let Some(stopped) = StoppedBackend::stop(pid, port) else {
        eprintln!("skipped: the backends are not on this machine, or not ours to stop");
        return;
    };
    let before = store.pipelined_counts().unwrap();
    // The reads take turns on both connections, so some are queued on the stopped one;
    // without a second sending they would wait for it for ever.
    let reads = async {
        for _ in 0..8 {
            assert_eq!(UserRepo::get(&store, &ctx, admin).await.unwrap().id, admin);
        }
    };
    let answered = tokio::time::timeout(std::time::Duration::from_secs(30), reads).await;
    drop(stopped);
    answered.expect("every read was answered while one backend was stopped");
    // `/metrics` shows these counts: an operator sees reads that were held up.
    let after = store.pipelined_counts().unwrap();
    assert!(after.resent > before.resent, "{before:?} -> {after:?}");
    assert!(
        after.resent_answered_first > before.resent_answered_first,
        "{before:?} -> {after:?}"
    );
    burst_of_reads(&store, &ctx, admin).await;
}

/// The pid of the backend of `store`'s main pool (of one connection).
async fn main_backend(store: &PgStore) -> i32 {
    let rows = super::support::query(store.connection(), "SELECT pg_backend_pid() AS pid").await;
    rows[0].try_get("", "pid").unwrap()
}

/// The pid and client port of each pipelined session of `application` (all but the
/// main pool's, whose backend is `main`).
async fn pipelined_backends(
    observer: &sea_orm::DatabaseConnection,
    application: &str,
    main: i32,
) -> Vec<(i32, i32)> {
    let rows = super::support::query(
        observer,
        &format!(
            "SELECT pid, coalesce(client_port, -1) AS port FROM pg_stat_activity
              WHERE application_name = '{application}' AND pid <> {main} ORDER BY pid"
        ),
    )
    .await;
    rows.iter()
        .map(|r| {
            (
                r.try_get("", "pid").unwrap(),
                r.try_get("", "port").unwrap(),
            )
        })
        .collect()
}

#[tokio::test]
async fn with_one_connection_per_runtime_a_read_on_a_stopped_backend_is_answered_over_another_runtimes()
 {
    let setup = store().await;
    let (_, ctx, admin) = tenant(&setup).await;
    let (store, application) = named_store("trellis_hedged_across").await;
    let store = store.with_pipelined_connections(2).with_runtimes(2);
    if !store.pipelines_reads() {
        return;
    }
    let observer = raw(&super::support::app_url()).await;
    let main = main_backend(&store).await;
    // The store let go of the connection it checked its URL with; wait for it to end.
    for _ in 0..100 {
        if pipelined_backends(&observer, &application, main)
            .await
            .is_empty()
        {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    burst_of_reads(&store, &ctx, admin).await;
    let ours = pipelined_backends(&observer, &application, main).await;
    assert_eq!(ours.len(), 1, "this runtime's one connection");

    let (end, other) = second_runtime_reading(&store, &ctx, admin).await;
    let Some(stopped) = StoppedBackend::stop(ours[0].0, ours[0].1) else {
        eprintln!("skipped: the backends are not on this machine, or not ours to stop");
        let _ = end.send(());
        return;
    };
    let reads = async {
        for _ in 0..4 {
            assert_eq!(UserRepo::get(&store, &ctx, admin).await.unwrap().id, admin);
        }
    };
    let answered = tokio::time::timeout(std::time::Duration::from_secs(30), reads).await;
    drop(stopped);
    let _ = end.send(());
    tokio::task::spawn_blocking(move || other.join())
        .await
        .unwrap()
        .unwrap();
    answered.expect("reads on the stopped backend were answered over the other runtime's");
}
