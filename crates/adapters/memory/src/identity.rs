//! The identity ports in memory: users, memberships, API keys, refresh tokens and
//! platform admins.

use crate::store::{MemoryStore, UserRow, now, page_of};
use async_trait::async_trait;
use trellis_identity::{
    ApiKey, ApiKeyRecord, ApiKeyRepo, IdentityError, LoginRecord, Membership, MembershipRepo,
    NewApiKey, NewPlatformAdmin, NewUser, PlatformAdmin, PlatformAdminRepo, RefreshToken,
    RefreshTokenRepo, Result, User, UserFilter, UserPatch, UserRepo,
};
use trellis_kernel::{
    ApiKeyId, Email, MembershipId, Page, PageRequest, PasswordHash, PlatformCtx, SessionFamilyId,
    TenantCtx, Timestamp, UserId,
};

fn live_users<'a>(
    rows: impl Iterator<Item = (&'a (trellis_kernel::TenantId, UserId), &'a UserRow)>,
    ctx: &TenantCtx,
) -> impl Iterator<Item = &'a UserRow> {
    let tid = ctx.tenant_id();
    rows.filter(move |((t, _), r)| *t == tid && r.deleted_at.is_none())
        .map(|(_, r)| r)
}

#[async_trait]
impl UserRepo for MemoryStore {
    async fn insert(&self, ctx: &TenantCtx, new: NewUser) -> Result<User> {
        let mut db = self.write();
        for r in live_users(db.users.iter(), ctx) {
            if r.user.email == new.email {
                return Err(IdentityError::Conflict(
                    "a user with this email already exists".into(),
                ));
            }
            if new.username.is_some() && r.user.username == new.username {
                return Err(IdentityError::Conflict(
                    "a user with this username already exists".into(),
                ));
            }
            if new.oauth.is_some() && r.user.oauth == new.oauth {
                return Err(IdentityError::Conflict(
                    "this OAuth identity is already linked".into(),
                ));
            }
        }
        let at = now();
        let user = User {
            id: new.id,
            tenant_id: ctx.tenant_id(),
            email: new.email,
            email_verified: new.email_verified,
            name: new.name,
            username: new.username,
            avatar_url: new.avatar_url,
            role: new.role,
            tier: new.tier,
            oauth: new.oauth,
            preferences: new.preferences,
            active: true,
            last_login_at: None,
            created_at: at,
            updated_at: at,
        };
        db.users.insert(
            (ctx.tenant_id(), user.id),
            UserRow {
                user: user.clone(),
                password_hash: new.password_hash,
                deleted_at: None,
            },
        );
        Ok(user)
    }

    async fn get(&self, ctx: &TenantCtx, id: UserId) -> Result<User> {
        self.read()
            .users
            .get(&(ctx.tenant_id(), id))
            .filter(|r| r.deleted_at.is_none())
            .map(|r| r.user.clone())
            .ok_or(IdentityError::NotFound("user"))
    }

    async fn find_for_login(&self, ctx: &TenantCtx, email: &Email) -> Result<Option<LoginRecord>> {
        let db = self.read();
        Ok(live_users(db.users.iter(), ctx)
            .find(|r| &r.user.email == email)
            .map(|r| LoginRecord {
                user: r.user.clone(),
                password_hash: r.password_hash.clone(),
            }))
    }

    async fn list(
        &self,
        ctx: &TenantCtx,
        filter: &UserFilter,
        page: PageRequest,
    ) -> Result<Page<User>> {
        let db = self.read();
        let items = live_users(db.users.iter(), ctx)
            .filter(|r| filter.role.is_none_or(|role| r.user.role == role))
            .filter(|r| filter.active.is_none_or(|a| r.user.active == a))
            .map(|r| r.user.clone());
        Ok(page_of(items, page, |u| u.id.as_uuid()))
    }

    async fn update(&self, ctx: &TenantCtx, id: UserId, patch: UserPatch) -> Result<User> {
        let mut db = self.write();
        if let Some(Some(username)) = &patch.username {
            let taken = live_users(db.users.iter(), ctx)
                .any(|r| r.user.id != id && r.user.username.as_ref() == Some(username));
            if taken {
                return Err(IdentityError::Conflict(
                    "a user with this username already exists".into(),
                ));
            }
        }
        let row = db
            .users
            .get_mut(&(ctx.tenant_id(), id))
            .filter(|r| r.deleted_at.is_none())
            .ok_or(IdentityError::NotFound("user"))?;
        let u = &mut row.user;
        if let Some(v) = patch.name {
            u.name = v;
        }
        if let Some(v) = patch.username {
            u.username = v;
        }
        if let Some(v) = patch.avatar_url {
            u.avatar_url = v;
        }
        if let Some(v) = patch.role {
            u.role = v;
        }
        if let Some(v) = patch.tier {
            u.tier = v;
        }
        if let Some(v) = patch.active {
            u.active = v;
        }
        if let Some(v) = patch.preferences {
            u.preferences = v;
        }
        if let Some(v) = patch.email_verified {
            u.email_verified = v;
        }
        u.updated_at = now();
        Ok(u.clone())
    }

