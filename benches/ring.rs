// Ketama ring and hash micro-benchmarks (being written).
fn main() {}
