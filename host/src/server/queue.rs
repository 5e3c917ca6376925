//! Which Backups (and which Restores) may run now: at most N at once, and never two whose
//! namespaces overlap — a later one waits `Queued` with its position, as Velero 1.18 queues
//! concurrent backups. An all-namespaces backup overlaps every other, so it runs alone.
//!
//! The queue is the server's memory of what it is running plus the waiting operations in
//! creation order, read from the API on every decision; nothing of it needs to survive a
//! restart (a new leader starts with nothing running and resumes what was in flight first).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

/// The namespaces an operation writes or reads.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Scope {
    All,
    Namespaces(BTreeSet<String>),
}

impl Scope {
    /// `included` as a Backup or Restore names them: empty or `*` is every namespace.
    pub fn of(included: &[String]) -> Scope {
        if included.is_empty() || included.iter().any(|n| n == "*") {
            Scope::All
        } else {
            Scope::Namespaces(included.iter().cloned().collect())
        }
    }

    /// A restore's target namespaces: its included ones after the namespace mapping (both the
    /// source and the target namespace count, so that a restore into `b` of `a` and a restore
    /// of `b` do not run together).
    pub fn of_restore(included: &[String], mapping: &BTreeMap<String, String>) -> Scope {
        match Scope::of(included) {
            Scope::All => Scope::All,
            Scope::Namespaces(n) => Scope::Namespaces(n.iter().flat_map(|ns| [ns.clone()].into_iter().chain(mapping.get(ns).cloned())).collect()),
        }
    }

    pub fn overlaps(&self, other: &Scope) -> bool {
        match (self, other) {
            (Scope::All, _) | (_, Scope::All) => true,
            (Scope::Namespaces(a), Scope::Namespaces(b)) => !a.is_disjoint(b),
        }
    }
}

/// The operations one kind's controller is running.
pub struct Queue {
    max: usize,
    running: Arc<Mutex<BTreeMap<String, Scope>>>,
}

/// Held while an operation runs; its end frees the slot.
pub struct Slot {
    name: String,
    running: Arc<Mutex<BTreeMap<String, Scope>>>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.running.lock().unwrap_or_else(|e| e.into_inner()).remove(&self.name);
    }
}

impl Queue {
    pub fn new(max: u32) -> Queue {
        Queue { max: max.max(1) as usize, running: Default::default() }
    }

    /// Starts `name` now, or says its position: `ahead` are the operations waiting before it,
    /// oldest first. It starts when it overlaps nothing running and nothing waiting ahead, and
    /// the waiting ones ahead that could start take free slots first.
    pub fn try_start(&self, name: &str, scope: &Scope, ahead: &[Scope]) -> Result<Slot, u32> {
        let mut running = self.running.lock().unwrap_or_else(|e| e.into_inner());
        let position = ahead.len() as u32 + 1;
        if running.contains_key(name) {
            // Already running (a reconcile of the same operation): it keeps its slot.
            return Err(position);
        }
        let blocked = |s: &Scope, before: &[Scope]| running.values().any(|r| r.overlaps(s)) || before.iter().any(|b| b.overlaps(s));
        if blocked(scope, ahead) {
            return Err(position);
        }
        let startable_ahead = (0..ahead.len()).filter(|&i| !blocked(&ahead[i], &ahead[..i])).count();
        if running.len() + startable_ahead >= self.max {
            return Err(position);
        }
        running.insert(name.to_string(), scope.clone());
        Ok(Slot { name: name.to_string(), running: self.running.clone() })
    }

    /// How many operations are running.
    pub fn running(&self) -> usize {
        self.running.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ns(names: &[&str]) -> Scope {
        Scope::of(&names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn disjoint_operations_run_together_up_to_the_limit() {
        let q = Queue::new(2);
        let a = q.try_start("a", &ns(&["a"]), &[]).expect("a starts");
        let b = q.try_start("b", &ns(&["b"]), &[]).expect("b starts");
        assert_eq!(q.try_start("c", &ns(&["c"]), &[]).err(), Some(1), "two are running");
        drop(a);
        let _c = q.try_start("c", &ns(&["c"]), &[]).expect("a slot is free again");
        drop(b);
        assert_eq!(q.running(), 1);
    }

    #[test]
    fn an_overlapping_operation_waits_and_all_namespaces_runs_alone() {
        let q = Queue::new(4);
        let a = q.try_start("a", &ns(&["a", "shared"]), &[]).unwrap();
        assert_eq!(q.try_start("b", &ns(&["shared"]), &[]).err(), Some(1));
        assert_eq!(q.try_start("all", &ns(&["*"]), &[]).err(), Some(1));
        assert_eq!(q.try_start("all2", &ns(&[]), &[]).err(), Some(1), "no namespaces named is all of them");
        drop(a);
        let all = q.try_start("all", &ns(&["*"]), &[]).unwrap();
        assert!(q.try_start("x", &ns(&["x"]), &[]).is_err());
        drop(all);
        assert!(q.try_start("x", &ns(&["x"]), &[]).is_ok());
    }

    #[test]
    fn waiting_operations_keep_their_order() {
        let q = Queue::new(1);
        let running = q.try_start("first", &ns(&["a"]), &[]).unwrap();
        // "second" waits for a slot; "third" came later and must not take the slot before it.
        assert_eq!(q.try_start("second", &ns(&["b"]), &[]).err(), Some(1));
        drop(running);
        assert_eq!(q.try_start("third", &ns(&["c"]), &[ns(&["b"])]).err(), Some(2));
        assert!(q.try_start("second", &ns(&["b"]), &[]).is_ok());
        // An overlapping operation ahead blocks a later one even with free slots.
        let q = Queue::new(3);
        let _busy = q.try_start("busy", &ns(&["a"]), &[]).unwrap();
        assert_eq!(q.try_start("later", &ns(&["b"]), &[ns(&["a", "b"])]).err(), Some(2));
        assert!(q.try_start("later", &ns(&["c"]), &[ns(&["a", "b"])]).is_ok(), "the one ahead is blocked; a disjoint one goes");
    }

    #[test]
    fn a_restore_covers_its_source_and_target_namespaces() {
        let mapping = BTreeMap::from([("prod".to_string(), "staging".to_string())]);
        let s = Scope::of_restore(&["prod".to_string()], &mapping);
        assert!(s.overlaps(&ns(&["staging"])));
        assert!(s.overlaps(&ns(&["prod"])));
        assert!(!s.overlaps(&ns(&["other"])));
    }
}