    async fn set_password(&self, ctx: &TenantCtx, id: UserId, hash: PasswordHash) -> Result<()> {
        let mut db = self.write();
        let row = db
            .users
            .get_mut(&(ctx.tenant_id(), id))
            .filter(|r| r.deleted_at.is_none())
            .ok_or(IdentityError::NotFound("user"))?;
        row.password_hash = Some(hash);
        row.user.updated_at = now();
        Ok(())
    }

    async fn soft_delete(&self, ctx: &TenantCtx, id: UserId, at: Timestamp) -> Result<()> {
        let mut db = self.write();
        let row = db
            .users
            .get_mut(&(ctx.tenant_id(), id))
            .filter(|r| r.deleted_at.is_none())
            .ok_or(IdentityError::NotFound("user"))?;
        row.deleted_at = Some(at);
        Ok(())
    }

    async fn record_login(&self, ctx: &TenantCtx, id: UserId, at: Timestamp) -> Result<()> {
        if let Some(row) = self.write().users.get_mut(&(ctx.tenant_id(), id)) {
            row.user.last_login_at = Some(at);
        }
        Ok(())
    }

    async fn count(&self, ctx: &TenantCtx) -> Result<u64> {
        let db = self.read();
        Ok(live_users(db.users.iter(), ctx).count() as u64)
    }
}

#[async_trait]
impl MembershipRepo for MemoryStore {
    async fn insert(&self, ctx: &TenantCtx, membership: Membership) -> Result<Membership> {
        let mut db = self.write();
        let tid = ctx.tenant_id();
        if db
            .memberships
            .iter()
            .any(|((t, _), m)| *t == tid && m.email == membership.email)
        {
            return Err(IdentityError::Conflict(
                "this email is already a guest here".into(),
            ));
        }
        let m = Membership {
            tenant_id: tid,
            ..membership
        };
        db.memberships.insert((tid, m.id), m.clone());
        Ok(m)
    }

    async fn find_by_email(&self, ctx: &TenantCtx, email: &Email) -> Result<Option<Membership>> {
        let tid = ctx.tenant_id();
        Ok(self
            .read()
            .memberships
            .iter()
            .find(|((t, _), m)| *t == tid && &m.email == email)
            .map(|(_, m)| m.clone()))
    }

    async fn get(&self, ctx: &TenantCtx, id: MembershipId) -> Result<Membership> {
        self.read()
            .memberships
            .get(&(ctx.tenant_id(), id))
            .cloned()
            .ok_or(IdentityError::NotFound("guest"))
    }

    async fn list(&self, ctx: &TenantCtx, page: PageRequest) -> Result<Page<Membership>> {
        let db = self.read();
        let tid = ctx.tenant_id();
        let items = db
            .memberships
            .iter()
            .filter(|((t, _), _)| *t == tid)
            .map(|(_, m)| m.clone());
        Ok(page_of(items, page, |m| m.id.as_uuid()))
    }

    async fn delete(&self, ctx: &TenantCtx, id: MembershipId) -> Result<()> {
        let mut db = self.write();
        db.memberships
            .remove(&(ctx.tenant_id(), id))
            .ok_or(IdentityError::NotFound("guest"))?;
        let tid = ctx.tenant_id();
        db.refresh
            .retain(|(t, _), r| *t != tid || r.membership_id != Some(id));
        Ok(())
    }
}

#[async_trait]
impl ApiKeyRepo for MemoryStore {
    async fn insert(&self, ctx: &TenantCtx, new: NewApiKey) -> Result<ApiKey> {
        let mut db = self.write();
        let tid = ctx.tenant_id();
        if db
            .api_keys
            .iter()
            .any(|((t, _), k)| *t == tid && k.key.prefix == new.prefix)
        {
            return Err(IdentityError::Conflict(
                "an API key with this prefix already exists".into(),
            ));
        }
        if !db.users.contains_key(&(tid, new.created_by)) {
            return Err(IdentityError::NotFound("user"));
        }
        let key = ApiKey {
            id: new.id,
            name: new.name,
            prefix: new.prefix,
            scopes: new.scopes,
            created_by: new.created_by,
            expires_at: new.expires_at,
            last_used_at: None,
            revoked_at: None,
            created_at: now(),
        };
        db.api_keys.insert(
            (tid, key.id),
            ApiKeyRecord {
                key: key.clone(),
                secret_hash: new.secret_hash,
            },
        );
        Ok(key)
    }

