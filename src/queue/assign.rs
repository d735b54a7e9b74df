//! Which worker should own which ordered partition.
//!
//! Every worker computes the same answer from the same sorted list of live
//! workers, so no coordinator is needed: each partition ranks the workers by a
//! rendezvous hash and goes to the best-ranked one that still has room, with
//! room: every worker takes floor(P / W) and P mod W of them one more. The
//! split is as even as it can be, and a worker
//! joining or leaving moves few partitions.

use super::fnv1a;

/// Partitions that `me` should own, given the live workers.
pub fn desired(partitions: u16, workers: &[String], me: &str) -> Vec<u16> {
    if workers.is_empty() {
        return Vec::new();
    }
    // Everyone gets `base`; `extra` workers get one more.
    let base = partitions as usize / workers.len();
    let mut extra = partitions as usize % workers.len();
    let mut load = vec![0usize; workers.len()];
    let mut mine = Vec::new();
    for p in 0..partitions {
        let mut ranked: Vec<(u64, usize)> = workers
            .iter()
            .enumerate()
            .map(|(i, w)| (fnv1a(format!("{w}/{p}").as_bytes()), i))
            .collect();
        ranked.sort_unstable_by(|a, b| b.cmp(a));
        let room = |i: usize| load[i] < base || (load[i] == base && extra > 0);
        if let Some(&(_, owner)) = ranked.iter().find(|(_, i)| room(*i)) {
            if load[owner] == base {
                extra -= 1;
            }
            load[owner] += 1;
            if workers[owner] == me {
                mine.push(p);
            }
        }
    }
    mine
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("worker-{i}")).collect()
    }

    #[test]
    fn every_partition_has_exactly_one_owner_and_the_split_is_even() {
        for w in 1..=7 {
            let workers = names(w);
            let mut owners = vec![0; 16];
            let mut sizes = Vec::new();
            for me in &workers {
                let mine = desired(16, &workers, me);
                sizes.push(mine.len());
                for p in mine {
                    owners[p as usize] += 1;
                }
            }
            assert!(owners.iter().all(|&o| o == 1), "w={w} owners={owners:?}");
            let (min, max) = (sizes.iter().min().unwrap(), sizes.iter().max().unwrap());
            assert!(max - min <= 1, "w={w} sizes={sizes:?}");
        }
    }

    #[test]
    fn three_workers_share_sixteen_partitions_six_five_five() {
        let workers = names(3);
        let mut sizes: Vec<usize> = workers
            .iter()
            .map(|m| desired(16, &workers, m).len())
            .collect();
        sizes.sort();
        assert_eq!(sizes, vec![5, 5, 6]);
    }

    #[test]
    fn a_joining_worker_moves_few_partitions() {
        let before = names(3);
        let after = names(4);
        let moved: usize = before
            .iter()
            .map(|m| {
                let old = desired(16, &before, m);
                let new = desired(16, &after, m);
                old.iter().filter(|p| !new.contains(p)).count()
            })
            .sum();
        // The newcomer needs 4; a full reshuffle would move about 12.
        assert!(moved <= 8, "moved {moved}");
    }

    #[test]
    fn nobody_owns_anything_without_workers() {
        assert!(desired(16, &[], "x").is_empty());
    }
}
