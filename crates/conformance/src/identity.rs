//! Conformance cases for the identity ports.

use crate::Ports;
use crate::fixtures::{email, every_page, new_user, refresh_token, tenant, user};
use std::collections::HashSet;
use trellis_identity::{
    IdentityError, Membership, NewApiKey, NewPlatformAdmin, UserFilter, UserPatch,
};
use trellis_identity::{NewUser, OAuthLink, Preferences, Tier, Username};
use trellis_kernel::HttpUrl;
use trellis_kernel::{
    ApiKeyId, MembershipId, PageRequest, PasswordHash, Permission, PlatformAdminId, PlatformCtx,
    Role, SessionFamilyId,
};

pub async fn a_user_reads_back_as_inserted(p: &Ports) {
    let (t, ctx, _) = tenant(p).await;
    let new = new_user("Ann@Example.com", Role::Sales);
    let inserted = p.users.insert(&ctx, new.clone()).await.unwrap();
    let got = p.users.get(&ctx, new.id).await.unwrap();
    assert_eq!(got.email.as_str(), "ann@example.com");
    assert_eq!(
        (got.role, got.tenant_id, got.active),
        (Role::Sales, t.id, true)
    );
    assert_eq!(got.name, inserted.name);
}

pub async fn every_field_of_a_user_reads_back_through_get_and_list(p: &Ports) {
    let (_, ctx, _) = tenant(p).await;
    // Every optional field set, every text field different, so a column read into the
    // wrong field cannot go unnoticed.
    let new = NewUser {
        email_verified: true,
        name: "Name Field".into(),
        username: Some(Username::parse("username_field").unwrap()),
        avatar_url: Some(HttpUrl::parse("https://avatars.example.com/a.png").unwrap()),
        tier: Tier::Pro,
        oauth: Some(OAuthLink::new("github", "subject-field").unwrap()),
        preferences: Preferences::new(Some("dark"), Some("pt-BR"), Some("large")).unwrap(),
        ..new_user("fields@example.com", Role::Support)
    };
    p.users.insert(&ctx, new.clone()).await.unwrap();
    let at = chrono::DateTime::parse_from_rfc3339("2026-05-06T07:08:09.123456Z")
        .unwrap()
        .with_timezone(&chrono::Utc);
    p.users.record_login(&ctx, new.id, at).await.unwrap();
    // Inactive, so `active` differs from `email_verified`; the update also moves
    // `updated_at` past `created_at`.
    let patch = UserPatch {
        active: Some(false),
        ..UserPatch::default()
    };
    p.users.update(&ctx, new.id, patch).await.unwrap();

    let got = p.users.get(&ctx, new.id).await.unwrap();
    assert_eq!(
        (
            got.id,
            got.tenant_id,
            got.email.as_str(),
            got.email_verified
        ),
        (new.id, ctx.tenant_id(), "fields@example.com", true)
    );
    assert_eq!(
        (
            got.name.as_str(),
            got.username.as_ref(),
            got.avatar_url.as_ref()
        ),
        ("Name Field", new.username.as_ref(), new.avatar_url.as_ref())
    );
    assert_eq!(
        (got.role, got.tier, got.active),
        (Role::Support, Tier::Pro, false)
    );
    assert_eq!(
        (&got.oauth, &got.preferences),
        (&new.oauth, &new.preferences)
    );
    assert_eq!(got.last_login_at, Some(at));
    assert!(got.created_at < got.updated_at);

    let listed = p
        .users
        .list(
            &ctx,
            &UserFilter::default(),
            PageRequest::new(Some(10), None).unwrap(),
        )
        .await
        .unwrap();
    let listed: Vec<_> = listed
        .items
        .into_iter()
        .filter(|u| u.id == new.id)
        .collect();
    assert_eq!(listed, vec![got]);
}

