//! How many keys a multi-key retrieval releases at a time: the configured first window
//! (`multiget_window`), then as many as keep one window's reply near the client's soft limit,
//! from the bytes per key seen so far (fewer for big values, more for small). So a huge `get`
//! never makes the proxy hold much more than a soft limit of replies for one client. The first
//! window itself is sized from what the worker's recent multi-gets brought per key.

/// Most keys in one window once windows are sized from their bytes.
const MAX_WINDOW: usize = 4096;
/// What a worker assumes a value costs before it has seen any: cautious, so that the first
/// multi-gets of big values do not hold much; small values prove themselves within a window.
const FIRST_GUESS: usize = 16 << 10;
/// A first window may hold about this much (or the client's soft limit, if larger): a client
/// with a tiny soft limit still gets its few small keys in one round trip.
const FIRST_WINDOW_BYTES: usize = 1 << 20;
/// Keys per server a first window always may have (up to `multiget_window`).
const FIRST_WINDOW_MIN: usize = 8;

/// A worker's running estimate of the reply bytes per key of multi-gets (an exponentially
/// weighted average of what their windows brought), from which first windows are sized.
#[derive(Debug)]
pub struct KeyBytes {
    average: usize,
}

impl Default for KeyBytes {
    fn default() -> Self {
        KeyBytes {
            average: FIRST_GUESS,
        }
    }
}

impl KeyBytes {
    /// A window brought `per_key` bytes per key.
    pub fn observe(&mut self, per_key: usize) {
        self.average = self.average - self.average / 8 + per_key.max(1) / 8;
    }

    /// Keys per server in a first window over `servers` servers: at most `configured`, and
    /// no more than keep the window's replies about the client's soft limit `soft_bytes` (or
    /// 1 MiB, if larger), but never fewer than 8.
    pub fn first_window(&self, configured: usize, soft_bytes: usize, servers: usize) -> usize {
        let configured = configured.max(1);
        let budget = soft_bytes.max(FIRST_WINDOW_BYTES);
        let per_server = budget / (self.average.max(1) * servers.max(1));
        per_server.clamp(FIRST_WINDOW_MIN.min(configured), configured)
    }
}

/// The window size of one multi-key retrieval.
#[derive(Debug)]
pub struct WindowSizer {
    keys: usize,
    soft_bytes: usize,
    /// Reply bytes of the current window so far.
    bytes: usize,
}

impl WindowSizer {
    /// `first` keys in the first window; then windows sized for `soft_bytes` of replies.
    pub fn new(first: usize, soft_bytes: usize) -> WindowSizer {
        WindowSizer {
            keys: first.max(1),
            soft_bytes,
            bytes: 0,
        }
    }

    /// Keys in the next window.
    pub fn keys(&self) -> usize {
        self.keys
    }

    /// `bytes` more of the current window's replies arrived.
    pub fn add(&mut self, bytes: usize) {
        self.bytes += bytes;
    }

    /// The window of `keys` keys is over: size the next one from its bytes per key, which
    /// is returned (for the worker's [`KeyBytes`]).
    pub fn resize(&mut self, keys: usize) -> usize {
        let per_key = (self.bytes / keys.max(1)).max(1);
        self.keys = (self.soft_bytes / per_key).clamp(1, MAX_WINDOW);
        self.bytes = 0;
        per_key
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_windows_follow_what_windows_brought() {
        let mut k = KeyBytes::default();
        assert_eq!(k.first_window(64, 1 << 20, 4), 16, "cautious at first");
        for _ in 0..64 {
            k.observe(100);
        }
        assert_eq!(
            k.first_window(64, 1 << 20, 4),
            64,
            "small values: the configured window"
        );
        for _ in 0..64 {
            k.observe(1 << 20);
        }
        assert_eq!(
            k.first_window(64, 1 << 20, 4),
            8,
            "1 MiB values: the least first window"
        );
        assert_eq!(
            k.first_window(4, 1 << 20, 4),
            4,
            "never over the configured window"
        );
        let small = KeyBytes { average: 100 };
        assert_eq!(
            small.first_window(64, 300, 4),
            64,
            "tiny soft limit: still 1 MiB's worth"
        );
    }

    #[test]
    fn windows_follow_the_bytes_per_key() {
        let mut w = WindowSizer::new(64, 1 << 20);
        assert_eq!(w.keys(), 64);
        w.add(64 << 20); // 1 MiB per key
        w.resize(64);
        assert_eq!(w.keys(), 1);
        w.add(1000);
        w.resize(1);
        assert_eq!(w.keys(), (1 << 20) / 1000);
        w.resize(10); // nothing arrived: as small as a byte per key, capped
        assert_eq!(w.keys(), MAX_WINDOW);
    }
}
