//! The aggregate's groups by row-encoded key, in a hash table whose
//! buckets can be named by index, with the lists of changed and pending
//! groups as buckets: no key copied to list a group, no lookup to find it
//! again, and a checkpoint walks its list sorted, in memory order. A
//! rehash moves the buckets: the table lists the changed groups anew
//! then, in memory order, and the pending ones by key, in their order.
//! Each entry keeps its key's key group, worked out once, and the table
//! keeps a byte per bucket naming it: a key group's groups are found
//! without reading every group.

use std::hash::BuildHasher;

use hashbrown::{DefaultHashBuilder, HashTable};
use smallvec::SmallVec;

use super::huge_pages::HugePages;
use crate::state::{key_group, prefetch_span, KEY_GROUPS};

/// A group's key, row-encoded: most keys (a few numbers, short strings) fit
/// in place, so a group is one allocation with its key.
pub type GroupKey = SmallVec<[u8; 24]>;

/// A listed group: its bucket, and its key group (a checkpoint counts each
/// key group's changes before it reads a group).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Listed {
    pub bucket: u32,
    pub kg: u16,
}

/// The table's lists of groups.
#[derive(Clone, Copy)]
pub enum List {
    /// Changed since the last checkpoint.
    Changed,
    /// Changed since their rows were last emitted.
    Pending,
}

/// A value that says whether it is on a list.
pub trait Listable {
    fn listed(&self, list: List) -> bool;
}

/// In declared order (`repr(C)`): the key and key group, then the value,
/// so that a bucket's head is one span to fetch (see
/// [`GroupTable::prefetch`]).
#[repr(C)]
struct Slot<V> {
    key: GroupKey,
    kg: u16,
    value: V,
}

pub struct GroupTable<V> {
    /// In huge pages once large (see [`HugePages`]).
    table: HashTable<Slot<V>, HugePages>,
    hasher: DefaultHashBuilder,
    /// By [`List`]. A bucket can be listed twice, or hold another group by
    /// the time its list is read (its group removed, another put there):
    /// the reader tells by the group's own flags.
    lists: [Vec<Listed>; 2],
    /// The key group of each full bucket's group, by bucket ([`NO_GROUP`]
    /// for an empty one): set as a group is put in or removed, and anew
    /// when a rehash moves them all.
    kgs: Vec<u8>,
}

/// Buckets in a bit set, one bit a bucket: marked in any order, read in
/// memory order (no sort of a list as long as the table).
pub struct Buckets {
    bits: Vec<u64>,
    marked: usize,
}

impl<V> Default for GroupTable<V> {
    fn default() -> Self {
        GroupTable {
            table: HashTable::new_in(HugePages),
            hasher: DefaultHashBuilder::default(),
            lists: [Vec::new(), Vec::new()],
            kgs: Vec::new(),
        }
    }
}

/// [`GroupTable::kgs`] of an empty bucket: no key group's.
const NO_GROUP: u8 = u8::MAX;
const _: () = assert!(KEY_GROUPS <= NO_GROUP as u16);

impl Listed {
    fn new(bucket: usize, kg: u16) -> Self {
        let bucket = u32::try_from(bucket).expect("fewer than 2^32 buckets");
        Listed { bucket, kg }
    }
}

impl<V: Listable> GroupTable<V> {
    fn hash(&self, key: &[u8]) -> u64 {
        self.hasher.hash_one(key)
    }

    pub fn len(&self) -> usize {
        self.table.len()
    }

    pub fn get(&self, key: &[u8]) -> Option<&V> {
        let hash = self.hash(key);
        self.table
            .find(hash, |s| s.key.as_slice() == key)
            .map(|s| &s.value)
    }

    pub fn get_mut(&mut self, key: &[u8]) -> Option<&mut V> {
        let hash = self.hash(key);
        self.table
            .find_mut(hash, |s| s.key.as_slice() == key)
            .map(|s| &mut s.value)
    }

    pub fn contains_key(&self, key: &[u8]) -> bool {
        self.get(key).is_some()
    }

    /// Puts `value` under `key`; returns the value it replaced.
    pub fn insert(&mut self, key: GroupKey, value: V) -> Option<V> {
        match self.get_mut(&key) {
            Some(old) => Some(std::mem::replace(old, value)),
            None => {
                let hash = self.hash(&key);
                self.insert_new(hash, key, value);
                None
            }
        }
    }

    /// The bucket, key group and value of `key`, made by `make` if it is
    /// not there; and whether it was made.
    pub fn find_or_insert_with(
        &mut self,
        key: &[u8],
        make: impl FnOnce() -> V,
    ) -> (usize, u16, &mut V, bool) {
        let hash = self.hash(key);
        let (bucket, made) = match self
            .table
            .find_bucket_index(hash, |s| s.key.as_slice() == key)
        {
            Some(b) => (b, false),
            None => (
                self.insert_new(hash, GroupKey::from_slice(key), make()),
                true,
            ),
        };
        let slot = self.table.get_bucket_mut(bucket).expect("a full bucket");
        (bucket, slot.kg, &mut slot.value, made)
    }

