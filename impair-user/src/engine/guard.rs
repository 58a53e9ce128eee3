//! Undo-on-failure: each step of an attach that changes the system (the fq
//! root, the clsact qdisc, each link) is held with the step that undoes it,
//! so an attach that fails half-way (an error, `?`, or a panic) leaves the
//! interface exactly as it found it. Locals drop in reverse order of
//! creation, so the steps are undone last-first. When the attach succeeds
//! the engine [keeps](Undo::keep) each value and becomes responsible for it.
use std::ops::{Deref, DerefMut};

/// A value together with what undoes it, run on drop unless [kept](Undo::keep).
pub(crate) struct Undo<T, F: FnOnce(T)> {
    inner: Option<(T, F)>,
}

impl<T, F: FnOnce(T)> Undo<T, F> {
    /// Holds `value`; `undo(value)` runs when this is dropped un-kept.
    pub(crate) fn new(value: T, undo: F) -> Self {
        Self {
            inner: Some((value, undo)),
        }
    }

    /// The step succeeded for good: returns the value, and nothing is undone.
    pub(crate) fn keep(mut self) -> T {
        match self.inner.take() {
            Some((value, _)) => value,
            // `inner` is only taken here and in `drop`, both by value.
            None => unreachable!("an Undo is kept once"),
        }
    }
}

impl<T, F: FnOnce(T)> Deref for Undo<T, F> {
    type Target = T;

    fn deref(&self) -> &T {
        match &self.inner {
            Some((value, _)) => value,
            None => unreachable!("an Undo is kept once"),
        }
    }
}

impl<T, F: FnOnce(T)> DerefMut for Undo<T, F> {
    fn deref_mut(&mut self) -> &mut T {
        match &mut self.inner {
            Some((value, _)) => value,
            None => unreachable!("an Undo is kept once"),
        }
    }
}

impl<T, F: FnOnce(T)> Drop for Undo<T, F> {
    fn drop(&mut self) {
        if let Some((value, undo)) = self.inner.take() {
            undo(value);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;

    use super::*;

    #[test]
    fn dropped_steps_are_undone_last_first_and_kept_ones_never() {
        let log = RefCell::new(Vec::new());
        {
            let _a = Undo::new(1, |v| log.borrow_mut().push(v));
            let mut b = Undo::new(2, |v| log.borrow_mut().push(v));
            *b += 10;
            let c = Undo::new(3, |v| log.borrow_mut().push(v));
            assert_eq!(c.keep(), 3);
        }
        assert_eq!(*log.borrow(), vec![12, 1]);
    }
}
