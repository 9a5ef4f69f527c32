//! [`DelayQueue`]: packets waiting for their release time.

use std::collections::{BTreeMap, VecDeque};

/// Items held until a release time (nanoseconds on the caller's clock).
///
/// [`DelayQueue::pop_ready`] hands out ready items in release order, items with equal times in
/// the order they were pushed (netem's tfifo). [`DelayQueue::push_front`] puts an item ahead of
/// everything, ready at once, as netem does with a reordered packet (`__qdisc_enqueue_head`:
/// the last one pushed comes out first).
#[derive(Debug, Clone)]
pub struct DelayQueue<T> {
    timed: BTreeMap<(u64, u64), T>,
    front: VecDeque<(u64, T)>,
    seq: u64,
}

impl<T> Default for DelayQueue<T> {
    fn default() -> Self {
        DelayQueue {
            timed: BTreeMap::new(),
            front: VecDeque::new(),
            seq: 0,
        }
    }
}

impl<T> DelayQueue<T> {
    /// An empty queue.
    pub fn new() -> Self {
        Self::default()
    }

    /// Holds `item` until `release_ns`.
    pub fn push(&mut self, release_ns: u64, item: T) {
        self.timed.insert((release_ns, self.seq), item);
        self.seq += 1;
    }

    /// Puts `item` at the head, ahead of every other item; `now_ns` is its release time (for
    /// [`DelayQueue::next_release`] and [`DelayQueue::last_release`]).
    pub fn push_front(&mut self, now_ns: u64, item: T) {
        self.front.push_front((now_ns, item));
    }

    /// The next item due at `now_ns`: head items first, then timed items whose release time
    /// is `<= now_ns`, earliest first.
    pub fn pop_ready(&mut self, now_ns: u64) -> Option<T> {
        if let Some((_, item)) = self.front.pop_front() {
            return Some(item);
        }
        let entry = self.timed.first_entry()?;
        if entry.key().0 <= now_ns {
            Some(entry.remove())
        } else {
            None
        }
    }

    /// When the next item is due (the caller's timer); `None` when empty. Head items are due at
    /// once: their push time is returned.
    pub fn next_release(&self) -> Option<u64> {
        if let Some(&(at, _)) = self.front.front() {
            return Some(at);
        }
        self.timed.first_key_value().map(|(&(at, _), _)| at)
    }

    /// The latest release time held (netem's "last packet in queue", the reference for
    /// `rate`); `None` when empty.
    pub fn last_release(&self) -> Option<u64> {
        let timed = self.timed.last_key_value().map(|(&(at, _), _)| at);
        let front = self.front.iter().map(|&(at, _)| at).max();
        timed.max(front)
    }

    /// How many items are held.
    pub fn len(&self) -> usize {
        self.timed.len() + self.front.len()
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Removes and returns every item, in the order [`DelayQueue::pop_ready`] would give them.
    pub fn drain_all(&mut self) -> Vec<T> {
        let mut out: Vec<T> = self.front.drain(..).map(|(_, item)| item).collect();
        out.extend(std::mem::take(&mut self.timed).into_values());
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn release_order_stable_for_equal_times() {
        let mut q = DelayQueue::new();
        assert_eq!(q.next_release(), None);
        q.push(30, "c");
        q.push(10, "a1");
        q.push(20, "b");
        q.push(10, "a2");
        q.push(10, "a3");
        assert_eq!(q.len(), 5);
        assert_eq!(q.next_release(), Some(10));
        assert_eq!(q.last_release(), Some(30));
        assert_eq!(q.pop_ready(9), None);
        assert_eq!(q.pop_ready(10), Some("a1"));
        assert_eq!(q.pop_ready(10), Some("a2"));
        assert_eq!(q.pop_ready(10), Some("a3"));
        assert_eq!(q.pop_ready(10), None);
        assert_eq!(q.next_release(), Some(20));
        assert_eq!(q.pop_ready(100), Some("b"));
        assert_eq!(q.pop_ready(100), Some("c"));
        assert!(q.is_empty());
        assert_eq!(q.last_release(), None);
    }

    #[test]
    fn head_items_come_first() {
        let mut q = DelayQueue::new();
        q.push(5, 1);
        q.push(50, 2);
        q.push_front(7, 3);
        q.push_front(8, 4);
        assert_eq!(q.next_release(), Some(8));
        assert_eq!(q.last_release(), Some(50));
        assert_eq!(q.pop_ready(8), Some(4));
        assert_eq!(q.pop_ready(8), Some(3));
        assert_eq!(q.pop_ready(8), Some(1));
        assert_eq!(q.pop_ready(8), None);
        q.push(1, 5);
        assert_eq!(q.drain_all(), vec![5, 2]);
        assert!(q.is_empty());
    }

    #[test]
    fn many_items_pop_sorted() {
        let mut q = DelayQueue::new();
        let mut state = 12345u64;
        for i in 0..1000u64 {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            q.push((state >> 33) % 100, i);
        }
        let mut last = (0, 0);
        let mut n = 0;
        // Pop with increasing clock; check non-decreasing (time, push index).
        let mut times = std::collections::HashMap::new();
        let mut state = 12345u64;
        for i in 0..1000u64 {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            times.insert(i, (state >> 33) % 100);
        }
        for now in 0..100 {
            while let Some(i) = q.pop_ready(now) {
                let key = (times[&i], i);
                assert!(key >= last);
                assert!(key.0 <= now);
                last = key;
                n += 1;
            }
        }
        assert_eq!(n, 1000);
    }
}
