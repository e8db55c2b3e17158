//! Unit tests of the lease read: each reply of warm and cold, and what follows from it.
use super::*;
