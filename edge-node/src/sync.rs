//! Lock helpers shared by every layer of the edge.

pub(crate) use onda_shared::sync::lock;
