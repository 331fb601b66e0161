//! Tenant pauses (console `PAUSE TENANT`, `MOVE TENANT`, `RESUME TENANT`) and
//! the transactions that hold each tenant.
//!
//! A session takes a [`Ticket`] for a tenant when a unit of work is routed to
//! that tenant's shard, and gives it back when its transaction ends (the server
//! is released). Taking a ticket and pausing the tenant happen under the same
//! lock, so there is no moment where a pause has been declared and a new
//! transaction of that tenant can still start: once [`TenantGate::pause`]
//! returns, the tenant's holders can only go down, and the console waits for
//! them to reach zero before it reports the tenant paused.
//!
//! A tenant that `MOVE TENANT` moved is also closed to work routed with a map
//! older than the move ([`Blocked::Stale`]): a session keeps its configuration
//! for a whole transaction (and across a held BEGIN), and its next statement
//! must not reach the tenant's old shard with it.
//!
//! Keys are canonical (see [`crate::router::shardmap::canonical_key`]): `042`
//! and `42` of a bigint key are one tenant. The gate is in memory only: a
//! restart ends every pause (logged at shutdown), and the shard map on disk is
//! always one that a reload accepted.

use crate::router::keyed::{KeyedMap, KeyedState};
use crate::router::{ShardMap, TenantKey};
use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::Notify;

const SHARDS: usize = 16;

/// Client ids holding a ticket (one per ticket).
///
/// Why not a `Vec`: an entry lives only while its tenant is held, so most
/// transactions create and drop one, and a `Vec` would allocate each time.
/// Two holders fit inline; more (a tenant busy on many clients at once)
/// spill into a `Vec`.
#[derive(Debug, Default)]
struct Holders {
    inline: [i32; 2],
    len: u8,
    more: Vec<i32>,
}

impl Holders {
    fn push(&mut self, client: i32) {
        match self.inline.get_mut(usize::from(self.len)) {
            Some(slot) => {
                *slot = client;
                self.len += 1;
            }
            None => self.more.push(client),
        }
    }

    /// Take one ticket of `client` out (any order is fine: readers sort).
    fn remove(&mut self, client: i32) {
        if let Some(i) = self.more.iter().position(|&c| c == client) {
            self.more.swap_remove(i);
            return;
        }
        let n = usize::from(self.len);
        if let Some(i) = self.inline[..n].iter().position(|&c| c == client) {
            self.inline[i] = self.inline[n - 1];
            self.len -= 1;
            // Keep the inline part full while some spilled over.
            if let Some(c) = self.more.pop() {
                self.push(c);
            }
        }
    }

    fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn to_vec(&self) -> Vec<i32> {
        let mut v = self.inline[..usize::from(self.len)].to_vec();
        v.extend_from_slice(&self.more);
        v
    }
}

/// What the gate knows of one tenant.
#[derive(Debug, Default)]
struct Entry {
    /// Client ids holding a ticket (one per ticket).
    holders: Holders,
    /// New transactions wait.
    paused: bool,
    /// Which pause is in force ([`TenantGate::pause_owned`]): a `PAUSE
    /// TENANT` that times out ends its own pause, never a later one.
    pause_epoch: u64,
    /// The pause in force saw the tenant's last transaction end
    /// ([`TenantGate::settle`]): `MOVE TENANT` may go on.
    drained: bool,
    /// Sessions waiting for the pause to end.
    held: usize,
}

impl Entry {
    fn unused(&self) -> bool {
        self.holders.is_empty() && !self.paused && self.held == 0
    }
}

/// Pauses and holders of every tenant.
pub struct TenantGate {
    shards: [Mutex<KeyedMap<TenantKey, Entry>>; SHARDS],
    /// Tenants paused now.
    paused: AtomicUsize,
    /// Fired when a pause ends, or a paused tenant's last holder leaves.
    changed: Notify,
    /// Tenants moved, with the configuration generation that first routes
    /// each where it is now (kept: one entry per tenant ever moved).
    moved: Mutex<KeyedMap<TenantKey, u64>>,
    /// The highest generation in `moved` (0: none): work routed with a newer
    /// configuration needs no look.
    last_move: AtomicU64,
    /// Per database, the last map change that may have moved any tenant (a
    /// new method, ranges or shard list): its first generation and the map.
    /// Work routed with an older map is sent back for a tenant the two maps
    /// place on different shards.
    replaced: Mutex<HashMap<String, (u64, Arc<ShardMap>)>>,
}

