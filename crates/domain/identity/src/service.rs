//! Identity use cases: logging in and out, refreshing sessions, authenticating requests,
//! and managing users, guests and API keys.

use crate::{
    AccessClaims, ApiKey, ApiKeyRepo, IdentityError, LoginThrottle, Me, Membership, MembershipRepo,
    NewApiKey, NewPlatformAdmin, NewUser, OAuthLink, PlatformAdmin, PlatformAdminRepo, Preferences,
    Principal, RefreshToken, RefreshTokenRepo, Result, Session, Tier, TokenSigner, User,
    UserFilter, UserPatch, UserRepo, Username, parse_name,
};
use chrono::Duration;
use std::sync::Arc;
use trellis_kernel::secrets::{constant_time_eq, fingerprint, random_token};
use trellis_kernel::{
    Actor, ApiKeyId, Clock, Email, HttpUrl, InvalidValue, MembershipId, Page, PageRequest,
    Password, PasswordHasher, Permission, PlatformAdminId, PlatformCtx, RefreshTokenId, Role,
    SessionFamilyId, Slug, TenantCtx, TenantId, Timestamp, UserId,
};
use trellis_tenancy::{TenantRepo, TenantStatus, bounded_text};

/// Token lifetimes.
#[derive(Debug, Clone, Copy)]
pub struct IdentityConfig {
    pub access_ttl: Duration,
    pub refresh_ttl: Duration,
}

impl Default for IdentityConfig {
    fn default() -> Self {
        Self {
            access_ttl: Duration::minutes(15),
            refresh_ttl: Duration::days(30),
        }
    }
}

/// The ports identity works through.
#[derive(Clone)]
pub struct IdentityService {
    pub(crate) users: Arc<dyn UserRepo>,
    pub(crate) memberships: Arc<dyn MembershipRepo>,
    pub(crate) keys: Arc<dyn ApiKeyRepo>,
    pub(crate) refresh: Arc<dyn RefreshTokenRepo>,
    pub(crate) admins: Arc<dyn PlatformAdminRepo>,
    pub(crate) tenants: Arc<dyn TenantRepo>,
    pub(crate) hasher: Arc<dyn PasswordHasher>,
    pub(crate) signer: Arc<dyn TokenSigner>,
    pub(crate) throttle: Arc<dyn LoginThrottle>,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) config: IdentityConfig,
}

/// The ports, named, so wiring code reads well.
pub struct IdentityPorts {
    pub users: Arc<dyn UserRepo>,
    pub memberships: Arc<dyn MembershipRepo>,
    pub keys: Arc<dyn ApiKeyRepo>,
    pub refresh: Arc<dyn RefreshTokenRepo>,
    pub admins: Arc<dyn PlatformAdminRepo>,
    pub tenants: Arc<dyn TenantRepo>,
    pub hasher: Arc<dyn PasswordHasher>,
    pub signer: Arc<dyn TokenSigner>,
    pub throttle: Arc<dyn LoginThrottle>,
    pub clock: Arc<dyn Clock>,
}

/// A login attempt. Without a tenant it is a platform superadmin login.
#[derive(Debug, Clone)]
pub struct LoginCmd {
    pub tenant: Option<Slug>,
    pub email: Email,
    pub password: Password,
    /// The client's address, for throttling.
    pub client: Option<String>,
}

/// An admin creating a user in their tenant.
#[derive(Debug, Clone)]
pub struct CreateUser {
    pub email: Email,
    pub name: String,
    pub role: Role,
    /// Without a password the user can only sign in through OAuth (or after a reset).
    pub password: Option<Password>,
    pub username: Option<Username>,
    pub avatar_url: Option<HttpUrl>,
    pub tier: Tier,
    pub oauth: Option<OAuthLink>,
    pub preferences: Preferences,
}

/// A new API key.
#[derive(Debug, Clone)]
pub struct CreateApiKey {
    pub name: String,
    /// Empty means: every permission of the creator's role.
    pub scopes: Vec<Permission>,
    pub expires_at: Option<Timestamp>,
}

