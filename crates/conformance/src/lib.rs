//! The port conformance suite. Each case is an async function over [`Ports`]; the
//! [`conformance_tests!`] macro expands them into one `#[tokio::test]` each inside an
//! adapter's test binary, so memory and Postgres are held to the very same behaviour.
//! Cases create their own tenants with unique slugs, so they can share a database.

#![allow(clippy::unwrap_used, clippy::expect_used)] // this crate is test code

pub mod content;
pub mod fixtures;
pub mod identity;
pub mod rag;
pub mod tenancy;

use std::sync::Arc;
use trellis_identity::{ApiKeyRepo, MembershipRepo, PlatformAdminRepo, RefreshTokenRepo, UserRepo};
use trellis_tenancy::TenantRepo;

/// The ports under test, usually all backed by one adapter value.
#[derive(Clone)]
pub struct Ports {
    pub tenants: Arc<dyn TenantRepo>,
    pub users: Arc<dyn UserRepo>,
    pub memberships: Arc<dyn MembershipRepo>,
    pub keys: Arc<dyn ApiKeyRepo>,
    pub refresh: Arc<dyn RefreshTokenRepo>,
    pub admins: Arc<dyn PlatformAdminRepo>,
}

impl Ports {
    /// All ports from one adapter value that implements them all.
    pub fn from_one<A>(adapter: A) -> Self
    where
        A: TenantRepo
            + UserRepo
            + MembershipRepo
            + ApiKeyRepo
            + RefreshTokenRepo
            + PlatformAdminRepo
            + Clone,
    {
        Self {
            tenants: Arc::new(adapter.clone()),
            users: Arc::new(adapter.clone()),
            memberships: Arc::new(adapter.clone()),
            keys: Arc::new(adapter.clone()),
            refresh: Arc::new(adapter.clone()),
            admins: Arc::new(adapter),
        }
    }
}

/// Expands into one `#[tokio::test]` per conformance case. `$make` is an async
/// expression evaluating to [`Ports`].
#[macro_export]
macro_rules! conformance_tests {
    ($make:expr) => {
        $crate::conformance_tests!(@cases $make;
            tenancy::a_created_tenant_reads_back_with_its_first_admin,
            tenancy::a_taken_slug_is_a_conflict_even_after_deletion,
            tenancy::listing_tenants_pages_without_repeats,
            tenancy::a_suspended_tenant_still_resolves_but_says_so,
            tenancy::a_deleted_tenant_is_gone_and_its_slug_no_longer_resolves,
            tenancy::settings_updates_persist_and_touch_only_the_own_tenant,
            tenancy::a_custom_domain_can_belong_to_one_tenant_only,
            tenancy::widget_and_llm_configs_round_trip_per_tenant,
            identity::a_user_reads_back_as_inserted,
            identity::every_field_of_a_user_reads_back_through_get_and_list,
            identity::an_email_is_unique_within_a_tenant_but_not_across,
            identity::a_user_of_another_tenant_is_not_found,
            identity::updating_a_user_from_another_tenant_changes_nothing,
            identity::users_list_filters_by_role_and_active_and_pages,
            identity::a_deleted_user_disappears_and_frees_the_email,
            identity::login_lookup_returns_the_password_hash,
            identity::guest_memberships_are_scoped_to_the_host_tenant,
            identity::api_keys_are_found_by_prefix_only_in_their_tenant,
            identity::every_field_of_an_api_key_reads_back_through_find_by_prefix,
            identity::revoking_an_api_key_keeps_the_first_revocation_time,
            identity::a_refresh_token_can_be_marked_used_only_once,
            identity::revoking_a_family_revokes_all_its_tokens_and_nothing_else,
            identity::platform_admin_emails_are_unique,
        );
    };
    (@cases $make:expr; $($module:ident :: $case:ident),+ $(,)?) => {
        $crate::conformance_tests!(@each $make; $($module :: $case),+);
    };
    (@each $make:expr; $($module:ident :: $case:ident),+ $(,)?) => {
        $(
            #[tokio::test]
            async fn $case() {
                let ports: $crate::Ports = $make.await;
                $crate::$module::$case(&ports).await;
            }
        )+
    };
}

/// Expands into one `#[tokio::test]` per RAG conformance case. `$make` evaluates to
/// [`Ports`] (for tenants) and `$rag` to [`rag::RagPorts`].
#[macro_export]
macro_rules! rag_conformance_tests {
    ($make:expr, $rag:expr) => {
        $crate::rag_conformance_tests!(@each $make, $rag;
            a_collection_reads_back_and_names_are_unique_per_tenant,
            documents_are_found_by_checksum_and_status_changes_stick,
            every_field_of_a_document_reads_back_through_get_and_list_pages,
            cited_chunks_carry_their_documents_name_and_only_the_tenants,
            replacing_a_documents_chunks_never_duplicates_them,
            vector_search_returns_the_exact_top_k_of_the_tenant_only,
            vector_search_honours_collection_source_and_metadata_filters,
            text_search_ranks_matching_chunks_and_ignores_other_tenants,
            text_search_reads_web_search_syntax_and_questions_alike_on_every_adapter,
            deleting_a_document_or_collection_removes_its_chunks,
            a_claimed_job_is_not_handed_out_again_until_its_lease_expires,
            a_renewed_lease_keeps_the_job_and_a_stale_claim_changes_nothing,
            a_model_change_fills_a_shadow_index_and_switches_in_one_step,
            a_cancelled_or_failed_model_change_leaves_search_on_the_old_model,
        );
    };
    (@each $make:expr, $rag:expr; $($case:ident),+ $(,)?) => {
        $(
            #[tokio::test]
            async fn $case() {
                let ports: $crate::Ports = $make.await;
                let rag: $crate::rag::RagPorts = $rag.await;
                $crate::rag::$case(&ports, &rag).await;
            }
        )+
    };
}

/// Expands into one `#[tokio::test]` per content conformance case. `$make` evaluates
/// to [`Ports`] (for tenants and users) and `$content` to [`content::ContentPorts`].
#[macro_export]
macro_rules! content_conformance_tests {
    ($make:expr, $content:expr) => {
        $crate::content_conformance_tests!(@each $make, $content;
            agents_read_back_and_names_are_unique_per_tenant,
            updating_an_agent_bumps_its_version_and_keeps_every_version,
            agents_list_by_published_role_and_tool,
            tools_are_tenant_scoped_and_names_unique,
            conversations_are_tenant_scoped_and_filter_by_owner_archived_agent_and_title,
            every_field_of_a_conversation_reads_back_through_get_and_list_pages,
            a_thread_is_the_conversation_with_its_messages_and_agent_in_its_tenant_only,
            a_conversation_opens_with_all_its_messages_in_its_tenant_only,
            messages_form_a_tree_that_reads_back_whole,
            a_message_cannot_hang_under_another_conversations_message,
            inserting_many_messages_is_all_or_nothing,
            a_prepared_message_is_stored_only_once_committed,
            deleting_a_conversation_deletes_its_messages,
            message_search_finds_only_the_owners_messages_in_the_tenant,
            memories_are_unique_per_user_by_key_and_searchable,
            files_are_tenant_scoped,
            usage_with_the_same_idempotency_key_counts_once,
            only_the_platform_sets_a_tenants_budgets_and_the_tenant_reads_them,
        );
    };
    (@each $make:expr, $content:expr; $($case:ident),+ $(,)?) => {
        $(
            #[tokio::test]
            async fn $case() {
                let ports: $crate::Ports = $make.await;
                let content: $crate::content::ContentPorts = $content.await;
                $crate::content::$case(&ports, &content).await;
            }
        )+
    };
}