pub async fn an_email_is_unique_within_a_tenant_but_not_across(p: &Ports) {
    let (_, a, _) = tenant(p).await;
    let (_, b, _) = tenant(p).await;
    user(p, &a, "bob@example.com", Role::User).await;
    let dup = p
        .users
        .insert(&a, new_user("BOB@example.com", Role::User))
        .await;
    assert!(matches!(dup, Err(IdentityError::Conflict(_))), "{dup:?}");
    user(p, &b, "bob@example.com", Role::User).await;
}

pub async fn a_user_of_another_tenant_is_not_found(p: &Ports) {
    let (_, a, _) = tenant(p).await;
    let (_, b, _) = tenant(p).await;
    let u = user(p, &a, "carol@example.com", Role::User).await;
    assert!(matches!(
        p.users.get(&b, u.id).await,
        Err(IdentityError::NotFound(_))
    ));
    assert!(
        p.users
            .find_for_login(&b, &u.email)
            .await
            .unwrap()
            .is_none()
    );
}

pub async fn updating_a_user_from_another_tenant_changes_nothing(p: &Ports) {
    let (_, a, _) = tenant(p).await;
    let (_, b, _) = tenant(p).await;
    let u = user(p, &a, "dave@example.com", Role::User).await;
    let patch = UserPatch {
        name: Some("Hijacked".into()),
        role: Some(Role::TenantAdmin),
        ..UserPatch::default()
    };
    assert!(matches!(
        p.users.update(&b, u.id, patch).await,
        Err(IdentityError::NotFound(_))
    ));
    assert!(matches!(
        p.users.soft_delete(&b, u.id, chrono::Utc::now()).await,
        Err(IdentityError::NotFound(_))
    ));
    assert!(matches!(
        p.users
            .set_password(&b, u.id, PasswordHash::from_phc("x"))
            .await,
        Err(IdentityError::NotFound(_))
    ));
    let after = p.users.get(&a, u.id).await.unwrap();
    assert_eq!(
        (after.name.as_str(), after.role),
        (u.name.as_str(), Role::User)
    );
    let patch = UserPatch {
        name: Some("Dave D".into()),
        active: Some(false),
        ..UserPatch::default()
    };
    let own = p.users.update(&a, u.id, patch).await.unwrap();
    assert_eq!((own.name.as_str(), own.active), ("Dave D", false));
}

pub async fn users_list_filters_by_role_and_active_and_pages(p: &Ports) {
    let (_, ctx, admin) = tenant(p).await;
    let mut sales = Vec::new();
    for i in 0..5 {
        sales.push(
            user(p, &ctx, &format!("s{i}@example.com"), Role::Sales)
                .await
                .id,
        );
    }
    let inactive = user(p, &ctx, "gone@example.com", Role::User).await;
    let patch = UserPatch {
        active: Some(false),
        ..UserPatch::default()
    };
    p.users.update(&ctx, inactive.id, patch).await.unwrap();

    let filter = UserFilter {
        role: Some(Role::Sales),
        active: None,
    };
    let seen: Vec<_> = every_page(2, async |page| {
        p.users.list(&ctx, &filter, page).await.unwrap()
    })
    .await
    .iter()
    .flat_map(|batch| batch.items.iter().map(|u| u.id))
    .collect();
    assert_eq!(seen, sales, "oldest first, each once");

    let active_only = UserFilter {
        role: None,
        active: Some(true),
    };
    let all = p
        .users
        .list(&ctx, &active_only, PageRequest::default())
        .await
        .unwrap();
    let ids: HashSet<_> = all.items.iter().map(|u| u.id).collect();
    assert!(ids.contains(&admin) && !ids.contains(&inactive.id));
    assert_eq!(p.users.count(&ctx).await.unwrap(), 7);
}