/// A created key: the full secret is shown exactly once, here.
#[derive(Debug, Clone)]
pub struct CreatedApiKey {
    pub key: ApiKey,
    pub secret: String,
}

/// Marks every API key, so secret scanners and humans recognise one.
pub const API_KEY_PREFIX: &str = "trl";

fn require(ctx: &TenantCtx, p: Permission) -> Result<()> {
    if ctx.can(p) {
        Ok(())
    } else {
        Err(IdentityError::Forbidden)
    }
}

/// Splits `trl_<tenant>_<prefix>_<secret>` into its parts.
/// How stale an API key's `last_used_at` may be. Recording every use would make each
/// request a key authenticates also a committed write (a WAL flush on the request's
/// path, and row locks that serialise a busy key's concurrent requests), to keep a
/// value people read at the granularity of "a minute ago".
pub const API_KEY_LAST_USED_GRANULARITY: chrono::TimeDelta = chrono::TimeDelta::seconds(60);

/// Whether a use at `now` should be recorded over `last_used`.
fn needs_touch(last_used: Option<Timestamp>, now: Timestamp) -> bool {
    last_used.is_none_or(|at| now - at >= API_KEY_LAST_USED_GRANULARITY || at > now)
}

fn parse_api_key(key: &str) -> Option<(TenantId, &str, &str)> {
    let mut parts = key.splitn(4, '_');
    if parts.next()? != API_KEY_PREFIX {
        return None;
    }
    let tenant = uuid::Uuid::try_parse(parts.next()?).ok()?;
    let prefix = parts.next()?;
    let secret = parts.next()?;
    (prefix.len() == 12 && !secret.is_empty()).then_some((
        TenantId::from_uuid(tenant),
        prefix,
        secret,
    ))
}

/// Splits `<tenant>.<secret>` refresh tokens.
fn parse_refresh(token: &str) -> Option<(TenantId, &str)> {
    let (tenant, secret) = token.split_once('.')?;
    let tenant = uuid::Uuid::try_parse(tenant).ok()?;
    (!secret.is_empty()).then_some((TenantId::from_uuid(tenant), secret))
}

impl IdentityService {
    #[must_use]
    pub fn new(ports: IdentityPorts, config: IdentityConfig) -> Self {
        Self {
            users: ports.users,
            memberships: ports.memberships,
            keys: ports.keys,
            refresh: ports.refresh,
            admins: ports.admins,
            tenants: ports.tenants,
            hasher: ports.hasher,
            signer: ports.signer,
            throttle: ports.throttle,
            clock: ports.clock,
            config,
        }
    }

    // ----- sessions -------------------------------------------------------------------

    /// Checks credentials and opens a session. Unknown tenant, unknown user, wrong
    /// password and inactive user all give the same `Unauthenticated`, after the same
    /// amount of hashing work.
    ///
    /// # Errors
    /// `Unauthenticated` or `Throttled`.
    pub async fn login(&self, cmd: LoginCmd) -> Result<Session> {
        let now = self.clock.now();
        let tenant_key = cmd.tenant.as_ref().map_or("-", Slug::as_str);
        let mut keys = vec![format!("acct:{tenant_key}:{}", cmd.email)];
        if let Some(client) = &cmd.client {
            keys.push(format!("ip:{client}"));
        }
        if let Some(secs) = self.throttle.retry_after(&keys, now) {
            return Err(IdentityError::Throttled {
                retry_after_secs: secs,
            });
        }
        let outcome = match &cmd.tenant {
            None => self.login_platform(&cmd, now).await?,
            Some(slug) => self.login_tenant(slug, &cmd, now).await?,
        };
        match outcome {
            Some(session) => {
                self.throttle.record_success(&keys[..1]);
                Ok(session)
            }
            None => {
                self.throttle.record_failure(&keys, now);
                Err(IdentityError::Unauthenticated)
            }
        }
    }

