//! What every event loop of the process is built from, knowing nothing of memcached or of
//! routing: the timer wheel, slabs with generation-checked ids, read and write buffers, the
//! rate-limited logger and the shutdown signal.

pub mod buffer;
pub mod cgroup;
pub mod gen_slab;
pub mod io;
pub mod log_limit;
pub mod shutdown;
pub mod timer;