pub async fn a_deleted_user_disappears_and_frees_the_email(p: &Ports) {
    let (_, ctx, _) = tenant(p).await;
    let u = user(p, &ctx, "erin@example.com", Role::User).await;
    p.users
        .soft_delete(&ctx, u.id, chrono::Utc::now())
        .await
        .unwrap();
    assert!(matches!(
        p.users.get(&ctx, u.id).await,
        Err(IdentityError::NotFound(_))
    ));
    assert!(
        p.users
            .find_for_login(&ctx, &u.email)
            .await
            .unwrap()
            .is_none()
    );
    let listed = p
        .users
        .list(&ctx, &UserFilter::default(), PageRequest::default())
        .await
        .unwrap();
    assert!(listed.items.iter().all(|x| x.id != u.id));
    user(p, &ctx, "erin@example.com", Role::User).await;
}

pub async fn login_lookup_returns_the_password_hash(p: &Ports) {
    let (_, ctx, _) = tenant(p).await;
    let u = user(p, &ctx, "frank@example.com", Role::User).await;
    let rec = p
        .users
        .find_for_login(&ctx, &email("FRANK@example.com"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(rec.user.id, u.id);
    assert_eq!(
        rec.password_hash.unwrap().as_str(),
        "$argon2id$hash-of-frank@example.com"
    );
    p.users
        .set_password(&ctx, u.id, PasswordHash::from_phc("$new"))
        .await
        .unwrap();
    let rec = p
        .users
        .find_for_login(&ctx, &u.email)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(rec.password_hash.unwrap().as_str(), "$new");
    p.users
        .record_login(&ctx, u.id, chrono::Utc::now())
        .await
        .unwrap();
    assert!(
        p.users
            .get(&ctx, u.id)
            .await
            .unwrap()
            .last_login_at
            .is_some()
    );
}

pub async fn guest_memberships_are_scoped_to_the_host_tenant(p: &Ports) {
    let (home, home_ctx, _) = tenant(p).await;
    let (_, host_ctx, _) = tenant(p).await;
    let (_, other_ctx, _) = tenant(p).await;
    let guest = user(p, &home_ctx, "guest@example.com", Role::User).await;
    let m = Membership {
        id: MembershipId::new(),
        tenant_id: host_ctx.tenant_id(),
        home_tenant_id: home.id,
        user_id: guest.id,
        email: guest.email.clone(),
        role: Role::ContentWriter,
        created_at: chrono::Utc::now(),
    };
    p.memberships.insert(&host_ctx, m.clone()).await.unwrap();
    let dup = p
        .memberships
        .insert(
            &host_ctx,
            Membership {
                id: MembershipId::new(),
                ..m.clone()
            },
        )
        .await;
    assert!(matches!(dup, Err(IdentityError::Conflict(_))), "{dup:?}");
    let found = p
        .memberships
        .find_by_email(&host_ctx, &guest.email)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (found.id, found.role, found.home_tenant_id),
        (m.id, Role::ContentWriter, home.id)
    );
    assert!(
        p.memberships
            .find_by_email(&other_ctx, &guest.email)
            .await
            .unwrap()
            .is_none()
    );
    assert!(matches!(
        p.memberships.get(&other_ctx, m.id).await,
        Err(IdentityError::NotFound(_))
    ));
    assert!(matches!(
        p.memberships.delete(&other_ctx, m.id).await,
        Err(IdentityError::NotFound(_))
    ));
    assert_eq!(
        p.memberships
            .list(&host_ctx, PageRequest::default())
            .await
            .unwrap()
            .items
            .len(),
        1
    );
    p.memberships.delete(&host_ctx, m.id).await.unwrap();
    assert!(
        p.memberships
            .find_by_email(&host_ctx, &guest.email)
            .await
            .unwrap()
            .is_none()
    );
}

fn new_key(owner: trellis_kernel::UserId, prefix: &str) -> NewApiKey {
    NewApiKey {
        id: ApiKeyId::new(),
        name: "ci".into(),
        prefix: prefix.into(),
        secret_hash: format!("hash-{prefix}"),
        scopes: vec![Permission::UsersRead, Permission::TenantRead],
        created_by: owner,
        expires_at: None,
    }
}

pub async fn api_keys_are_found_by_prefix_only_in_their_tenant(p: &Ports) {
    let (_, a, a_admin) = tenant(p).await;
    let (_, b, _) = tenant(p).await;
    let key = p
        .keys
        .insert(&a, new_key(a_admin, "abcdef123456"))
        .await
        .unwrap();
    let rec = p
        .keys
        .find_by_prefix(&a, "abcdef123456")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (rec.key.id, rec.secret_hash.as_str()),
        (key.id, "hash-abcdef123456")
    );
    assert_eq!(
        rec.key.scopes,
        vec![Permission::UsersRead, Permission::TenantRead]
    );
    assert!(
        p.keys
            .find_by_prefix(&b, "abcdef123456")
            .await
            .unwrap()
            .is_none()
    );
    assert!(matches!(
        p.keys.revoke(&b, key.id, chrono::Utc::now()).await,
        Err(IdentityError::NotFound(_))
    ));
    assert!(
        p.keys
            .list(&b, PageRequest::default())
            .await
            .unwrap()
            .items
            .is_empty()
    );
    p.keys.touch(&a, key.id, chrono::Utc::now()).await.unwrap();
    let listed = p.keys.list(&a, PageRequest::default()).await.unwrap();
    assert_eq!(listed.items.len(), 1);
    assert!(listed.items[0].last_used_at.is_some());
}