    async fn login_platform(&self, cmd: &LoginCmd, now: Timestamp) -> Result<Option<Session>> {
        let found = self
            .admins
            .find_for_login(&PlatformCtx::system(), &cmd.email)
            .await?;
        let ok = self
            .hasher
            .verify(&cmd.password, found.as_ref().map(|(_, h)| h))
            .await;
        match found {
            Some((admin, _)) if ok && admin.active => {
                let claims = self.claims(admin.id.as_uuid(), None, Role::Superadmin, false, now);
                Ok(Some(Session {
                    access_token: self.signer.sign(&claims)?,
                    expires_in_secs: self.config.access_ttl.num_seconds(),
                    refresh_token: None,
                    tenant_id: None,
                    role: Role::Superadmin,
                }))
            }
            _ => Ok(None),
        }
    }

    async fn login_tenant(
        &self,
        slug: &Slug,
        cmd: &LoginCmd,
        now: Timestamp,
    ) -> Result<Option<Session>> {
        let tenant = self
            .tenants
            .resolve_slug(&PlatformCtx::system(), slug)
            .await?
            .filter(|t| t.status == TenantStatus::Active);
        let Some(tenant) = tenant else {
            self.hasher.verify(&cmd.password, None).await;
            return Ok(None);
        };
        let ctx = TenantCtx::system(tenant.id);
        if let Some(record) = self.users.find_for_login(&ctx, &cmd.email).await? {
            let ok = self
                .hasher
                .verify(&cmd.password, record.password_hash.as_ref())
                .await;
            if !ok || !record.user.active {
                return Ok(None);
            }
            self.users.record_login(&ctx, record.user.id, now).await?;
            let session = self
                .open_session(&ctx, record.user.id, None, record.user.role, now)
                .await?;
            return Ok(Some(session));
        }
        // Not a user here: perhaps a guest from another tenant.
        let Some(guest) = self.memberships.find_by_email(&ctx, &cmd.email).await? else {
            self.hasher.verify(&cmd.password, None).await;
            return Ok(None);
        };
        let home = TenantCtx::system(guest.home_tenant_id);
        let record = self.users.find_for_login(&home, &cmd.email).await?;
        let ok = self
            .hasher
            .verify(
                &cmd.password,
                record.as_ref().and_then(|r| r.password_hash.as_ref()),
            )
            .await;
        match record {
            Some(r) if ok && r.user.active && r.user.id == guest.user_id => {
                let session = self
                    .open_session(&ctx, guest.user_id, Some(guest.id), guest.role, now)
                    .await?;
                Ok(Some(session))
            }
            _ => Ok(None),
        }
    }

    fn claims(
        &self,
        sub: uuid::Uuid,
        tid: Option<TenantId>,
        role: Role,
        guest: bool,
        now: Timestamp,
    ) -> AccessClaims {
        AccessClaims {
            sub,
            tid: tid.map(|t| t.as_uuid()),
            role,
            guest,
            iat: now.timestamp(),
            exp: (now + self.config.access_ttl).timestamp(),
        }
    }

    async fn open_session(
        &self,
        ctx: &TenantCtx,
        user: UserId,
        membership: Option<MembershipId>,
        role: Role,
        now: Timestamp,
    ) -> Result<Session> {
        self.issue(ctx, user, membership, role, SessionFamilyId::new(), now)
            .await
    }

    async fn issue(
        &self,
        ctx: &TenantCtx,
        user: UserId,
        membership: Option<MembershipId>,
        role: Role,
        family: SessionFamilyId,
        now: Timestamp,
    ) -> Result<Session> {
        let secret = random_token(32);
        self.refresh
            .insert(
                ctx,
                RefreshToken {
                    id: RefreshTokenId::new(),
                    family_id: family,
                    user_id: user,
                    membership_id: membership,
                    token_hash: fingerprint(&secret),
                    expires_at: now + self.config.refresh_ttl,
                    used_at: None,
                    revoked_at: None,
                    created_at: now,
                },
            )
            .await?;
        let claims = self.claims(
            user.as_uuid(),
            Some(ctx.tenant_id()),
            role,
            membership.is_some(),
            now,
        );
        Ok(Session {
            access_token: self.signer.sign(&claims)?,
            expires_in_secs: self.config.access_ttl.num_seconds(),
            refresh_token: Some(format!("{}.{secret}", ctx.tenant_id().as_uuid().simple())),
            tenant_id: Some(ctx.tenant_id()),
            role,
        })
    }

