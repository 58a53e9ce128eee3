//! What xtask's two binaries share: `xtask` (the tasks, src/main.rs) writes
//! the guest's plan and reads its console; `vm-init` (src/bin/vm-init.rs, the
//! guest's PID 1 in `cargo xtask vm`) reads the plan and prints the markers.
pub mod guest;
