//! Per-auction scratch that lives on the stack up to a fixed size and spills into one heap
//! allocation beyond it, so a typical auction allocates nothing but its `Outcome`.

/// A push-only list of `Copy` items: the first `N` inline, all of them on the heap once more
/// arrive.
pub(crate) struct InlineVec<T: Copy, const N: usize> {
    inline: [T; N],
    len: usize,
    /// Empty until the inline array overflows; from then on it holds every item.
    heap: Vec<T>,
}

impl<T: Copy, const N: usize> InlineVec<T, N> {
    /// `fill` only occupies the unused inline cells; it is never visible through `as_slice`.
    #[inline]
    pub(crate) fn new(fill: T) -> Self {
        Self {
            inline: [fill; N],
            len: 0,
            heap: Vec::new(),
        }
    }

    #[inline]
    pub(crate) fn push(&mut self, item: T) {
        if !self.heap.is_empty() {
            self.heap.push(item);
            return;
        }
        match self.inline.get_mut(self.len) {
            Some(cell) => {
                *cell = item;
                self.len += 1;
            }
            None => {
                self.heap.reserve(2 * N + 1);
                self.heap.extend_from_slice(&self.inline);
                self.heap.push(item);
            }
        }
    }

    #[inline]
    pub(crate) fn as_slice(&self) -> &[T] {
        if self.heap.is_empty() {
            // `len` never exceeds `N` while the items are inline, so this is always `Some`.
            self.inline.get(..self.len).unwrap_or_default()
        } else {
            &self.heap
        }
    }

    #[inline]
    pub(crate) fn as_mut_slice(&mut self) -> &mut [T] {
        if self.heap.is_empty() {
            self.inline.get_mut(..self.len).unwrap_or_default()
        } else {
            &mut self.heap
        }
    }
}

#[cfg(test)]
mod tests {
    use super::InlineVec;

    #[test]
    fn keeps_every_item_in_order_across_the_spill() {
        let mut list = InlineVec::<u32, 4>::new(0);
        assert!(list.as_slice().is_empty());
        for i in 1..=9 {
            list.push(i);
            let expected: Vec<u32> = (1..=i).collect();
            assert_eq!(list.as_slice(), expected.as_slice());
        }
        list.as_mut_slice()[0] = 42;
        assert_eq!(list.as_slice()[..2], [42, 2]);
    }
}