    /// Trades a refresh token for a new session. Each token works once: a second use
    /// means it was stolen, so the whole family is revoked and both holders must log
    /// in again. The role is read afresh, so role changes apply at the next refresh.
    ///
    /// # Errors
    /// `Unauthenticated` for an unknown, expired, revoked or reused token, or when the
    /// user was deactivated or the tenant suspended.
    pub async fn refresh(&self, token: &str) -> Result<Session> {
        let now = self.clock.now();
        let (tenant_id, secret) = parse_refresh(token).ok_or(IdentityError::Unauthenticated)?;
        let ctx = TenantCtx::system(tenant_id);
        let hash = fingerprint(secret);
        let stored = self
            .refresh
            .find_by_hash(&ctx, &hash)
            .await?
            .ok_or(IdentityError::Unauthenticated)?;
        if stored.revoked_at.is_some() || stored.expires_at <= now {
            return Err(IdentityError::Unauthenticated);
        }
        if stored.used_at.is_some() || !self.refresh.mark_used(&ctx, &hash, now).await? {
            self.refresh
                .revoke_family(&ctx, stored.family_id, now)
                .await?;
            return Err(IdentityError::Unauthenticated);
        }
        let tenant_ok = self.tenants.get(&PlatformCtx::system(), tenant_id).await;
        if !matches!(tenant_ok, Ok(t) if t.status == TenantStatus::Active) {
            return Err(IdentityError::Unauthenticated);
        }
        let role = match stored.membership_id {
            Some(mid) => match self.memberships.get(&ctx, mid).await {
                Ok(m) => m.role,
                Err(IdentityError::NotFound(_)) => return Err(IdentityError::Unauthenticated),
                Err(e) => return Err(e),
            },
            None => match self.users.get(&ctx, stored.user_id).await {
                Ok(u) if u.active => u.role,
                Ok(_) | Err(IdentityError::NotFound(_)) => {
                    return Err(IdentityError::Unauthenticated);
                }
                Err(e) => return Err(e),
            },
        };
        self.issue(
            &ctx,
            stored.user_id,
            stored.membership_id,
            role,
            stored.family_id,
            now,
        )
        .await
    }

    /// Ends the session the refresh token belongs to (its whole family). Unknown
    /// tokens are ignored, so logout never tells what exists.
    ///
    /// # Errors
    /// Storage failures only.
    pub async fn logout(&self, token: &str) -> Result<()> {
        let Some((tenant_id, secret)) = parse_refresh(token) else {
            return Ok(());
        };
        let ctx = TenantCtx::system(tenant_id);
        if let Some(stored) = self
            .refresh
            .find_by_hash(&ctx, &fingerprint(secret))
            .await?
        {
            self.refresh
                .revoke_family(&ctx, stored.family_id, self.clock.now())
                .await?;
        }
        Ok(())
    }

    /// Verifies a bearer access token.
    ///
    /// # Errors
    /// `Unauthenticated` for a bad signature, an expired token or wrong claims.
    pub fn authenticate_token(&self, token: &str) -> Result<Principal> {
        let claims = self
            .signer
            .verify(token)
            .ok_or(IdentityError::Unauthenticated)?;
        match (claims.tid, claims.role) {
            (None, Role::Superadmin) => Ok(Principal::Platform(PlatformCtx::authenticated(
                PlatformAdminId::from_uuid(claims.sub),
            ))),
            (Some(tid), role) if role != Role::Superadmin => {
                Ok(Principal::Tenant(TenantCtx::authenticated(
                    TenantId::from_uuid(tid),
                    Actor::User(UserId::from_uuid(claims.sub)),
                    role,
                    None,
                )))
            }
            _ => Err(IdentityError::Unauthenticated),
        }
    }

