//! Shared helpers for the privileged test tiers.