    /// Makes room for `additional` more groups at once: a table filled
    /// by a restore grows once instead of doubling (and moving every
    /// bucket) again and again.
    pub fn reserve(&mut self, additional: usize) {
        if self.table.capacity() - self.table.len() >= additional {
            return;
        }
        let pending = self.pending_keys();
        let hasher = &self.hasher;
        self.table
            .reserve(additional, |s| hasher.hash_one(s.key.as_slice()));
        self.relist(pending);
    }

    fn insert_new(&mut self, hash: u64, key: GroupKey, value: V) -> usize {
        // hashbrown rehashes (moving every bucket) exactly when an
        // insertion finds no room left: the lists go by key meanwhile.
        let moves = self.table.len() == self.table.capacity();
        let pending = moves.then(|| self.pending_keys());
        let kg = key_group(&key);
        let hasher = &self.hasher;
        let bucket = self
            .table
            .insert_unique(hash, Slot { key, kg, value }, |s| {
                hasher.hash_one(s.key.as_slice())
            })
            .bucket_index();
        match pending {
            Some(pending) => self.relist(pending),
            None => self.kgs[bucket] = kg as u8,
        }
        bucket
    }

    /// The keys of the pending groups, in order.
    fn pending_keys(&self) -> Vec<GroupKey> {
        self.lists[List::Pending as usize]
            .iter()
            .filter_map(|l| self.table.get_bucket(l.bucket as usize))
            .filter(|s| s.value.listed(List::Pending))
            .map(|s| s.key.clone())
            .collect()
    }

    /// Lists the groups by their buckets after a rehash: the changed ones
    /// in one pass over the table (their order does not matter, and a
    /// checkpoint's list can be as long as the table), the pending ones
    /// (an emission interval's) by key, in their order.
    fn relist(&mut self, pending: Vec<GroupKey>) {
        let mut kgs = vec![NO_GROUP; self.table.num_buckets()];
        let changed: Vec<Listed> = self
            .buckets()
            .inspect(|(l, _)| kgs[l.bucket as usize] = l.kg as u8)
            .filter(|(_, v)| v.listed(List::Changed))
            .map(|(l, _)| l)
            .collect();
        self.kgs = kgs;
        self.lists[List::Changed as usize] = changed;
        let list = &mut self.lists[List::Pending as usize];
        list.clear();
        for key in pending {
            let hash = self.hasher.hash_one(key.as_slice());
            if let Some(b) = self.table.find_bucket_index(hash, |s| s.key == key) {
                let kg = self.table.get_bucket(b).expect("a full bucket").kg;
                list.push(Listed::new(b, kg));
            }
        }
    }

    /// Lists `bucket`'s group (of key group `kg`) on `list`.
    pub fn list(&mut self, list: List, bucket: usize, kg: u16) {
        self.lists[list as usize].push(Listed::new(bucket, kg));
    }

    pub fn listed(&self, list: List) -> usize {
        self.lists[list as usize].len()
    }

    /// Takes `list`, leaving it empty (with the room of `room`).
    pub fn take_list(&mut self, list: List, mut room: Vec<Listed>) -> Vec<Listed> {
        room.clear();
        std::mem::replace(&mut self.lists[list as usize], room)
    }

    pub fn remove(&mut self, key: &[u8]) -> Option<V> {
        let hash = self.hash(key);
        let entry = self
            .table
            .find_entry(hash, |s| s.key.as_slice() == key)
            .ok()?;
        self.kgs[entry.bucket_index()] = NO_GROUP;
        Some(entry.remove().0.value)
    }

    /// The key, key group and value in `bucket`, if it holds one.
    pub fn at(&self, bucket: usize) -> Option<(&GroupKey, u16, &V)> {
        self.table
            .get_bucket(bucket)
            .map(|s| (&s.key, s.kg, &s.value))
    }

    /// Asks the CPU to fetch bucket `bucket`'s key, key group and the first
    /// `value_bytes` of its value, if it holds a group: a loop over listed
    /// buckets calls it a few buckets ahead. A hint: it changes nothing.
    pub fn prefetch(&self, bucket: usize, value_bytes: usize) {
        if let Some(s) = self.table.get_bucket(bucket) {
            let head = std::mem::offset_of!(Slot<V>, value) + value_bytes;
            prefetch_span(s, head.min(std::mem::size_of::<Slot<V>>()));
        }
    }