    /// Verifies an API key against storage on every call, so revocation is immediate.
    /// The key acts with its creator's *current* role, narrowed by its scopes.
    ///
    /// # Errors
    /// `Unauthenticated` for an unknown, wrong, revoked or expired key, or one whose
    /// creator is gone or deactivated.
    pub async fn authenticate_api_key(&self, key: &str) -> Result<TenantCtx> {
        let now = self.clock.now();
        let (tenant_id, prefix, secret) =
            parse_api_key(key).ok_or(IdentityError::Unauthenticated)?;
        let sys = TenantCtx::system(tenant_id);
        let record = self
            .keys
            .find_by_prefix(&sys, prefix)
            .await?
            .ok_or(IdentityError::Unauthenticated)?;
        if !constant_time_eq(&record.secret_hash, &fingerprint(secret))
            || record.key.revoked_at.is_some()
            || record.key.expires_at.is_some_and(|e| e <= now)
        {
            return Err(IdentityError::Unauthenticated);
        }
        let owner = match self.users.get(&sys, record.key.created_by).await {
            Ok(u) if u.active => u,
            Ok(_) | Err(IdentityError::NotFound(_)) => return Err(IdentityError::Unauthenticated),
            Err(e) => return Err(e),
        };
        if needs_touch(record.key.last_used_at, now) {
            self.keys.touch(&sys, record.key.id, now).await?;
        }
        Ok(TenantCtx::authenticated(
            tenant_id,
            Actor::ApiKey {
                key: record.key.id,
                owner: owner.id,
            },
            owner.role,
            Some(record.key.scopes),
        ))
    }

    /// The signed-in user as they are now.
    ///
    /// # Errors
    /// `Unauthenticated` when the user no longer exists (e.g. deleted since login).
    pub async fn me(&self, ctx: &TenantCtx) -> Result<Me> {
        let user_id = ctx.user_id().ok_or(IdentityError::Unauthenticated)?;
        let (user, guest) = match self.users.get(ctx, user_id).await {
            Ok(u) => (u, false),
            Err(IdentityError::NotFound(_)) => (self.guest_profile(ctx, user_id).await?, true),
            Err(e) => return Err(e),
        };
        let permissions = Permission::ALL
            .into_iter()
            .filter(|p| ctx.can(*p))
            .collect();
        Ok(Me {
            user,
            tenant_id: ctx.tenant_id(),
            role: ctx.role(),
            guest,
            permissions,
        })
    }

    async fn guest_profile(&self, ctx: &TenantCtx, user_id: UserId) -> Result<User> {
        // A guest's profile lives in their home tenant; the membership says which.
        let mut page = PageRequest::new(Some(trellis_kernel::page::MAX_PAGE_SIZE), None)?;
        loop {
            let batch = self.memberships.list(ctx, page).await?;
            if let Some(m) = batch.items.iter().find(|m| m.user_id == user_id) {
                return self
                    .users
                    .get(&TenantCtx::system(m.home_tenant_id), user_id)
                    .await
                    .map_err(|_| IdentityError::Unauthenticated);
            }
            match batch.next_cursor {
                Some(c) => page = PageRequest::new(Some(page.limit()), Some(&c))?,
                None => return Err(IdentityError::Unauthenticated),
            }
        }
    }

    // ----- users ----------------------------------------------------------------------

    /// # Errors
    /// `Forbidden` without `users_read`.
    pub async fn list_users(
        &self,
        ctx: &TenantCtx,
        filter: &UserFilter,
        page: PageRequest,
    ) -> Result<Page<User>> {
        require(ctx, Permission::UsersRead)?;
        self.users.list(ctx, filter, page).await
    }

    /// A user may always see themselves; others need `users_read`.
    ///
    /// # Errors
    /// `NotFound` when no such user is in this tenant.
    pub async fn get_user(&self, ctx: &TenantCtx, id: UserId) -> Result<User> {
        if ctx.user_id() != Some(id) {
            require(ctx, Permission::UsersRead)?;
        }
        self.users.get(ctx, id).await
    }