impl Default for TenantGate {
    fn default() -> TenantGate {
        TenantGate {
            shards: std::array::from_fn(|_| Mutex::new(KeyedMap::default())),
            paused: AtomicUsize::new(0),
            changed: Notify::new(),
            moved: Mutex::new(KeyedMap::default()),
            last_move: AtomicU64::new(0),
            replaced: Mutex::new(HashMap::new()),
        }
    }
}

/// Why work may not hold a tenant now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Blocked {
    /// The tenant is paused: the work waits for [`TenantGate::resume`].
    Paused,
    /// The tenant moved after the configuration the work was routed with was
    /// built: route it again with the current one.
    Stale,
}

/// A transaction's hold on a tenant; given back when dropped.
pub struct Ticket {
    gate: Arc<TenantGate>,
    key: TenantKey,
    client: i32,
}

impl Ticket {
    /// The (canonical) tenant held.
    pub fn key(&self) -> &TenantKey {
        &self.key
    }
}

impl std::fmt::Debug for Ticket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Ticket({:?}, client {})", self.key, self.client)
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.gate.exit(&self.key, self.client);
    }
}

impl TenantGate {
    fn shard(&self, key: &TenantKey) -> MutexGuard<'_, KeyedMap<TenantKey, Entry>> {
        // Keyed, as the maps are: no client can aim its tenants at one lock.
        let h = KeyedState::default().hash_one(key);
        self.shards[h as usize % SHARDS]
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// Hold `key` for a transaction of `client` whose work was routed with
    /// configuration `generation` (and, on a routed database, with the map
    /// `routed_with.1` of database `routed_with.0`), unless the tenant is
    /// paused or moved since.
    pub fn enter(
        self: &Arc<Self>,
        key: TenantKey,
        client: i32,
        generation: u64,
        routed_with: Option<(&str, &ShardMap)>,
    ) -> Result<Ticket, Blocked> {
        let mut map = self.shard(&key);
        let e = map.entry(key).or_default();
        if e.paused {
            return Err(Blocked::Paused);
        }
        if self.stale(&key, generation, routed_with) {
            if e.unused() {
                map.remove(&key);
            }
            return Err(Blocked::Stale);
        }
        e.holders.push(client);
        Ok(Ticket {
            gate: self.clone(),
            key,
            client,
        })
    }

    fn exit(&self, key: &TenantKey, client: i32) {
        let mut map = self.shard(key);
        // One hash for the lookup and the removal.
        let std::collections::hash_map::Entry::Occupied(mut o) = map.entry(*key) else {
            return;
        };
        let e = o.get_mut();
        e.holders.remove(client);
        let drained = e.paused && e.holders.is_empty();
        if e.unused() {
            o.remove();
        }
        drop(map);
        if drained {
            self.changed.notify_waiters();
        }
    }

    /// Whether any tenant moved after configuration `generation` was built
    /// (one atomic load): what [`TenantGate::moved_since`] asks first, for a
    /// caller to ask before it spells its tenants out.
    pub fn any_moved_since(&self, generation: u64) -> bool {
        generation < self.last_move.load(Ordering::Acquire)
    }

    /// Whether `key` moved after configuration `generation` was built
    /// (`routed_with`: the database and map that configuration routes by):
    /// a transaction that holds the tenant already asks at each unit.
    pub fn moved_since(
        &self,
        key: &TenantKey,
        generation: u64,
        routed_with: Option<(&str, &ShardMap)>,
    ) -> bool {
        self.stale(key, generation, routed_with)
    }

    /// Whether `key` moved after configuration `generation` was built.
    fn stale(
        &self,
        key: &TenantKey,
        generation: u64,
        routed_with: Option<(&str, &ShardMap)>,
    ) -> bool {
        if !self.any_moved_since(generation) {
            return false;
        }
        if let Some((db, map)) = routed_with {
            let replaced = self.replaced.lock().unwrap_or_else(|p| p.into_inner());
            if let Some((g, now)) = replaced.get(db) {
                if generation < *g && map.place(key) != now.place(key) {
                    return true;
                }
            }
        }
        let moved = self.moved.lock().unwrap_or_else(|p| p.into_inner());
        moved.get(key).is_some_and(|&g| g > generation)
    }

