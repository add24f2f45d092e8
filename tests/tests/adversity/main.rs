//! Adversity: what happens when the world misbehaves (issue 13, DESIGN.md §2 invariants
//! 7–8). Panics inside a job, lying and hostile servers, overlapping runs and lost leases.
//! One test binary for all of them, so the suite links the stack once for this theme.

mod fencing;
mod hostile;
mod lying;
mod shared_archive;
mod soak;
mod verify;
mod worker;