    /// Invites a user into the caller's tenant.
    ///
    /// # Errors
    /// `Forbidden` without `users_manage` or when granting a role above one's own;
    /// `Conflict` for a taken email; `LimitReached` at the tenant's user limit.
    pub async fn create_user(&self, ctx: &TenantCtx, cmd: CreateUser) -> Result<User> {
        require(ctx, Permission::UsersManage)?;
        if !ctx.role().may_grant(cmd.role) {
            return Err(IdentityError::Forbidden);
        }
        let tenant = self.tenants.current(ctx).await?;
        if let Some(max) = tenant.config.max_users
            && self.users.count(ctx).await? >= u64::from(max)
        {
            return Err(IdentityError::LimitReached(max));
        }
        let password_hash = match &cmd.password {
            Some(p) => Some(self.hasher.hash(p).await?),
            None => None,
        };
        let new = NewUser {
            id: UserId::new(),
            email: cmd.email,
            email_verified: false,
            name: parse_name(&cmd.name)?,
            username: cmd.username,
            avatar_url: cmd.avatar_url,
            role: cmd.role,
            tier: cmd.tier,
            password_hash,
            oauth: cmd.oauth,
            preferences: cmd.preferences,
        };
        self.users.insert(ctx, new).await
    }

    /// Users may change their own profile fields; role, tier and the active flag need
    /// `users_manage`, and a role can only be granted by someone who holds all of it.
    ///
    /// # Errors
    /// `Forbidden` as above; `NotFound` for a user outside this tenant.
    pub async fn update_user(
        &self,
        ctx: &TenantCtx,
        id: UserId,
        mut patch: UserPatch,
    ) -> Result<User> {
        let privileged = patch.role.is_some()
            || patch.tier.is_some()
            || patch.active.is_some()
            || patch.email_verified.is_some();
        if ctx.user_id() != Some(id) || privileged {
            require(ctx, Permission::UsersManage)?;
        }
        let target = self.users.get(ctx, id).await?;
        if let Some(role) = patch.role {
            if !ctx.role().may_grant(role) || !ctx.role().may_grant(target.role) {
                return Err(IdentityError::Forbidden);
            }
            if ctx.user_id() == Some(id) && role != target.role {
                return Err(InvalidValue::new("role", "you cannot change your own role").into());
            }
        }
        if patch.active == Some(false) && ctx.user_id() == Some(id) {
            return Err(InvalidValue::new("active", "you cannot deactivate yourself").into());
        }
        if let Some(name) = &patch.name {
            patch.name = Some(parse_name(name)?);
        }
        let deactivating = patch.active == Some(false);
        let user = self.users.update(ctx, id, patch).await?;
        if deactivating {
            self.refresh
                .revoke_for_user(ctx, id, self.clock.now())
                .await?;
        }
        Ok(user)
    }

    /// Sets a new password. Users change their own by proving the current one; admins
    /// with `users_manage` may reset others'. All the user's sessions end.
    ///
    /// # Errors
    /// `Unauthenticated` when the current password is wrong; `Forbidden`; `NotFound`.
    pub async fn change_password(
        &self,
        ctx: &TenantCtx,
        id: UserId,
        current: Option<Password>,
        new: Password,
    ) -> Result<()> {
        if ctx.user_id() == Some(id) {
            let user = self.users.get(ctx, id).await?;
            let record = self.users.find_for_login(ctx, &user.email).await?;
            let current =
                current.ok_or_else(|| InvalidValue::new("current_password", "is required"))?;
            if !self
                .hasher
                .verify(
                    &current,
                    record.as_ref().and_then(|r| r.password_hash.as_ref()),
                )
                .await
            {
                return Err(IdentityError::Unauthenticated);
            }
        } else {
            require(ctx, Permission::UsersManage)?;
            let target = self.users.get(ctx, id).await?;
            if !ctx.role().may_grant(target.role) {
                return Err(IdentityError::Forbidden);
            }
        }
        let hash = self.hasher.hash(&new).await?;
        self.users.set_password(ctx, id, hash).await?;
        self.refresh
            .revoke_for_user(ctx, id, self.clock.now())
            .await
    }