    pub fn at_mut(&mut self, bucket: usize) -> Option<(&GroupKey, u16, &mut V)> {
        self.table
            .get_bucket_mut(bucket)
            .map(|s| (&s.key, s.kg, &mut s.value))
    }

    pub fn iter(&self) -> impl Iterator<Item = (&GroupKey, &V)> {
        self.table.iter().map(|s| (&s.key, &s.value))
    }

    /// An empty set of this table's buckets.
    pub fn bucket_set(&self) -> Buckets {
        Buckets {
            bits: vec![0; self.table.num_buckets().div_ceil(64)],
            marked: 0,
        }
    }

    /// Marks in `set` every bucket whose group is of a key group `whole`
    /// names (by key group), reading a byte per bucket, not the groups.
    pub fn mark_key_groups(&self, set: &mut Buckets, whole: &[bool]) {
        let mut by_byte = [false; 256];
        by_byte[..whole.len()].copy_from_slice(whole);
        for (word, kgs) in set.bits.iter_mut().zip(self.kgs.chunks(64)) {
            for (i, &kg) in kgs.iter().enumerate() {
                *word |= u64::from(by_byte[kg as usize]) << i;
            }
        }
        set.marked = set.bits.iter().map(|w| w.count_ones() as usize).sum();
    }

    /// Every full bucket (with its key group) and its value, in memory order.
    pub fn buckets(&self) -> impl Iterator<Item = (Listed, &V)> {
        (0..self.table.num_buckets()).filter_map(|b| {
            let s = self.table.get_bucket(b)?;
            Some((Listed::new(b, s.kg), &s.value))
        })
    }
}

impl Buckets {
    /// Marks the buckets of `list`; `first` sees each bucket's first
    /// listing.
    pub fn mark_listed(&mut self, list: &[Listed], mut first: impl FnMut(&Listed)) {
        for l in list {
            let bit = 1u64 << (l.bucket % 64);
            if let Some(word) = self.bits.get_mut(l.bucket as usize / 64) {
                if *word & bit == 0 {
                    *word |= bit;
                    self.marked += 1;
                    first(l);
                }
            }
        }
    }

    /// How many buckets are marked.
    pub fn len(&self) -> usize {
        self.marked
    }