    async fn list(&self, ctx: &TenantCtx, page: PageRequest) -> Result<Page<ApiKey>> {
        let db = self.read();
        let tid = ctx.tenant_id();
        let items = db
            .api_keys
            .iter()
            .filter(|((t, _), _)| *t == tid)
            .map(|(_, r)| r.key.clone());
        Ok(page_of(items, page, |k| k.id.as_uuid()))
    }

    async fn find_by_prefix(&self, ctx: &TenantCtx, prefix: &str) -> Result<Option<ApiKeyRecord>> {
        let tid = ctx.tenant_id();
        Ok(self
            .read()
            .api_keys
            .iter()
            .find(|((t, _), r)| *t == tid && r.key.prefix == prefix)
            .map(|(_, r)| r.clone()))
    }

    async fn revoke(&self, ctx: &TenantCtx, id: ApiKeyId, at: Timestamp) -> Result<ApiKey> {
        let mut db = self.write();
        let r = db
            .api_keys
            .get_mut(&(ctx.tenant_id(), id))
            .ok_or(IdentityError::NotFound("API key"))?;
        r.key.revoked_at = r.key.revoked_at.or(Some(at));
        Ok(r.key.clone())
    }

    async fn revoke_for_user(&self, ctx: &TenantCtx, user: UserId, at: Timestamp) -> Result<()> {
        let tid = ctx.tenant_id();
        for ((t, _), r) in &mut self.write().api_keys {
            if *t == tid && r.key.created_by == user && r.key.revoked_at.is_none() {
                r.key.revoked_at = Some(at);
            }
        }
        Ok(())
    }

    async fn touch(&self, ctx: &TenantCtx, id: ApiKeyId, at: Timestamp) -> Result<()> {
        if let Some(r) = self.write().api_keys.get_mut(&(ctx.tenant_id(), id)) {
            r.key.last_used_at = Some(at);
        }
        Ok(())
    }
}

#[async_trait]
impl RefreshTokenRepo for MemoryStore {
    async fn insert(&self, ctx: &TenantCtx, token: RefreshToken) -> Result<()> {
        let mut db = self.write();
        let key = (ctx.tenant_id(), token.token_hash.clone());
        if db.refresh.contains_key(&key) {
            return Err(IdentityError::Conflict("duplicate refresh token".into()));
        }
        db.refresh.insert(key, token);
        Ok(())
    }

    async fn find_by_hash(
        &self,
        ctx: &TenantCtx,
        token_hash: &str,
    ) -> Result<Option<RefreshToken>> {
        Ok(self
            .read()
            .refresh
            .get(&(ctx.tenant_id(), token_hash.to_owned()))
            .cloned())
    }

    async fn mark_used(&self, ctx: &TenantCtx, token_hash: &str, at: Timestamp) -> Result<bool> {
        let mut db = self.write();
        match db
            .refresh
            .get_mut(&(ctx.tenant_id(), token_hash.to_owned()))
        {
            Some(t) if t.used_at.is_none() => {
                t.used_at = Some(at);
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    async fn revoke_family(
        &self,
        ctx: &TenantCtx,
        family: SessionFamilyId,
        at: Timestamp,
    ) -> Result<()> {
        let tid = ctx.tenant_id();
        for ((t, _), r) in &mut self.write().refresh {
            if *t == tid && r.family_id == family && r.revoked_at.is_none() {
                r.revoked_at = Some(at);
            }
        }
        Ok(())
    }

    async fn revoke_for_user(&self, ctx: &TenantCtx, user: UserId, at: Timestamp) -> Result<()> {
        let tid = ctx.tenant_id();
        for ((t, _), r) in &mut self.write().refresh {
            if *t == tid && r.user_id == user && r.revoked_at.is_none() {
                r.revoked_at = Some(at);
            }
        }
        Ok(())
    }
}

#[async_trait]
impl PlatformAdminRepo for MemoryStore {
    async fn insert(&self, _ctx: &PlatformCtx, new: NewPlatformAdmin) -> Result<PlatformAdmin> {
        let mut db = self.write();
        if db.admins.values().any(|(a, _)| a.email == new.email) {
            return Err(IdentityError::Conflict(
                "a platform admin with this email already exists".into(),
            ));
        }
        let admin = PlatformAdmin {
            id: new.id,
            email: new.email,
            name: new.name,
            active: true,
            created_at: now(),
        };
        db.admins
            .insert(admin.id, (admin.clone(), new.password_hash));
        Ok(admin)
    }

    async fn find_for_login(
        &self,
        _ctx: &PlatformCtx,
        email: &Email,
    ) -> Result<Option<(PlatformAdmin, PasswordHash)>> {
        Ok(self
            .read()
            .admins
            .values()
            .find(|(a, _)| &a.email == email)
            .cloned())
    }
}