    /// Soft-deletes a user, ends their sessions and revokes their API keys.
    ///
    /// # Errors
    /// `Forbidden` without `users_manage` or for oneself; `NotFound`.
    pub async fn delete_user(&self, ctx: &TenantCtx, id: UserId) -> Result<()> {
        require(ctx, Permission::UsersManage)?;
        if ctx.user_id() == Some(id) {
            return Err(InvalidValue::new("id", "you cannot delete yourself").into());
        }
        let target = self.users.get(ctx, id).await?;
        if !ctx.role().may_grant(target.role) {
            return Err(IdentityError::Forbidden);
        }
        let now = self.clock.now();
        self.users.soft_delete(ctx, id, now).await?;
        self.refresh.revoke_for_user(ctx, id, now).await?;
        self.keys.revoke_for_user(ctx, id, now).await
    }

    // ----- guests ---------------------------------------------------------------------

    /// Admits a user of another tenant as a guest with `role`.
    ///
    /// # Errors
    /// `NotFound` when the home tenant or the user there does not exist; `Conflict`
    /// when the email is already a user or guest here; `Forbidden`.
    pub async fn add_guest(
        &self,
        ctx: &TenantCtx,
        home: &Slug,
        email: Email,
        role: Role,
    ) -> Result<Membership> {
        require(ctx, Permission::UsersManage)?;
        if !ctx.role().may_grant(role) {
            return Err(IdentityError::Forbidden);
        }
        let home_ref = self
            .tenants
            .resolve_slug(&PlatformCtx::system(), home)
            .await?
            .filter(|t| t.id != ctx.tenant_id())
            .ok_or(IdentityError::NotFound("home tenant"))?;
        let user = self
            .users
            .find_for_login(&TenantCtx::system(home_ref.id), &email)
            .await?
            .ok_or(IdentityError::NotFound("user"))?
            .user;
        if self.users.find_for_login(ctx, &email).await?.is_some() {
            return Err(IdentityError::Conflict(
                "a user with this email already exists in this tenant".into(),
            ));
        }
        self.memberships
            .insert(
                ctx,
                Membership {
                    id: MembershipId::new(),
                    tenant_id: ctx.tenant_id(),
                    home_tenant_id: home_ref.id,
                    user_id: user.id,
                    email,
                    role,
                    created_at: self.clock.now(),
                },
            )
            .await
    }

    /// # Errors
    /// `Forbidden` without `users_read`.
    pub async fn list_guests(
        &self,
        ctx: &TenantCtx,
        page: PageRequest,
    ) -> Result<Page<Membership>> {
        require(ctx, Permission::UsersRead)?;
        self.memberships.list(ctx, page).await
    }

    /// # Errors
    /// `Forbidden` without `users_manage`; `NotFound`.
    pub async fn remove_guest(&self, ctx: &TenantCtx, id: MembershipId) -> Result<()> {
        require(ctx, Permission::UsersManage)?;
        let m = self.memberships.get(ctx, id).await?;
        self.memberships.delete(ctx, id).await?;
        self.refresh
            .revoke_for_user(ctx, m.user_id, self.clock.now())
            .await
    }

    // ----- API keys -------------------------------------------------------------------

