//! Identifiers of what the index stores: the knowledge collection a vector belongs to and
//! the chunk it embeds. Both are UUIDv7 newtypes from the kernel's `define_id!`, so one
//! can never be passed where the other is expected.

trellis_kernel::define_id!(
    /// A knowledge collection of a tenant: the unit a search can be restricted to.
    CollectionId
);

trellis_kernel::define_id!(
    /// One chunk of a document, the thing an embedding stands for and a hit points at.
    ChunkId
);
