//! How many keys a multi-key retrieval releases at a time: the configured first window
//! (`multiget_window`), then as many as keep one window's reply near the client's soft limit,
//! from the bytes per key seen so far (fewer for big values, more for small). So a huge `get`
//! never makes the proxy hold much more than a soft limit of replies for one client.

/// Most keys in one window once windows are sized from their bytes.
const MAX_WINDOW: usize = 4096;

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

    /// The window of `keys` keys is over: size the next one from its bytes per key.
    pub fn resize(&mut self, keys: usize) {
        let per_key = (self.bytes / keys.max(1)).max(1);
        self.keys = (self.soft_bytes / per_key).clamp(1, MAX_WINDOW);
        self.bytes = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