    /// `key` moved: configuration `generation` is the first that routes it to
    /// its new shard. Work routed with an older one is sent back
    /// ([`Blocked::Stale`]).
    pub fn moved(&self, key: TenantKey, generation: u64) {
        let mut moved = self.moved.lock().unwrap_or_else(|p| p.into_inner());
        moved.insert(key, generation);
        self.last_move.fetch_max(generation, Ordering::AcqRel);
    }

    /// Any tenant of database `db` may have moved: configuration
    /// `generation` is the first that routes with `map`. Work routed with an
    /// older map is sent back for the tenants the two maps place apart.
    pub fn replaced(&self, db: &str, generation: u64, map: Arc<ShardMap>) {
        let mut replaced = self.replaced.lock().unwrap_or_else(|p| p.into_inner());
        replaced.insert(db.to_string(), (generation, map));
        self.last_move.fetch_max(generation, Ordering::AcqRel);
    }

    /// Whether any tenant is paused now (one atomic load).
    pub fn any_paused(&self) -> bool {
        self.paused.load(Ordering::Acquire) != 0
    }

    /// Whether new transactions of `key` wait.
    pub fn is_paused(&self, key: &TenantKey) -> bool {
        if self.paused.load(Ordering::Acquire) == 0 {
            return false;
        }
        self.shard(key).get(key).is_some_and(|e| e.paused)
    }

    /// Pause `key`: from now on no transaction of it starts. `false` if it was
    /// paused already.
    pub fn pause(&self, key: TenantKey) -> bool {
        self.pause_owned(key).is_some()
    }

    /// [`TenantGate::pause`], naming the pause: `None` if `key` was paused
    /// already, else the epoch that [`TenantGate::end_pause`] and
    /// [`TenantGate::settle`] take.
    pub fn pause_owned(&self, key: TenantKey) -> Option<u64> {
        static EPOCH: AtomicU64 = AtomicU64::new(1);
        let mut map = self.shard(&key);
        let e = map.entry(key).or_default();
        if e.paused {
            return None;
        }
        e.paused = true;
        e.drained = false;
        e.pause_epoch = EPOCH.fetch_add(1, Ordering::Relaxed);
        self.paused.fetch_add(1, Ordering::AcqRel);
        Some(e.pause_epoch)
    }

    /// End the pause `epoch` of `key`, if it is still the one in force (a
    /// `RESUME TENANT` and another `PAUSE TENANT` may have come since: probe
    /// U, a timed-out PAUSE undid a later one, which then answered success
    /// while the tenant ran). Whether it ended.
    pub fn end_pause(&self, key: &TenantKey, epoch: u64) -> bool {
        let owned = self
            .shard(key)
            .get(key)
            .is_some_and(|e| e.paused && e.pause_epoch == epoch);
        owned && self.resume(key)
    }

    /// The pause `epoch` of `key` saw its last transaction end: mark it
    /// drained, if it is still in force and nothing holds the tenant. Whether
    /// it did (`false`: resumed, or paused anew, meanwhile).
    pub fn settle(&self, key: &TenantKey, epoch: u64) -> bool {
        let mut map = self.shard(key);
        match map.get_mut(key) {
            Some(e) if e.paused && e.pause_epoch == epoch && e.holders.is_empty() => {
                e.drained = true;
                true
            }
            _ => false,
        }
    }

    /// Whether `key` is paused and its `PAUSE TENANT` saw every transaction
    /// of it end: what `MOVE TENANT` needs (probe U: a MOVE accepted while the
    /// PAUSE still waited let a running transaction commit on the old shard).
    pub fn is_drained(&self, key: &TenantKey) -> bool {
        self.shard(key)
            .get(key)
            .is_some_and(|e| e.paused && e.drained && e.holders.is_empty())
    }

    /// End the pause of `key`: the sessions held wake up. `false` if it was not
    /// paused.
    pub fn resume(&self, key: &TenantKey) -> bool {
        let mut map = self.shard(key);
        let Some(e) = map.get_mut(key) else {
            return false;
        };
        if !e.paused {
            return false;
        }
        e.paused = false;
        e.drained = false;
        if e.unused() {
            map.remove(key);
        }
        drop(map);
        self.paused.fetch_sub(1, Ordering::AcqRel);
        self.changed.notify_waiters();
        true
    }