    /// The marked buckets, in memory order.
    pub fn in_order(&self) -> Vec<u32> {
        let mut out = Vec::with_capacity(self.marked);
        for (at, &word) in self.bits.iter().enumerate() {
            let mut word = word;
            while word != 0 {
                out.push(at as u32 * 64 + word.trailing_zeros());
                word &= word - 1;
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(i: u32) -> GroupKey {
        GroupKey::from_slice(&i.to_be_bytes())
    }

    /// A value listed while its flags say so, as the aggregate's groups are.
    #[derive(Debug, PartialEq)]
    struct V {
        n: u32,
        changed: bool,
        pending: bool,
    }

    impl Listable for V {
        fn listed(&self, list: List) -> bool {
            match list {
                List::Changed => self.changed,
                List::Pending => self.pending,
            }
        }
    }

    /// Finds or puts group `n`, listed as its flags say: whether it was
    /// made, its key group and its value's number.
    fn put_listed(t: &mut GroupTable<V>, n: u32, changed: bool, pending: bool) -> (bool, u16, u32) {
        let (bucket, kg, v, made) = t.find_or_insert_with(&key(n), || V {
            n,
            changed,
            pending,
        });
        let value = v.n;
        if changed {
            t.list(List::Changed, bucket, kg);
        }
        if pending {
            t.list(List::Pending, bucket, kg);
        }
        (made, kg, value)
    }

    #[test]
    fn lists_keep_their_groups_through_rehashes() {
        let mut t = GroupTable::default();
        for n in 0..3000u32 {
            let (made, kg, value) = put_listed(&mut t, n, n % 3 == 0, n % 5 == 0);
            assert!(made);
            assert_eq!(value, n);
            assert_eq!(kg, key_group(&key(n)));
        }
        assert!(!t.find_or_insert_with(&key(6), || unreachable!()).3);
        assert_eq!(t.remove(&key(15)).map(|v| v.n), Some(15));
        assert_eq!(t.len(), 2999);
        let listed = |t: &mut GroupTable<V>, list| {
            let taken = t.take_list(list, Vec::new());
            assert_eq!(t.listed(list), 0);
            taken
                .iter()
                .filter_map(|l| t.at(l.bucket as usize).map(|(k, kg, v)| (l.kg, k, kg, v)))
                .map(|(listed_kg, k, kg, v)| {
                    assert_eq!((listed_kg, k), (kg, &key(v.n)));
                    v.n
                })
                .collect::<Vec<_>>()
        };
        // Pending in listing order, the removed group gone.
        let pending: Vec<u32> = (0..3000).filter(|n| n % 5 == 0 && *n != 15).collect();
        assert_eq!(listed(&mut t, List::Pending), pending);
        // In memory order, each bucket once, its first listing seen.
        let mut changed_list = t.take_list(List::Changed, Vec::new());
        // One bucket listed twice.
        changed_list.push(changed_list[0]);
        let mut seen = 0;
        let mut set = t.bucket_set();
        set.mark_listed(&changed_list, |_| seen += 1);
        let ordered = set.in_order();
        assert!(ordered.windows(2).all(|w| w[0] < w[1]));
        let mut want: Vec<u32> = changed_list.iter().map(|l| l.bucket).collect();
        want.sort_unstable();
        want.dedup();
        assert_eq!((ordered, seen), (want.clone(), want.len()));
        for l in changed_list {
            t.list(List::Changed, l.bucket as usize, l.kg);
        }
        // Changed in any order, each once.
        let mut changed = listed(&mut t, List::Changed);
        changed.sort_unstable();
        changed.dedup();
        let want: Vec<u32> = (0..3000).filter(|n| n % 3 == 0 && *n != 15).collect();
        assert_eq!(changed, want);
        let visited: Vec<usize> = t.buckets().map(|(l, _)| l.bucket as usize).collect();
        assert_eq!(visited.len(), 2999);
        assert!(visited.windows(2).all(|w| w[0] < w[1]));
        // Key groups' buckets, after the rehashes and a removal (of a
        // group of one of them): exactly their groups.
        let removed_kg = key_group(&key(15));
        let whole: Vec<bool> = (0..KEY_GROUPS)
            .map(|kg| kg % 7 == 3 || kg == removed_kg)
            .collect();
        let mut set = t.bucket_set();
        t.mark_key_groups(&mut set, &whole);
        set.mark_listed(
            &[Listed::new(visited[0], t.at(visited[0]).unwrap().1)],
            |_| (),
        );
        let mut found: Vec<u32> = (set.in_order().iter())
            .map(|&b| t.at(b as usize).expect("a full bucket").2.n)
            .collect();
        found.sort_unstable();
        let first = t.at(visited[0]).unwrap().2.n;
        let mut want: Vec<u32> = (0..3000)
            .filter(|&n| n != 15 && (whole[key_group(&key(n)) as usize] || n == first))
            .collect();
        want.sort_unstable();
        assert_eq!(found, want);
        let eight = V {
            n: 80,
            changed: false,
            pending: false,
        };
        assert_eq!(t.insert(key(8), eight).map(|v| v.n), Some(8));
        assert_eq!(t.get(&key(8)).map(|v| v.n), Some(80));
    }

    /// Room made ahead moves the buckets as a rehash does: the lists and
    /// the key groups' bytes follow, and the room is there.
    #[test]
    fn reserved_room_keeps_lists_and_key_groups() {
        let mut t = GroupTable::default();
        for n in 0..100u32 {
            put_listed(&mut t, n, n % 2 == 0, n % 3 == 0);
        }
        t.reserve(10_000);
        let buckets = t.table.num_buckets();
        assert!(t.table.capacity() >= 10_100);
        let of = |t: &GroupTable<V>, list: &[Listed]| -> Vec<u32> {
            (list.iter())
                .map(|l| t.at(l.bucket as usize).expect("a full bucket"))
                .map(|(k, kg, v)| {
                    assert_eq!((k, kg), (&key(v.n), key_group(k)));
                    v.n
                })
                .collect()
        };
        let pending = t.take_list(List::Pending, Vec::new());
        let want: Vec<u32> = (0..100).filter(|n| n % 3 == 0).collect();
        assert_eq!(of(&t, &pending), want);
        let changed = t.take_list(List::Changed, Vec::new());
        let mut got = of(&t, &changed);
        got.sort_unstable();
        let want: Vec<u32> = (0..100).filter(|n| n % 2 == 0).collect();
        assert_eq!(got, want);
        let whole: Vec<bool> = (0..KEY_GROUPS).map(|kg| kg % 2 == 1).collect();
        let mut set = t.bucket_set();
        t.mark_key_groups(&mut set, &whole);
        let mut found: Vec<u32> = (set.in_order().iter())
            .map(|&b| t.at(b as usize).expect("a full bucket").2.n)
            .collect();
        found.sort_unstable();
        let want: Vec<u32> = (0..100)
            .filter(|&n| whole[key_group(&key(n)) as usize])
            .collect();
        assert_eq!(found, want);
        for n in 100..10_100u32 {
            t.insert(
                key(n),
                V {
                    n,
                    changed: false,
                    pending: false,
                },
            );
        }
        assert_eq!(t.table.num_buckets(), buckets, "no rehash within the room");
    }
}
