//! `ToolRepo` on Postgres. A tool that an agent still lists cannot be deleted: the
//! `agent_tools` foreign key refuses, and that becomes a `Conflict`, even when the
//! delete races an agent update that adds the tool.

use super::content_common::{db, violates};
use super::to_json;
use crate::content_mapper;
use crate::entity::tool_config::{ActiveModel, Column, Entity};
use crate::store::{PgStore, finish_page, keyset};
use async_trait::async_trait;
use sea_orm::sea_query::{Expr, SimpleExpr};
use sea_orm::{ActiveModelTrait as _, ColumnTrait as _, EntityTrait as _, QueryFilter as _, Set};
use serde_json::Value;
use trellis_content::{ContentError, NewTool, Result, ToolConfig, ToolId, ToolPatch, ToolRepo};
use trellis_kernel::{Page, PageRequest, TenantCtx};

#[async_trait]
impl ToolRepo for PgStore {
    async fn insert(&self, ctx: &TenantCtx, new: NewTool) -> Result<ToolConfig> {
        let tenant = ctx.tenant_id();
        self.in_tenant(ctx, move |txn| {
            Box::pin(async move {
                let row = ActiveModel {
                    tenant_id: Set(tenant.as_uuid()),
                    id: Set(new.id.as_uuid()),
                    kind: Set(new.kind.as_str().to_owned()),
                    name: Set(new.name),
                    description: Set(new.description),
                    config: Set(new.config),
                    input_schema: Set(Value::from(new.input_schema)),
                    allowed_roles: Set(to_json(&new.allowed_roles, "allowed roles")?),
                    enabled: Set(new.enabled),
                    ..Default::default()
                }
                .insert(txn)
                .await
                .map_err(db("insert tool"))?;
                Ok(content_mapper::tool(row)?)
            })
        })
        .await
    }

    async fn get(&self, ctx: &TenantCtx, id: ToolId) -> Result<ToolConfig> {
        let tenant = ctx.tenant_id();
        self.in_tenant_read(ctx, move |txn| {
            Box::pin(async move {
                let row = Entity::find_by_id((tenant.as_uuid(), id.as_uuid()))
                    .one(txn)
                    .await
                    .map_err(db("load tool"))?
                    .ok_or(ContentError::NotFound("tool"))?;
                Ok(content_mapper::tool(row)?)
            })
        })
        .await
    }

    async fn list(&self, ctx: &TenantCtx, page: PageRequest) -> Result<Page<ToolConfig>> {
        let tenant = ctx.tenant_id();
        self.in_tenant_read(ctx, move |txn| {
            Box::pin(async move {
                let select = Entity::find().filter(Column::TenantId.eq(tenant.as_uuid()));
                let rows = keyset(select, Column::Id, page)
                    .all(txn)
                    .await
                    .map_err(db("list tools"))?;
                Ok(finish_page(page, rows, |r| r.id, content_mapper::tool)?)
            })
        })
        .await
    }

    async fn update(&self, ctx: &TenantCtx, id: ToolId, patch: ToolPatch) -> Result<ToolConfig> {
        let tenant = ctx.tenant_id();
        self.in_tenant(ctx, move |txn| {
            Box::pin(async move {
                let mut values: Vec<(Column, SimpleExpr)> = Vec::new();
                if let Some(name) = patch.name {
                    values.push((Column::Name, Expr::value(name)));
                }
                if let Some(description) = patch.description {
                    values.push((Column::Description, Expr::value(description)));
                }
                if let Some(config) = patch.config {
                    values.push((Column::Config, Expr::value(config)));
                }
                if let Some(schema) = patch.input_schema {
                    values.push((Column::InputSchema, Expr::value(Value::from(schema))));
                }
                if let Some(roles) = patch.allowed_roles {
                    let roles = to_json(&roles, "allowed roles")?;
                    values.push((Column::AllowedRoles, Expr::value(roles)));
                }
                if let Some(enabled) = patch.enabled {
                    values.push((Column::Enabled, Expr::value(enabled)));
                }
                let mut update =
                    Entity::update_many().col_expr(Column::UpdatedAt, Expr::current_timestamp());
                for (col, value) in values {
                    update = update.col_expr(col, value);
                }
                let row = update
                    .filter(Column::TenantId.eq(tenant.as_uuid()))
                    .filter(Column::Id.eq(id.as_uuid()))
                    .exec_with_returning(txn)
                    .await
                    .map_err(db("update tool"))?
                    .into_iter()
                    .next()
                    .ok_or(ContentError::NotFound("tool"))?;
                Ok(content_mapper::tool(row)?)
            })
        })
        .await
    }

    async fn delete(&self, ctx: &TenantCtx, id: ToolId) -> Result<()> {
        let tenant = ctx.tenant_id();
        self.in_tenant(ctx, move |txn| {
            Box::pin(async move {
                let done = Entity::delete_many()
                    .filter(Column::TenantId.eq(tenant.as_uuid()))
                    .filter(Column::Id.eq(id.as_uuid()))
                    .exec(txn)
                    .await
                    .map_err(|e| {
                        if violates(&e, "agent_tools_tool_fkey") {
                            ContentError::Conflict("an agent still uses this tool".into())
                        } else {
                            db("delete tool")(e)
                        }
                    })?;
                if done.rows_affected == 0 {
                    return Err(ContentError::NotFound("tool"));
                }
                Ok(())
            })
        })
        .await
    }
}
