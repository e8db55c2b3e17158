//! A slab whose ids carry a generation: an id kept after its entry was removed (a reply for an
//! exchange whose client went, a timer of a finished job) finds nothing, even when the slot has
//! been reused since. Ids are typed by what they name, so an exchange id cannot name a job.

use std::fmt;
use std::marker::PhantomData;

use slab::Slab;

/// Names one entry of a [`GenSlab<T>`]: a slot index and the generation it was created with.
pub struct Id<T> {
    index: u32,
    generation: u32,
    kind: PhantomData<fn() -> T>,
}

impl<T> Id<T> {
    /// An id that names nothing in any slab yet (for unit tests of code that only carries ids).
    #[cfg(test)]
    pub fn detached() -> Id<T> {
        Id {
            index: u32::MAX,
            generation: u32::MAX,
            kind: PhantomData,
        }
    }
}

impl<T> Id<T> {
    /// The id as 64 bits (slab index high, generation low), for a layer below that carries
    /// it as an opaque token.
    pub fn to_bits(self) -> u64 {
        (u64::from(self.index) << 32) | u64::from(self.generation)
    }

    /// The id [`Self::to_bits`] gave.
    pub fn from_bits(bits: u64) -> Id<T> {
        Id {
            index: (bits >> 32) as u32,
            generation: bits as u32,
            kind: PhantomData,
        }
    }
}

impl<T> Clone for Id<T> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<T> Copy for Id<T> {}

impl<T> PartialEq for Id<T> {
    fn eq(&self, other: &Self) -> bool {
        (self.index, self.generation) == (other.index, other.generation)
    }
}

impl<T> Eq for Id<T> {}

impl<T> fmt::Debug for Id<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}.{}", self.index, self.generation)
    }
}

/// Entries of type `T` named by [`Id<T>`].
#[derive(Debug)]
pub struct GenSlab<T> {
    slab: Slab<(u32, T)>,
    next_generation: u32,
}

impl<T> Default for GenSlab<T> {
    fn default() -> Self {
        GenSlab {
            slab: Slab::new(),
            next_generation: 0,
        }
    }
}

impl<T> GenSlab<T> {
    /// Stores `value`; returns its id.
    pub fn insert(&mut self, value: T) -> Id<T> {
        let generation = self.next_generation;
        self.next_generation = self.next_generation.wrapping_add(1);
        let index = self.slab.insert((generation, value));
        Id {
            index: u32::try_from(index).unwrap_or(u32::MAX),
            generation,
            kind: PhantomData,
        }
    }

    /// The entry `id`, if it is still there.
    pub fn get_mut(&mut self, id: Id<T>) -> Option<&mut T> {
        match self.slab.get_mut(id.index as usize) {
            Some((generation, value)) if *generation == id.generation => Some(value),
            _ => None,
        }
    }

    /// Removes entry `id` (nothing if it has gone already).
    pub fn remove(&mut self, id: Id<T>) {
        if self.get_mut(id).is_some() {
            self.slab.remove(id.index as usize);
        }
    }

    /// Entries stored.
    pub fn len(&self) -> usize {
        self.slab.len()
    }

    /// True when there are none.
    pub fn is_empty(&self) -> bool {
        self.slab.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stale_id_finds_nothing_even_when_its_slot_is_reused() {
        let mut s = GenSlab::default();
        let a = s.insert("a");
        s.remove(a);
        let b = s.insert("b");
        assert_eq!(s.get_mut(a), None);
        s.remove(a);
        assert_eq!(s.get_mut(b), Some(&mut "b"));
        assert_eq!(s.len(), 1);
    }
}
