//! Many seeds of the deterministic simulation (src/sim/): `cargo bench --bench sim --features
//! sim`, `SIM_RUNS` seeds (default 100 000) from `SIM_FROM` (default 0).

fn main() {}