pub async fn every_field_of_an_api_key_reads_back_through_find_by_prefix(p: &Ports) {
    use chrono::SubsecRound as _;
    let (_, ctx, admin) = tenant(p).await;
    let now = chrono::Utc::now().trunc_subsecs(6);
    let (expires, used, revoked) = (
        now + chrono::Duration::days(30),
        now - chrono::Duration::minutes(3),
        now - chrono::Duration::minutes(1),
    );
    let mut new = new_key(admin, "fields000001");
    new.name = "deploy bot".into();
    new.scopes = vec![Permission::UsersRead];
    new.expires_at = Some(expires);
    let key = p.keys.insert(&ctx, new).await.unwrap();
    p.keys.touch(&ctx, key.id, used).await.unwrap();
    p.keys.revoke(&ctx, key.id, revoked).await.unwrap();
    let rec = p
        .keys
        .find_by_prefix(&ctx, "fields000001")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(rec.secret_hash, "hash-fields000001");
    assert_eq!(
        (rec.key.id, rec.key.name.as_str(), rec.key.prefix.as_str()),
        (key.id, "deploy bot", "fields000001")
    );
    assert_eq!(rec.key.scopes, vec![Permission::UsersRead]);
    assert_eq!(rec.key.created_by, admin);
    assert_eq!(rec.key.expires_at, Some(expires));
    assert_eq!(rec.key.last_used_at, Some(used));
    assert_eq!(rec.key.revoked_at, Some(revoked));
    assert_eq!(rec.key.created_at, key.created_at);
    // The list reads the same key by another path: both agree on every field.
    let listed = p.keys.list(&ctx, PageRequest::default()).await.unwrap();
    assert_eq!(listed.items, vec![rec.key]);
}

pub async fn revoking_an_api_key_keeps_the_first_revocation_time(p: &Ports) {
    let (_, ctx, admin) = tenant(p).await;
    let key = p
        .keys
        .insert(&ctx, new_key(admin, "zzzzzz000000"))
        .await
        .unwrap();
    let first = chrono::Utc::now() - chrono::Duration::minutes(5);
    let revoked = p.keys.revoke(&ctx, key.id, first).await.unwrap();
    let again = p
        .keys
        .revoke(&ctx, key.id, chrono::Utc::now())
        .await
        .unwrap();
    let (r1, r2) = (revoked.revoked_at.unwrap(), again.revoked_at.unwrap());
    assert!((r1 - r2).num_milliseconds().abs() < 1, "{r1} vs {r2}");
    let other = p
        .keys
        .insert(&ctx, new_key(admin, "yyyyyy000000"))
        .await
        .unwrap();
    p.keys
        .revoke_for_user(&ctx, admin, chrono::Utc::now())
        .await
        .unwrap();
    let rec = p
        .keys
        .find_by_prefix(&ctx, "yyyyyy000000")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(rec.key.id, other.id);
    assert!(rec.key.revoked_at.is_some());
}