    /// Clients holding `key` now (one id per transaction), sorted.
    pub fn holders(&self, key: &TenantKey) -> Vec<i32> {
        let mut v = self
            .shard(key)
            .get(key)
            .map(|e| e.holders.to_vec())
            .unwrap_or_default();
        v.sort_unstable();
        v
    }

    /// A session starts waiting for `key`'s pause to end ([`TenantGate::unhold`]
    /// when it stops).
    pub fn hold(&self, key: TenantKey) {
        self.shard(&key).entry(key).or_default().held += 1;
    }

    /// A session stopped waiting for `key`.
    pub fn unhold(&self, key: &TenantKey) {
        let mut map = self.shard(key);
        if let Some(e) = map.get_mut(key) {
            e.held = e.held.saturating_sub(1);
            if e.unused() {
                map.remove(key);
            }
        }
    }

    /// Fired when a pause ends or a paused tenant's last holder leaves. Create
    /// the future (and `enable` it) before checking the condition.
    pub fn changed(&self) -> &Notify {
        &self.changed
    }

    /// The paused tenants, with the sessions each holds, sorted by key.
    pub fn paused(&self) -> Vec<(TenantKey, usize)> {
        if self.paused.load(Ordering::Acquire) == 0 {
            return Vec::new();
        }
        let mut v: Vec<(TenantKey, usize)> = self
            .shards
            .iter()
            .flat_map(|s| {
                let map = s.lock().unwrap_or_else(|p| p.into_inner());
                map.iter()
                    .filter(|(_, e)| e.paused)
                    .map(|(k, e)| (*k, e.held))
                    .collect::<Vec<_>>()
            })
            .collect();
        v.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
        v
    }

