//! Work that waits on child processes, done at the same time: `check all`'s recipes, and the
//! steps of a live plan.

/// `f` of every item, each on a thread of its own, in the items' order. An item whose thread
/// cannot be started (a thread limit) is done on the calling thread; a panic is passed on.
pub fn map<T, R, F>(items: &[T], f: F) -> Vec<R>
where
    T: Sync,
    R: Send,
    F: Fn(&T) -> R + Sync,
{
    if items.len() < 2 {
        return items.iter().map(&f).collect();
    }
    let f = &f;
    std::thread::scope(|s| {
        let jobs: Vec<Result<std::thread::ScopedJoinHandle<'_, R>, &T>> = items
            .iter()
            .map(|item| {
                std::thread::Builder::new()
                    .spawn_scoped(s, move || f(item))
                    .map_err(|_| item)
            })
            .collect();
        jobs.into_iter()
            .map(|job| match job {
                Ok(thread) => thread
                    .join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic)),
                Err(item) => f(item),
            })
            .collect()
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn results_come_in_order_and_run_at_the_same_time() {
        let start = std::time::Instant::now();
        let out = super::map(&[200u64, 100, 150], |ms| {
            std::thread::sleep(std::time::Duration::from_millis(*ms));
            ms * 2
        });
        assert_eq!(out, [400, 200, 300]);
        // One after the other would take 450 ms.
        assert!(start.elapsed() < std::time::Duration::from_millis(420));
        assert_eq!(super::map(&[1], |x| x + 1), [2]);
        assert!(super::map(&[] as &[u8], |x| *x).is_empty());
    }
}