    /// Creates an API key acting as the caller, limited to `scopes`.
    ///
    /// # Errors
    /// `Forbidden` without `api_keys_manage`, for an API-key caller, or for a scope
    /// the caller's role does not hold; `Invalid` for a bad name or a past expiry.
    pub async fn create_api_key(
        &self,
        ctx: &TenantCtx,
        cmd: CreateApiKey,
    ) -> Result<CreatedApiKey> {
        require(ctx, Permission::ApiKeysManage)?;
        let Actor::User(owner) = ctx.actor() else {
            return Err(IdentityError::Forbidden);
        };
        let name = bounded_text("name", &cmd.name, 100, false)?;
        if cmd.scopes.iter().any(|s| !ctx.can(*s)) {
            return Err(IdentityError::Forbidden);
        }
        let now = self.clock.now();
        if cmd.expires_at.is_some_and(|e| e <= now) {
            return Err(InvalidValue::new("expires_at", "must be in the future").into());
        }
        let mut scopes = if cmd.scopes.is_empty() {
            ctx.role().permissions().to_vec()
        } else {
            cmd.scopes
        };
        scopes.sort();
        scopes.dedup();
        let prefix: String = random_token(16)
            .chars()
            .filter(char::is_ascii_alphanumeric)
            .take(12)
            .collect::<String>()
            .to_lowercase();
        let prefix = format!("{prefix:0<12}");
        let secret = random_token(32);
        let key = self
            .keys
            .insert(
                ctx,
                NewApiKey {
                    id: ApiKeyId::new(),
                    name,
                    prefix: prefix.clone(),
                    secret_hash: fingerprint(&secret),
                    scopes,
                    created_by: owner,
                    expires_at: cmd.expires_at,
                },
            )
            .await?;
        let secret = format!(
            "{API_KEY_PREFIX}_{}_{prefix}_{secret}",
            ctx.tenant_id().as_uuid().simple()
        );
        Ok(CreatedApiKey { key, secret })
    }

    /// # Errors
    /// `Forbidden` without `api_keys_manage`.
    pub async fn list_api_keys(&self, ctx: &TenantCtx, page: PageRequest) -> Result<Page<ApiKey>> {
        require(ctx, Permission::ApiKeysManage)?;
        self.keys.list(ctx, page).await
    }

    /// Revokes a key; it stops working with the next request.
    ///
    /// # Errors
    /// `Forbidden` without `api_keys_manage`; `NotFound`.
    pub async fn revoke_api_key(&self, ctx: &TenantCtx, id: ApiKeyId) -> Result<ApiKey> {
        require(ctx, Permission::ApiKeysManage)?;
        self.keys.revoke(ctx, id, self.clock.now()).await
    }

    // ----- platform -------------------------------------------------------------------

    /// Creates a platform superadmin (from the CLI or seeding).
    ///
    /// # Errors
    /// `Conflict` when the email is taken.
    pub async fn create_platform_admin(
        &self,
        ctx: &PlatformCtx,
        email: Email,
        name: &str,
        password: &Password,
    ) -> Result<PlatformAdmin> {
        let new = NewPlatformAdmin {
            id: PlatformAdminId::new(),
            email,
            name: parse_name(name)?,
            password_hash: self.hasher.hash(password).await?,
        };
        self.admins.insert(ctx, new).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_keys_parse_into_tenant_prefix_and_secret() {
        let t = TenantId::new();
        let key = format!("trl_{}_abcdefghijkl_se_cr-et", t.as_uuid().simple());
        let (tenant, prefix, secret) = parse_api_key(&key).unwrap();
        assert_eq!((tenant, prefix, secret), (t, "abcdefghijkl", "se_cr-et"));
        assert!(parse_api_key("trl_nope_abcdefghijkl_x").is_none());
        assert!(parse_api_key("sk_whatever").is_none());
    }

    #[test]
    fn an_api_keys_use_is_recorded_at_most_once_a_minute() {
        let now = chrono::Utc::now();
        assert!(needs_touch(None, now));
        assert!(!needs_touch(
            Some(now - chrono::TimeDelta::seconds(59)),
            now
        ));
        assert!(needs_touch(Some(now - chrono::TimeDelta::seconds(60)), now));
        // A clock that went back must not freeze the value until it catches up.
        assert!(needs_touch(Some(now + chrono::TimeDelta::seconds(5)), now));
    }

    #[test]
    fn refresh_tokens_carry_their_tenant() {
        let t = TenantId::new();
        let token = format!("{}.s3cret", t.as_uuid().simple());
        let (tenant, secret) = parse_refresh(&token).unwrap();
        assert_eq!((tenant, secret), (t, "s3cret"));
        assert!(parse_refresh("garbage").is_none());
    }
}