pub async fn a_refresh_token_can_be_marked_used_only_once(p: &Ports) {
    let (_, a, admin) = tenant(p).await;
    let (_, b, _) = tenant(p).await;
    let t = refresh_token(admin, SessionFamilyId::new(), None);
    p.refresh.insert(&a, t.clone()).await.unwrap();
    assert!(
        p.refresh
            .find_by_hash(&b, &t.token_hash)
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        !p.refresh
            .mark_used(&b, &t.token_hash, chrono::Utc::now())
            .await
            .unwrap()
    );
    assert!(
        p.refresh
            .mark_used(&a, &t.token_hash, chrono::Utc::now())
            .await
            .unwrap()
    );
    assert!(
        !p.refresh
            .mark_used(&a, &t.token_hash, chrono::Utc::now())
            .await
            .unwrap()
    );
    let stored = p
        .refresh
        .find_by_hash(&a, &t.token_hash)
        .await
        .unwrap()
        .unwrap();
    assert!(stored.used_at.is_some());
    assert_eq!((stored.family_id, stored.user_id), (t.family_id, admin));
}

pub async fn revoking_a_family_revokes_all_its_tokens_and_nothing_else(p: &Ports) {
    let (_, ctx, admin) = tenant(p).await;
    let fam = SessionFamilyId::new();
    let t1 = refresh_token(admin, fam, None);
    let t2 = refresh_token(admin, fam, None);
    let other = refresh_token(admin, SessionFamilyId::new(), None);
    for t in [&t1, &t2, &other] {
        p.refresh.insert(&ctx, t.clone()).await.unwrap();
    }
    p.refresh
        .revoke_family(&ctx, fam, chrono::Utc::now())
        .await
        .unwrap();
    for t in [&t1, &t2] {
        assert!(
            p.refresh
                .find_by_hash(&ctx, &t.token_hash)
                .await
                .unwrap()
                .unwrap()
                .revoked_at
                .is_some()
        );
    }
    assert!(
        p.refresh
            .find_by_hash(&ctx, &other.token_hash)
            .await
            .unwrap()
            .unwrap()
            .revoked_at
            .is_none()
    );
    p.refresh
        .revoke_for_user(&ctx, admin, chrono::Utc::now())
        .await
        .unwrap();
    assert!(
        p.refresh
            .find_by_hash(&ctx, &other.token_hash)
            .await
            .unwrap()
            .unwrap()
            .revoked_at
            .is_some()
    );
}

pub async fn platform_admin_emails_are_unique(p: &Ports) {
    let addr = format!("root-{}@example.com", uuid::Uuid::now_v7().simple());
    let new = NewPlatformAdmin {
        id: PlatformAdminId::new(),
        email: email(&addr),
        name: "Root".into(),
        password_hash: PasswordHash::from_phc("$argon2id$root"),
    };
    let admin = p
        .admins
        .insert(&PlatformCtx::system(), new.clone())
        .await
        .unwrap();
    let dup = p
        .admins
        .insert(
            &PlatformCtx::system(),
            NewPlatformAdmin {
                id: PlatformAdminId::new(),
                ..new
            },
        )
        .await;
    assert!(matches!(dup, Err(IdentityError::Conflict(_))), "{dup:?}");
    let (found, hash) = p
        .admins
        .find_for_login(&PlatformCtx::system(), &email(&addr))
        .await
        .unwrap()
        .unwrap();
    assert_eq!((found.id, hash.as_str()), (admin.id, "$argon2id$root"));
}