    /// Wait until `key` has no holder, the pause `epoch` ends, or `timeout`
    /// passes. Returns the holders left (empty: drained, or the pause ended,
    /// which [`TenantGate::settle`] then tells).
    pub async fn drained(
        &self,
        key: &TenantKey,
        epoch: u64,
        timeout: std::time::Duration,
    ) -> Vec<i32> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            let in_force = self
                .shard(key)
                .get(key)
                .is_some_and(|e| e.paused && e.pause_epoch == epoch);
            let left = self.holders(key);
            if left.is_empty() || !in_force {
                return Vec::new();
            }
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                return self.holders(key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Holders spill past the inline two and come back whatever the order,
    /// one ticket at a time (a client may hold a tenant twice).
    #[test]
    fn holders_are_a_multiset() {
        let mut h = Holders::default();
        let ids = [5, 7, 5, 9, 11, 7];
        for id in ids {
            h.push(id);
        }
        let mut left = ids.to_vec();
        for id in [5, 11, 7, 5, 9, 7] {
            h.remove(id);
            let i = left.iter().position(|&c| c == id).unwrap();
            left.swap_remove(i);
            let (mut got, mut want) = (h.to_vec(), left.clone());
            got.sort_unstable();
            want.sort_unstable();
            assert_eq!(got, want);
            assert_eq!(h.is_empty(), want.is_empty());
        }
        h.remove(42);
        assert!(h.is_empty());
    }

    fn key(s: &str) -> TenantKey {
        TenantKey::new(s.as_bytes()).unwrap()
    }

    #[test]
    fn a_pause_stops_new_tickets_and_counts_the_old_ones() {
        let g = Arc::new(TenantGate::default());
        let t1 = g.enter(key("42"), 1, 1, None).unwrap();
        let t2 = g.enter(key("42"), 2, 1, None).unwrap();
        let _other = g.enter(key("7"), 3, 1, None).unwrap();
        assert!(g.pause(key("42")));
        assert!(!g.pause(key("42")), "paused twice");
        assert_eq!(g.enter(key("42"), 4, 1, None).unwrap_err(), Blocked::Paused);
        assert!(g.enter(key("7"), 5, 1, None).is_ok(), "other tenants run");
        assert_eq!(g.holders(&key("42")), vec![1, 2]);
        drop(t1);
        assert_eq!(g.holders(&key("42")), vec![2]);
        drop(t2);
        assert!(g.holders(&key("42")).is_empty());
        assert_eq!(g.paused(), vec![(key("42"), 0)]);
        assert!(g.resume(&key("42")));
        assert!(!g.resume(&key("42")));
        assert!(g.enter(key("42"), 4, 1, None).is_ok());
        assert!(g.paused().is_empty());
    }

    #[test]
    fn work_routed_before_a_move_is_sent_back() {
        let g = Arc::new(TenantGate::default());
        g.moved(key("42"), 5);
        assert_eq!(g.enter(key("42"), 1, 4, None).unwrap_err(), Blocked::Stale);
        assert!(g.enter(key("42"), 1, 5, None).is_ok());
        assert!(
            g.enter(key("7"), 1, 4, None).is_ok(),
            "other tenants did not move"
        );
        // A placement change that may move anyone: each tenant the old and
        // the new map place apart.
        let names = ["s0".to_string(), "s1".to_string()];
        let old = ShardMap::parse("version = 1\nmethod = \"citus\"\n", &names).unwrap();
        let new = ShardMap::parse("version = 2\nmethod = \"partition\"\n", &names).unwrap();
        let (apart, together): (Vec<_>, Vec<_>) = (1..40)
            .map(|i| key(&i.to_string()))
            .partition(|k| old.place(k) != new.place(k));
        assert!(!apart.is_empty() && !together.is_empty());
        g.replaced("app", 8, Arc::new(new));
        for k in apart {
            let e = g.enter(k, 1, 7, Some(("app", &old))).unwrap_err();
            assert_eq!(e, Blocked::Stale);
            assert!(g.enter(k, 1, 7, Some(("other", &old))).is_ok());
            assert!(g.enter(k, 1, 8, Some(("app", &old))).is_ok());
        }
        for k in together {
            assert!(g.enter(k, 1, 7, Some(("app", &old))).is_ok());
        }
    }

    #[test]
    fn entries_go_away_when_unused() {
        let g = Arc::new(TenantGate::default());
        drop(g.enter(key("1"), 1, 1, None).unwrap());
        g.hold(key("2"));
        g.unhold(&key("2"));
        assert!(g.shards.iter().all(|s| s.lock().unwrap().is_empty()));
    }

    #[tokio::test]
    async fn drained_wakes_when_the_last_holder_leaves() {
        let g = Arc::new(TenantGate::default());
        let t = g.enter(key("42"), 9, 1, None).unwrap();
        let epoch = g.pause_owned(key("42")).unwrap();
        let g2 = g.clone();
        let waiter = tokio::spawn(async move {
            g2.drained(&key("42"), epoch, std::time::Duration::from_secs(30))
                .await
        });
        tokio::task::yield_now().await;
        assert!(!g.is_drained(&key("42")), "not before the PAUSE saw it");
        drop(t);
        assert!(waiter.await.unwrap().is_empty());
        assert!(g.settle(&key("42"), epoch));
        assert!(g.is_drained(&key("42")));
        let t7 = g.enter(key("7"), 1, 1, None).unwrap();
        let epoch = g.pause_owned(key("7")).unwrap();
        let left = g
            .drained(&key("7"), epoch, std::time::Duration::from_millis(10))
            .await;
        assert_eq!(left, vec![1], "a timeout reports who still holds it");
        // A RESUME ends the wait at once, and the pause is not settled.
        let g2 = g.clone();
        let waiter = tokio::spawn(async move {
            g2.drained(&key("7"), epoch, std::time::Duration::from_secs(30))
                .await
        });
        tokio::task::yield_now().await;
        assert!(g.resume(&key("7")));
        assert!(waiter.await.unwrap().is_empty());
        assert!(!g.settle(&key("7"), epoch));
        // A later pause is not the earlier one's to end or settle.
        let later = g.pause_owned(key("7")).unwrap();
        assert!(!g.end_pause(&key("7"), epoch));
        assert!(g.is_paused(&key("7")));
        drop(t7);
        assert!(!g.settle(&key("7"), epoch));
        assert!(g.settle(&key("7"), later));
        assert!(g.end_pause(&key("7"), later));
        assert!(!g.is_paused(&key("7")));
    }
}
