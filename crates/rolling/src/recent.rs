//! # Recent answers: the fixed endpoints' results, maintained as orders arrive
//!
//! `/orders/ordersperminute`, `/orders/popular`, `/orders/couponslastminute`,
//! `/orders/toplocations`, `/orders/latestorders` and `/users/` ask the same questions of the
//! newest data every second, for every viewer. Answering them with SQL over the table costs
//! planning and a scan each time (8-16 ms at 10 M orders); this keeps, at ingest, just enough to
//! answer each one exactly:
//!
//! - **minutes**: per minute of event time, the five metrics (orders, revenue, fraud, delivered,
//!   refunded) for the last hour;
//! - **seconds**: per second of event time, for the last minute, per item name and per category
//!   (orders holding it, quantity), per customer city and state (orders), per coupon code (uses);
//!   the last minute's lists are those 60 added up, kept from read to read and moved with the
//!   reads' clock, either way (a read adds the seconds that entered its window and takes away
//!   those that left; orders arriving for seconds inside it are added as they come);
//! - **latest**: the 10 newest orders (time descending, then order id);
//! - **users**: the 50 most recently active customers (latest order time descending, then id).
//!
//! Each answer equals the SQL query it replaces on the same rows, NULLs included (a missing name is
//! its own group, sorted as SQL sorts it: last in ascending order, first in descending). The
//! windows are aligned: the last minute is `[end - 60 s, end)` with `end` the end of the current
//! second (the same window as `/orders/overview`), the last hour the current minute and the 59
//! before it. An order of any age still updates the panes it falls in, so late orders are exact
//! too; panes older than any window a query can ask for are dropped as time moves on, so memory
//! is fixed by the rate, not by the history.
//!
//! Bounded always, exact always: wherever the state cannot give SQL's answer it says `None`, which
//! tells the caller to ask SQL instead. That is the case when
//! - a second's list ran out of keys (`max_keys` per list per pane, and [`KEY_BYTES`] of key text
//!   over all panes: a producer sending a new city with every order), for every window holding
//!   that second (an overflowed pane drops its lists, keeping only the mark);
//! - a window's list holds more than [`MAX_WINDOW_KEYS`] distinct keys, or the sums must be
//!   built afresh (the first read, after a second of the window ran out of keys, or when
//!   moving them would be more work) from more than [`MAX_REBUILD_KEYS`] pane entries (the
//!   work of one read, done under the lock ingest takes, stays bounded);
//! - a read asks for a window older than what was kept (the clock stepped back, or ingest's
//!   clock ran ahead of the reader's by more than the one pane of slack kept);
//! - the table's retention may already have dropped rows the answer holds (`with_retention`).
//!
//! One case is not exact: when dedup has forgotten an order id (its cap was hit, see
//! `ingest.dedup_max_entries`) and the same id is stored twice in one last minute, an item's
//! `orders` counts it twice where SQL's `COUNT(DISTINCT order_id)` counts it once.
//!
//! Like [`crate::Windows`] it has no clock: time comes in with the rows and the reads. It is not
//! checkpointed; after a restart it is rebuilt from the table (which is what it summarises) with
//! the `add_*` and `observe_*` parts below.

use std::cmp::{Ordering, Reverse};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

const SECOND_MS: i64 = 1_000;
const MINUTE_MS: i64 = 60_000;
/// Seconds in the last-minute window; minutes in the last-hour window.
const WINDOW_SECONDS: i64 = 60;
const WINDOW_MINUTES: i64 = 60;
/// Orders `/orders/latestorders` shows; customers `/users/` shows.
pub const LATEST: usize = 10;
pub const USERS: usize = 50;
/// Distinct keys a pane holds per list by default (see the module doc).
pub const DEFAULT_MAX_KEYS: usize = 10_000;
/// Bytes of key text all panes hold together (each key counted with [`KEY_OVERHEAD`]).
pub const KEY_BYTES: usize = 32 * 1024 * 1024;
const KEY_OVERHEAD: usize = 64;
/// Most distinct keys a last-minute list ranks in one read (more: SQL answers).
pub const MAX_WINDOW_KEYS: usize = 20_000;
/// Most pane entries (keys of a second's list) one read adds up when it builds the last
/// minute's sums afresh; moving them on from the previous read adds and takes away only the
/// seconds between the two. Above what [`KEY_BYTES`] lets all panes hold (524,288 keys), so
/// with the default key budget a rebuild is never refused; a smaller budget lowers it too.
pub const MAX_REBUILD_KEYS: usize = 600_000;
/// Panes kept before the oldest any read at the ingest clock asks for: a reader whose clock is
/// this much behind ingest's still gets an answer.
const SLACK_PANES: i64 = 1;
/// Above this many line items an order's duplicate check uses a set.
const SMALL_ORDER_ITEMS: usize = 32;

/// One line item of a row.
#[derive(Debug, Clone, Copy, Default)]
pub struct RecentItem<'a> {
    pub name: Option<&'a str>,
    pub category: Option<&'a str>,
    pub quantity: Option<i32>,
}

/// What the answers need of one stored order (borrowed from the batch it came in).
#[derive(Debug, Clone, Copy, Default)]
pub struct RecentRow<'a> {
    pub order_id: &'a str,
    pub time_ms: i64,
    pub order_total: Option<f64>,
    pub customer_id: Option<&'a str>,
    pub products_ordered: Option<i32>,
    pub total_quantity: Option<i32>,
    pub fraud: bool,
    pub delivered: bool,
    pub refunded: bool,
    pub city: Option<&'a str>,
    pub state: Option<&'a str>,
    pub items: &'a [RecentItem<'a>],
    pub coupons: &'a [Option<&'a str>],
}

/// One minute's metrics, as `ordersperminute` shows them.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct MinuteMetrics {
    pub orders: u64,
    /// Sum of `order_total` (as SQL sums it: doubles, rounded to the cent only when shown).
    pub revenue: f64,
    pub fraud: u64,
    pub delivered: u64,
    pub refunded: u64,
}

impl MinuteMetrics {
    fn add(&mut self, o: &MinuteMetrics) {
        self.orders += o.orders;
        self.revenue += o.revenue;
        self.fraud += o.fraud;
        self.delivered += o.delivered;
        self.refunded += o.refunded;
    }
}

/// An item or category of the last minute: orders holding it and the quantity ordered (`None`
/// when every quantity was missing, as SQL's SUM of NULLs).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ItemCount {
    pub orders: u64,
    quantity: i64,
    quantities: u64,
}

impl ItemCount {
    pub fn quantity(&self) -> Option<i64> {
        (self.quantities > 0).then_some(self.quantity)
    }

    /// One line item of an order: `first`, the first naming this key in its order.
    fn count(&mut self, first: bool, quantity: Option<i32>) {
        self.orders += u64::from(first);
        if let Some(q) = quantity {
            self.quantity = self.quantity.saturating_add(i64::from(q));
            self.quantities += 1;
        }
    }

    fn add(&mut self, o: &ItemCount) {
        self.orders += o.orders;
        self.quantity = self.quantity.saturating_add(o.quantity);
        self.quantities += o.quantities;
    }
}

/// A ranked key: `None` is SQL's NULL group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ranked<V> {
    pub key: Option<String>,
    pub value: V,
}

/// The newest orders' columns `latestorders` shows.
#[derive(Debug, Clone, PartialEq)]
pub struct LatestOrder {
    pub order_id: String,
    pub time_ms: i64,
    pub order_total: Option<f64>,
    pub customer_id: Option<String>,
    pub products_ordered: Option<i32>,
    pub total_quantity: Option<i32>,
}

/// Counts per key, NULL apart (a `HashMap<Option<Box<str>>, _>` cannot be probed with a `&str`).
#[derive(Debug, Clone)]
struct Counts<V> {
    named: HashMap<Box<str>, V>,
    null: Option<V>,
}

impl<V> Default for Counts<V> {
    fn default() -> Self {
        Counts {
            named: HashMap::new(),
            null: None,
        }
    }
}

impl<V: Default> Counts<V> {
    fn len(&self) -> usize {
        self.named.len() + usize::from(self.null.is_some())
    }

    /// The entry of `key`, or `None` when it is new and the pane's list or the byte budget is
    /// full (`budget`: bytes still free, taken from as keys are added).
    fn entry(&mut self, key: Option<&str>, max_keys: usize, budget: &mut usize) -> Option<&mut V> {
        let full = self.len() >= max_keys;
        match key {
            None => {
                if self.null.is_none() && full {
                    return None;
                }
                Some(self.null.get_or_insert_with(V::default))
            }
            Some(k) => {
                if !self.named.contains_key(k) {
                    let cost = k.len() + KEY_OVERHEAD;
                    if full || cost > *budget {
                        return None;
                    }
                    *budget -= cost;
                    self.named.insert(k.into(), V::default());
                }
                self.named.get_mut(k)
            }
        }
    }

    /// Bytes of the budget its keys take.
    fn bytes(&self) -> usize {
        self.named.keys().map(|k| k.len() + KEY_OVERHEAD).sum()
    }
}

impl<V: Tally> Counts<V> {
    /// Adds `other`'s counts (a window's sums gaining a pane). False when a sum saturated.
    fn add_all(&mut self, other: &Counts<V>) -> bool {
        let mut exact = true;
        for (k, c) in &other.named {
            let sum = match self.named.get_mut(&**k) {
                Some(sum) => sum,
                None => self.named.entry(k.clone()).or_default(),
            };
            sum.tally(c);
            exact &= !sum.saturated();
        }
        if let Some(c) = &other.null {
            let sum = self.null.get_or_insert_with(V::default);
            sum.tally(c);
            exact &= !sum.saturated();
        }
        exact
    }

    /// Takes `other`'s counts away again (a pane leaving the window); a key left with nothing
    /// goes. False when that could not be exact.
    fn take_all(&mut self, other: &Counts<V>) -> bool {
        let mut exact = true;
        for (k, c) in &other.named {
            match self.named.get_mut(&**k) {
                Some(sum) => {
                    exact &= sum.untally(c);
                    if *sum == V::default() {
                        self.named.remove(&**k);
                    }
                }
                None => exact = false,
            }
        }
        if let Some(c) = &other.null {
            match &mut self.null {
                Some(sum) => {
                    exact &= sum.untally(c);
                    if *sum == V::default() {
                        self.null = None;
                    }
                }
                None => exact = false,
            }
        }
        // A burst's keys gone: give back the room they took.
        if self.named.capacity() > 1_024 && self.named.len() < self.named.capacity() / 4 {
            self.named.shrink_to(self.named.len() * 2);
        }
        exact
    }

    /// The first `limit` by `by`, then key (NULL last), as SQL's ORDER BY puts them.
    fn ranked(&self, limit: usize, by: impl Fn(&V, &V) -> Ordering) -> Vec<Ranked<V>> {
        let mut v: Vec<(Option<&str>, V)> = self
            .named
            .iter()
            .map(|(k, c)| (Some(&**k), *c))
            .chain(self.null.map(|c| (None, c)))
            .collect();
        let order = |a: &(Option<&str>, V), b: &(Option<&str>, V)| {
            by(&a.1, &b.1).then_with(|| nulls_last(a.0, b.0))
        };
        // Only the first `limit` are sorted: a window may hold thousands of items for a top 5.
        if limit < v.len() {
            v.select_nth_unstable_by(limit, order);
            v.truncate(limit);
        }
        v.sort_by(order);
        v.into_iter()
            .map(|(k, value)| Ranked {
                key: k.map(str::to_string),
                value,
            })
            .collect()
    }
}

/// One second of event time.
#[derive(Debug, Clone, Default)]
struct SecondPane {
    items: Counts<ItemCount>,
    categories: Counts<ItemCount>,
    cities: Counts<u64>,
    states: Counts<u64>,
    coupons: Counts<u64>,
    /// Some list ran out of keys: answers over this pane must come from SQL (its lists are
    /// dropped then).
    overflowed: bool,
}

impl SecondPane {
    /// Keys over its lists.
    fn entries(&self) -> usize {
        self.items.len()
            + self.categories.len()
            + self.cities.len()
            + self.states.len()
            + self.coupons.len()
    }

    fn bytes(&self) -> usize {
        self.items.bytes()
            + self.categories.bytes()
            + self.cities.bytes()
            + self.states.bytes()
            + self.coupons.bytes()
    }
}

/// The item-grain lists of the last minute (orders holding a key, quantity).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ItemList {
    Items,
    Categories,
}

/// The counted lists of the last minute (orders per city or state, uses per coupon).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CountList {
    Cities,
    States,
    Coupons,
}

/// What a pane counts per key, added up over the panes of a window (and taken away again as
/// the window moves on).
trait Tally: Default + Copy + PartialEq {
    fn tally(&mut self, other: &Self);
    /// Takes away what `tally` added. False when that cannot be exact: a sum that saturated.
    fn untally(&mut self, other: &Self) -> bool;
    /// Whether the sum may have saturated (then taking away is not exact).
    fn saturated(&self) -> bool;
}

impl Tally for ItemCount {
    fn tally(&mut self, other: &Self) {
        self.add(other);
    }

    fn untally(&mut self, other: &Self) -> bool {
        if self.saturated() {
            return false;
        }
        match (
            self.orders.checked_sub(other.orders),
            self.quantity.checked_sub(other.quantity),
            self.quantities.checked_sub(other.quantities),
        ) {
            (Some(orders), Some(quantity), Some(quantities)) => {
                *self = ItemCount {
                    orders,
                    quantity,
                    quantities,
                };
                true
            }
            _ => false,
        }
    }

    fn saturated(&self) -> bool {
        self.quantity == i64::MAX || self.quantity == i64::MIN
    }
}

impl Tally for u64 {
    fn tally(&mut self, other: &Self) {
        *self += other;
    }

    fn untally(&mut self, other: &Self) -> bool {
        match self.checked_sub(*other) {
            Some(left) => {
                *self = left;
                true
            }
            None => false,
        }
    }

    fn saturated(&self) -> bool {
        false
    }
}

/// A customer id ordered as SQL orders `customer_id ASC`: NULL last.
#[derive(Debug, Clone, PartialEq, Eq)]
struct NullsLast(Option<Box<str>>);

impl Ord for NullsLast {
    fn cmp(&self, other: &Self) -> Ordering {
        nulls_last(self.0.as_deref(), other.0.as_deref())
    }
}

impl PartialOrd for NullsLast {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// The last-minute lists added up over the second panes `[first, end)` of the latest read's
/// window: kept as orders arrive (an order in those seconds is added here too) and moved with
/// the reads (a read adds the panes that entered its window and takes away those that left).
/// A read merging all 60 panes instead did not scale: at 1,000 orders/s a minute holds about
/// 60,000 pane entries of items, over what one read may merge, and `popular` went to SQL.
#[derive(Debug, Clone, Default)]
struct WindowSums {
    first: i64,
    end: i64,
    items: Counts<ItemCount>,
    categories: Counts<ItemCount>,
    cities: Counts<u64>,
    states: Counts<u64>,
    coupons: Counts<u64>,
}

impl WindowSums {
    fn covers(&self, second: i64) -> bool {
        (self.first..self.end).contains(&second)
    }

    /// Adds (or takes away) one pane. False when the sums are no longer exact.
    fn apply(&mut self, pane: &SecondPane, add: bool) -> bool {
        fn one<V: Tally>(sum: &mut Counts<V>, pane: &Counts<V>, add: bool) -> bool {
            if add {
                sum.add_all(pane)
            } else {
                sum.take_all(pane)
            }
        }
        // Every list, even after one failed: the caller drops the sums then anyway.
        let mut exact = one(&mut self.items, &pane.items, add);
        exact &= one(&mut self.categories, &pane.categories, add);
        exact &= one(&mut self.cities, &pane.cities, add);
        exact &= one(&mut self.states, &pane.states, add);
        exact & one(&mut self.coupons, &pane.coupons, add)
    }

    fn item_list(&self, list: ItemList) -> &Counts<ItemCount> {
        match list {
            ItemList::Items => &self.items,
            ItemList::Categories => &self.categories,
        }
    }

    fn count_list(&self, list: CountList) -> &Counts<u64> {
        match list {
            CountList::Cities => &self.cities,
            CountList::States => &self.states,
            CountList::Coupons => &self.coupons,
        }
    }
}

/// Keys already met in one order (names, or categories).
type KeySet<'a> = HashSet<Option<&'a str>>;

/// The state; see the module doc.
#[derive(Debug, Clone)]
pub struct Recent {
    max_keys: usize,
    /// Bytes of key text the panes may hold together, and what may still be added.
    key_limit: usize,
    key_budget: usize,
    /// The table's retention: answers holding rows older than this ago are left to SQL.
    retention_ms: Option<i64>,
    seconds: BTreeMap<i64, SecondPane>,
    minutes: BTreeMap<i64, MinuteMetrics>,
    /// The first second and minute (pane indexes) still complete: older ones were dropped, and
    /// rows for them are not counted.
    first_second: i64,
    first_minute: i64,
    /// Keyed (newest first, then order id, then arrival): the first [`LATEST`] are the answer.
    latest: BTreeMap<(Reverse<i64>, String, u64), LatestOrder>,
    arrivals: u64,
    /// Latest order time per customer (NULL apart), and the same ranked (newest first, then id).
    users: HashMap<Box<str>, i64>,
    null_user: Option<i64>,
    users_ranked: BTreeSet<(Reverse<i64>, NullsLast)>,
    /// The last read's last-minute lists, added up (`None`: build them at the next read).
    sums: Option<WindowSums>,
    /// Times the sums were added up afresh (tests check reads move them instead).
    #[cfg(test)]
    rebuilds: usize,
}

impl Default for Recent {
    fn default() -> Self {
        Recent::new(DEFAULT_MAX_KEYS)
    }
}

/// The last-minute window at `now_ms`: `[end - 60 s, end)`, `end` the end of the current second.
pub fn minute_window(now_ms: i64) -> (i64, i64) {
    let end = (now_ms.div_euclid(SECOND_MS) + 1) * SECOND_MS;
    (end - WINDOW_SECONDS * SECOND_MS, end)
}

/// The last-hour window at `now_ms`: the current minute and the 59 before it.
pub fn hour_window(now_ms: i64) -> (i64, i64) {
    let end = (now_ms.div_euclid(MINUTE_MS) + 1) * MINUTE_MS;
    (end - WINDOW_MINUTES * MINUTE_MS, end)
}

impl Recent {
    /// `max_keys`: distinct keys a second's pane holds per list (at least 1).
    pub fn new(max_keys: usize) -> Self {
        Recent {
            max_keys: max_keys.max(1),
            key_limit: KEY_BYTES,
            key_budget: KEY_BYTES,
            retention_ms: None,
            seconds: BTreeMap::new(),
            minutes: BTreeMap::new(),
            first_second: i64::MIN,
            first_minute: i64::MIN,
            latest: BTreeMap::new(),
            arrivals: 0,
            users: HashMap::new(),
            null_user: None,
            users_ranked: BTreeSet::new(),
            sums: None,
            #[cfg(test)]
            rebuilds: 0,
        }
    }

    /// The table drops rows older than `retention_ms` (a whole segment at a time): answers that
    /// may hold such rows are left to SQL.
    pub fn with_retention(mut self, retention_ms: Option<i64>) -> Self {
        self.retention_ms = retention_ms;
        self
    }

    /// Distinct keys a second's pane holds per list.
    pub fn max_keys(&self) -> usize {
        self.max_keys
    }

    pub fn retention_ms(&self) -> Option<i64> {
        self.retention_ms
    }

    /// Bytes of key text all panes may hold together (default [`KEY_BYTES`]). Meant for a new
    /// state: keys already held over the new limit stay until their panes age out.
    pub fn with_key_bytes(mut self, bytes: usize) -> Self {
        let held = self.key_limit.saturating_sub(self.key_budget);
        self.key_limit = bytes;
        self.key_budget = bytes.saturating_sub(held);
        self
    }

    pub fn key_bytes(&self) -> usize {
        self.key_limit
    }

    /// Where a state rebuilt at `now_ms` must start to answer every read at `now_ms` (and up to
    /// the slack before it): (first second's start, first minute's start), in ms.
    pub fn kept_from(now_ms: i64) -> (i64, i64) {
        let (second, minute) = Self::first_panes(now_ms);
        (second * SECOND_MS, minute * MINUTE_MS)
    }

    fn first_panes(now_ms: i64) -> (i64, i64) {
        (
            minute_window(now_ms).0.div_euclid(SECOND_MS) - SLACK_PANES,
            hour_window(now_ms).0.div_euclid(MINUTE_MS) - SLACK_PANES,
        )
    }

    /// Adds one order everywhere, after dropping what no read at `now_ms` (or up to the slack
    /// before it) asks for.
    pub fn observe(&mut self, row: &RecentRow<'_>, now_ms: i64) {
        self.prune(now_ms);
        let m = MinuteMetrics {
            orders: 1,
            revenue: row.order_total.unwrap_or(0.0),
            fraud: u64::from(row.fraud),
            delivered: u64::from(row.delivered),
            refunded: u64::from(row.refunded),
        };
        self.add_minute(row.time_ms, m);
        self.observe_second(row);
        self.observe_latest(row);
        self.observe_user(row.customer_id, row.time_ms);
    }

    /// Adds metrics to the minute holding `time_ms` (rebuilding from SQL's per-minute rollup);
    /// a minute already dropped is not counted.
    pub fn add_minute(&mut self, time_ms: i64, m: MinuteMetrics) {
        let minute = time_ms.div_euclid(MINUTE_MS);
        if minute >= self.first_minute {
            self.minutes.entry(minute).or_default().add(&m);
        }
    }

    /// Adds one order to the lists of its second (unless that second was dropped).
    pub fn observe_second(&mut self, row: &RecentRow<'_>) {
        let second = row.time_ms.div_euclid(SECOND_MS);
        if second < self.first_second {
            return;
        }
        let max = self.max_keys;
        let Recent {
            seconds,
            key_budget,
            key_limit,
            sums,
            ..
        } = self;
        let pane = seconds.entry(second).or_default();
        if pane.overflowed {
            return;
        }
        // The read window's sums hold this second: the order goes there too (no key limit
        // there: the panes' limits bound it).
        let mut unlimited = usize::MAX;
        let mut sum = sums.as_mut().filter(|w| w.covers(second));
        let mut ok = true;
        let mut sums_exact = true;
        // COUNT(DISTINCT order_id): an order naming the same item (category) twice counts once
        // for it.
        let mut seen: Option<(KeySet<'_>, KeySet<'_>)> =
            (row.items.len() > SMALL_ORDER_ITEMS).then(Default::default);
        for (i, item) in row.items.iter().enumerate() {
            let (first_name, first_category) = match &mut seen {
                Some((names, categories)) => {
                    (names.insert(item.name), categories.insert(item.category))
                }
                None => {
                    let earlier = &row.items[..i];
                    (
                        !earlier.iter().any(|o| o.name == item.name),
                        !earlier.iter().any(|o| o.category == item.category),
                    )
                }
            };
            for (counts, key, first) in [
                (&mut pane.items, item.name, first_name),
                (&mut pane.categories, item.category, first_category),
            ] {
                match counts.entry(key, max, key_budget) {
                    Some(c) => c.count(first, item.quantity),
                    None => ok = false,
                }
            }
            if let Some(w) = sum.as_deref_mut() {
                for (counts, key, first) in [
                    (&mut w.items, item.name, first_name),
                    (&mut w.categories, item.category, first_category),
                ] {
                    if let Some(c) = counts.entry(key, usize::MAX, &mut unlimited) {
                        c.count(first, item.quantity);
                        sums_exact &= !c.saturated();
                    }
                }
            }
        }
        for (counts, key) in [(&mut pane.cities, row.city), (&mut pane.states, row.state)] {
            match counts.entry(key, max, key_budget) {
                Some(c) => *c += 1,
                None => ok = false,
            }
        }
        for coupon in row.coupons {
            match pane.coupons.entry(*coupon, max, key_budget) {
                Some(c) => *c += 1,
                None => ok = false,
            }
        }
        if let Some(w) = sum {
            for (counts, key) in [(&mut w.cities, row.city), (&mut w.states, row.state)] {
                if let Some(c) = counts.entry(key, usize::MAX, &mut unlimited) {
                    *c += 1;
                }
            }
            for coupon in row.coupons {
                if let Some(c) = w.coupons.entry(*coupon, usize::MAX, &mut unlimited) {
                    *c += 1;
                }
            }
        }
        // The sums over this second are not exact any more (it drops its lists, or a sum
        // saturated): built afresh at the next read.
        if (!ok || !sums_exact) && sums.as_ref().is_some_and(|w| w.covers(second)) {
            *sums = None;
        }
        if !ok {
            // Nothing reads this pane's lists any more: give their memory back.
            *key_budget = (*key_budget + pane.bytes()).min(*key_limit);
            *pane = SecondPane {
                overflowed: true,
                ..SecondPane::default()
            };
        }
    }

    /// Offers one order to the newest-orders list.
    pub fn observe_latest(&mut self, row: &RecentRow<'_>) {
        if self.latest.len() >= LATEST {
            if let Some(((Reverse(t), id, _), _)) = self.latest.last_key_value() {
                // Keys sort newest first: the last one is the oldest kept. An equal (time, id)
                // is a second copy of an order (dedup forgot it): SQL lists both, so must this.
                if (Reverse(row.time_ms), row.order_id) > (Reverse(*t), id.as_str()) {
                    return;
                }
            }
        }
        self.arrivals += 1;
        self.latest.insert(
            (
                Reverse(row.time_ms),
                row.order_id.to_string(),
                self.arrivals,
            ),
            LatestOrder {
                order_id: row.order_id.to_string(),
                time_ms: row.time_ms,
                order_total: row.order_total,
                customer_id: row.customer_id.map(str::to_string),
                products_ordered: row.products_ordered,
                total_quantity: row.total_quantity,
            },
        );
        while self.latest.len() > LATEST {
            self.latest.pop_last();
        }
    }

    /// A customer's order at `time_ms` (or their latest, rebuilding from SQL).
    ///
    /// Keeping only [`USERS`] customers is exact: a customer dropped had a latest time below
    /// every kept one, and that bound only rises, so an order of theirs either ranks by its own
    /// time (which is then their latest) or is dropped again at once.
    pub fn observe_user(&mut self, customer_id: Option<&str>, time_ms: i64) {
        // Older than every kept customer's latest: changes nothing (the common case of a
        // backfill, and free of allocation).
        if self.users_ranked.len() >= USERS {
            if let Some((Reverse(oldest), _)) = self.users_ranked.last() {
                if time_ms < *oldest {
                    return;
                }
            }
        }
        let known = match customer_id {
            Some(id) => self.users.get(id).copied(),
            None => self.null_user,
        };
        let key = || NullsLast(customer_id.map(Box::from));
        match known {
            Some(t) if time_ms <= t => return,
            Some(t) => {
                self.users_ranked.remove(&(Reverse(t), key()));
            }
            None => {}
        }
        match customer_id {
            Some(id) => {
                self.users.insert(Box::from(id), time_ms);
            }
            None => self.null_user = Some(time_ms),
        }
        self.users_ranked.insert((Reverse(time_ms), key()));
        while self.users_ranked.len() > USERS {
            if let Some((_, NullsLast(gone))) = self.users_ranked.pop_last() {
                match gone {
                    Some(id) => {
                        self.users.remove(&id);
                    }
                    None => self.null_user = None,
                }
            }
        }
    }

    /// Drops the panes no read at `now_ms` (or up to the slack before it) asks for. Time only
    /// moves forward here: an earlier `now_ms` drops nothing.
    pub fn prune(&mut self, now_ms: i64) {
        let (first_second, first_minute) = Self::first_panes(now_ms);
        if first_second > self.first_second {
            self.first_second = first_second;
            while let Some(entry) = self.seconds.first_entry() {
                let second = *entry.key();
                if second >= first_second {
                    break;
                }
                let pane = entry.remove();
                // The read window's sums give up the seconds that go (the reads that still
                // want them are sent to SQL anyway, as before what was kept).
                if let Some(w) = self.sums.as_mut().filter(|w| w.covers(second)) {
                    if !w.apply(&pane, false) {
                        self.sums = None;
                    }
                }
                self.key_budget = (self.key_budget + pane.bytes()).min(self.key_limit);
            }
            if let Some(w) = &mut self.sums {
                w.first = w.first.max(first_second);
                if w.first >= w.end {
                    self.sums = None;
                }
            }
        }
        if first_minute > self.first_minute {
            self.first_minute = first_minute;
            while let Some(entry) = self.minutes.first_entry() {
                if *entry.key() >= first_minute {
                    break;
                }
                entry.remove();
            }
        }
    }

    /// Whether rows at `time_ms` may already be gone from the table at `now_ms`.
    fn past_retention(&self, time_ms: i64, now_ms: i64) -> bool {
        self.retention_ms
            .is_some_and(|r| time_ms < now_ms.saturating_sub(r))
    }

    /// Minutes of the last hour at `now_ms` that hold orders, newest first, as (start ms,
    /// metrics). `None`: ask SQL.
    pub fn per_minute(&self, now_ms: i64) -> Option<Vec<(i64, MinuteMetrics)>> {
        let (start, end) = hour_window(now_ms);
        if start.div_euclid(MINUTE_MS) < self.first_minute || self.past_retention(start, now_ms) {
            return None;
        }
        Some(
            self.minutes
                .range(start.div_euclid(MINUTE_MS)..end.div_euclid(MINUTE_MS))
                .rev()
                .map(|(m, metrics)| (m * MINUTE_MS, *metrics))
                .collect(),
        )
    }

    /// The last minute's lists at `now_ms`, added up: the sums of the previous read moved on
    /// (panes that entered added, panes that left taken away), or built from the panes when
    /// there are none or the window moved back or by a minute or more. `None`: ask SQL (a
    /// pane of the window ran out of keys, the window reaches before what was kept or past
    /// retention, or more than [`MAX_REBUILD_KEYS`] pane entries to add up at once).
    fn last_minute(&mut self, now_ms: i64) -> Option<&WindowSums> {
        let (start, end) = minute_window(now_ms);
        let (first, end) = (start.div_euclid(SECOND_MS), end.div_euclid(SECOND_MS));
        if first < self.first_second || self.past_retention(start, now_ms) {
            return None;
        }
        let seconds = &self.seconds;
        // The panes of seconds [lo, hi) (none when hi <= lo).
        let panes = |lo: i64, hi: i64| seconds.range(lo..hi.max(lo)).map(|(_, p)| p);
        if panes(first, end).any(|p| p.overflowed) {
            return None;
        }
        let entries = |lo, hi| panes(lo, hi).map(SecondPane::entries).sum::<usize>();
        let fresh = entries(first, end);
        // Moved (either way, as two readers' clocks straddle a second): the seconds the sums
        // hold outside the window taken away, the window's seconds they lack added; unless
        // that is more work than adding the window up afresh.
        let moved = self.sums.take().and_then(|mut w| {
            let (a, b) = (w.first, w.end);
            let away = [(a, b.min(first)), (a.max(end), b)];
            let add = [(first, end.min(a)), (first.max(b), end)];
            let work: usize = away
                .iter()
                .chain(&add)
                .map(|&(lo, hi)| entries(lo, hi))
                .sum();
            if work > fresh {
                return None;
            }
            let mut exact = true;
            for (lo, hi) in away {
                for p in panes(lo, hi) {
                    exact &= w.apply(p, false);
                }
            }
            for (lo, hi) in add {
                for p in panes(lo, hi) {
                    exact &= w.apply(p, true);
                }
            }
            (w.first, w.end) = (first, end);
            exact.then_some(w)
        });
        let sums = match moved {
            Some(w) => w,
            None => {
                if fresh > MAX_REBUILD_KEYS {
                    return None;
                }
                #[cfg(test)]
                {
                    self.rebuilds += 1;
                }
                let mut w = WindowSums {
                    first,
                    end,
                    ..WindowSums::default()
                };
                let mut exact = true;
                for p in self.seconds.range(first..end).map(|(_, p)| p) {
                    exact &= w.apply(p, true);
                }
                if !exact {
                    return None;
                }
                w
            }
        };
        Some(self.sums.insert(sums))
    }

    /// Items or categories of the last minute by quantity (descending, NULL first, as SQL's
    /// `ORDER BY quantity DESC`), then key (NULL last); the first `limit`. `None`: ask SQL.
    pub fn top_items(
        &mut self,
        list: ItemList,
        now_ms: i64,
        limit: usize,
    ) -> Option<Vec<Ranked<ItemCount>>> {
        let counts = self.last_minute(now_ms)?.item_list(list);
        if counts.len() > MAX_WINDOW_KEYS {
            return None;
        }
        Some(counts.ranked(limit, |a, b| {
            // DESC with NULLs first: None before any Some, larger quantities first.
            match (a.quantity(), b.quantity()) {
                (None, None) => Ordering::Equal,
                (None, Some(_)) => Ordering::Less,
                (Some(_), None) => Ordering::Greater,
                (Some(x), Some(y)) => y.cmp(&x),
            }
        }))
    }

    /// Cities, states or coupons of the last minute by count (descending), then key (NULL
    /// last); the first `limit`. `None`: ask SQL.
    pub fn top_counts(
        &mut self,
        list: CountList,
        now_ms: i64,
        limit: usize,
    ) -> Option<Vec<Ranked<u64>>> {
        let counts = self.last_minute(now_ms)?.count_list(list);
        if counts.len() > MAX_WINDOW_KEYS {
            return None;
        }
        Some(counts.ranked(limit, |a, b| b.cmp(a)))
    }

    /// The newest orders, newest first. `None`: ask SQL.
    pub fn latest(&self, now_ms: i64) -> Option<Vec<LatestOrder>> {
        let oldest = self.latest.keys().next_back().map(|(Reverse(t), _, _)| *t);
        if oldest.is_some_and(|t| self.past_retention(t, now_ms)) {
            return None;
        }
        Some(self.latest.values().cloned().collect())
    }

    /// The most recently active customers with their latest order time, newest first. `None`:
    /// ask SQL.
    pub fn users(&self, now_ms: i64) -> Option<Vec<(Option<String>, i64)>> {
        let oldest = self.users_ranked.last().map(|(Reverse(t), _)| *t);
        if oldest.is_some_and(|t| self.past_retention(t, now_ms)) {
            return None;
        }
        Some(
            self.users_ranked
                .iter()
                .map(|(Reverse(t), NullsLast(id))| (id.as_deref().map(str::to_string), *t))
                .collect(),
        )
    }

    /// Distinct keys held over every second's lists.
    #[cfg(test)]
    fn keys(&self) -> usize {
        self.seconds.values().map(SecondPane::entries).sum()
    }
}

/// SQL's ascending order of text: NULL last.
fn nulls_last(a: Option<&str>, b: Option<&str>) -> Ordering {
    match (a, b) {
        (Some(a), Some(b)) => a.cmp(b),
        (Some(_), None) => Ordering::Less,
        (None, Some(_)) => Ordering::Greater,
        (None, None) => Ordering::Equal,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An owned row for the model.
    #[derive(Debug, Clone)]
    struct Row {
        id: String,
        time_ms: i64,
        total: Option<f64>,
        customer: Option<String>,
        city: Option<String>,
        items: Vec<(Option<String>, Option<String>, Option<i32>)>,
        coupons: Vec<Option<String>>,
        fraud: bool,
    }

    fn observe(r: &mut Recent, row: &Row, now: i64) {
        let items: Vec<RecentItem<'_>> = row
            .items
            .iter()
            .map(|(n, c, q)| RecentItem {
                name: n.as_deref(),
                category: c.as_deref(),
                quantity: *q,
            })
            .collect();
        let coupons: Vec<Option<&str>> = row.coupons.iter().map(|c| c.as_deref()).collect();
        r.observe(
            &RecentRow {
                order_id: &row.id,
                time_ms: row.time_ms,
                order_total: row.total,
                customer_id: row.customer.as_deref(),
                products_ordered: Some(row.items.len() as i32),
                total_quantity: None,
                fraud: row.fraud,
                delivered: false,
                refunded: false,
                city: row.city.as_deref(),
                state: None,
                items: &items,
                coupons: &coupons,
            },
            now,
        );
    }

    /// A small deterministic generator (xorshift).
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
        fn name(&mut self, prefix: &str, n: u64) -> Option<String> {
            let k = self.below(n + 1);
            (k < n).then(|| format!("{prefix}{k}"))
        }
    }

    fn sql_order(a: &Option<String>, b: &Option<String>) -> Ordering {
        nulls_last(a.as_deref(), b.as_deref())
    }

    /// The SQL answers, by brute force over every row.
    fn model_items(rows: &[Row], now: i64, categories: bool) -> Vec<Ranked<ItemCount>> {
        let (lo, hi) = minute_window(now);
        let mut by: HashMap<Option<String>, (BTreeSet<String>, i64, u64)> = HashMap::new();
        for r in rows.iter().filter(|r| r.time_ms >= lo && r.time_ms < hi) {
            for (n, c, q) in &r.items {
                let key = if categories { c.clone() } else { n.clone() };
                let e = by.entry(key).or_default();
                e.0.insert(r.id.clone());
                if let Some(q) = q {
                    e.1 += i64::from(*q);
                    e.2 += 1;
                }
            }
        }
        let mut v: Vec<Ranked<ItemCount>> = by
            .into_iter()
            .map(|(k, (ids, q, n))| Ranked {
                key: k,
                value: ItemCount {
                    orders: ids.len() as u64,
                    quantity: q,
                    quantities: n,
                },
            })
            .collect();
        v.sort_by(|a, b| {
            let key = |c: &ItemCount| c.quantity().map_or(i64::MAX as i128 + 1, i128::from);
            key(&b.value)
                .cmp(&key(&a.value))
                .then_with(|| sql_order(&a.key, &b.key))
        });
        v.truncate(5);
        v
    }

    fn model_counts(rows: &[Row], now: i64, coupons: bool) -> Vec<Ranked<u64>> {
        let (lo, hi) = minute_window(now);
        let mut by: HashMap<Option<String>, u64> = HashMap::new();
        for r in rows.iter().filter(|r| r.time_ms >= lo && r.time_ms < hi) {
            if coupons {
                for c in &r.coupons {
                    *by.entry(c.clone()).or_default() += 1;
                }
            } else {
                *by.entry(r.city.clone()).or_default() += 1;
            }
        }
        let mut v: Vec<Ranked<u64>> = by
            .into_iter()
            .map(|(key, value)| Ranked { key, value })
            .collect();
        v.sort_by(|a, b| {
            b.value
                .cmp(&a.value)
                .then_with(|| sql_order(&a.key, &b.key))
        });
        v.truncate(if coupons { usize::MAX } else { 5 });
        v
    }

    fn model_minutes(rows: &[Row], now: i64) -> Vec<(i64, u64, i64, u64)> {
        let (lo, hi) = hour_window(now);
        let mut by: BTreeMap<i64, (u64, i64, u64)> = BTreeMap::new();
        for r in rows.iter().filter(|r| r.time_ms >= lo && r.time_ms < hi) {
            let e = by
                .entry(r.time_ms.div_euclid(MINUTE_MS) * MINUTE_MS)
                .or_default();
            e.0 += 1;
            e.1 += (r.total.unwrap_or(0.0) * 100.0).round() as i64;
            e.2 += u64::from(r.fraud);
        }
        by.into_iter()
            .rev()
            .map(|(m, (n, c, f))| (m, n, c, f))
            .collect()
    }

    fn model_latest(rows: &[Row]) -> Vec<(i64, String)> {
        let mut v: Vec<(i64, String)> = rows.iter().map(|r| (r.time_ms, r.id.clone())).collect();
        v.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
        v.truncate(LATEST);
        v
    }

    fn model_users(rows: &[Row]) -> Vec<(Option<String>, i64)> {
        let mut latest: HashMap<Option<String>, i64> = HashMap::new();
        for r in rows {
            let t = latest.entry(r.customer.clone()).or_insert(i64::MIN);
            *t = (*t).max(r.time_ms);
        }
        let mut v: Vec<(Option<String>, i64)> = latest.into_iter().collect();
        v.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| sql_order(&a.0, &b.0)));
        v.truncate(USERS);
        v
    }

    #[test]
    fn every_answer_equals_a_brute_force_over_all_rows() {
        let mut rng = Rng(0x5eed_1234_abcd_0001);
        let mut recent = Recent::default();
        let mut rows = Vec::new();
        let mut now: i64 = 1_795_618_800_000;
        for i in 0..40_000u64 {
            now += rng.below(40) as i64;
            // Mostly on time, some late (up to two hours), some a little ahead of the clock.
            let time_ms = match rng.below(20) {
                0 => now - rng.below(2 * 3_600_000) as i64,
                1 => now + rng.below(300_000) as i64,
                _ => now - rng.below(3_000) as i64,
            };
            let items = (0..rng.below(4))
                .map(|_| {
                    let q = rng.below(12);
                    (
                        rng.name("item", 30),
                        rng.name("cat", 4),
                        (q > 0).then_some(q as i32),
                    )
                })
                .collect();
            let row = Row {
                id: format!("o{}", rng.below(1 << 40)),
                time_ms,
                total: (rng.below(10) > 0).then(|| rng.below(100_000) as f64 / 100.0),
                customer: rng.name("c", 300),
                city: rng.name("city", 40),
                items,
                coupons: (0..rng.below(3)).map(|_| rng.name("SAVE", 6)).collect(),
                fraud: rng.below(7) == 0,
            };
            observe(&mut recent, &row, now);
            rows.push(row);
            // Reads often, in between the full checks: the sums move on by a second or less.
            if i % 97 == 0 {
                assert_eq!(
                    recent.top_counts(CountList::Cities, now, 5),
                    Some(model_counts(&rows, now, false))
                );
            }
            if i % 997 == 0 {
                let q = now + rng.below(2_000) as i64;
                assert_eq!(
                    recent.top_items(ItemList::Items, q, 5),
                    Some(model_items(&rows, q, false))
                );
                assert_eq!(
                    recent.top_items(ItemList::Categories, q, 5),
                    Some(model_items(&rows, q, true))
                );
                assert_eq!(
                    recent.top_counts(CountList::Cities, q, 5),
                    Some(model_counts(&rows, q, false))
                );
                assert_eq!(
                    recent.top_counts(CountList::Coupons, q, usize::MAX),
                    Some(model_counts(&rows, q, true))
                );
                let minutes: Vec<(i64, u64, i64, u64)> = recent
                    .per_minute(q)
                    .expect("minutes kept")
                    .into_iter()
                    .map(|(m, x)| (m, x.orders, (x.revenue * 100.0).round() as i64, x.fraud))
                    .collect();
                assert_eq!(minutes, model_minutes(&rows, q));
                let latest: Vec<(i64, String)> = recent
                    .latest(q)
                    .expect("latest kept")
                    .into_iter()
                    .map(|o| (o.time_ms, o.order_id))
                    .collect();
                assert_eq!(latest, model_latest(&rows));
                assert_eq!(recent.users(q), Some(model_users(&rows)));
                // A reader whose clock is a little behind ingest's still gets the exact answer;
                // one further behind than the kept slack is sent to SQL.
                let behind = now - 900;
                assert_eq!(
                    recent.top_counts(CountList::Cities, behind, 5),
                    Some(model_counts(&rows, behind, false))
                );
                assert_eq!(recent.top_counts(CountList::Cities, now - 2_500, 5), None);
                assert_eq!(recent.per_minute(now - 2 * MINUTE_MS - 1), None);
            }
        }
        // Memory follows the rate, not the history: only the last minute's seconds are kept.
        assert!(recent.seconds.len() <= 62 + 300, "{}", recent.seconds.len());
        assert!(recent.minutes.len() <= 67, "{}", recent.minutes.len());
    }

    #[test]
    fn a_busy_minute_is_answered_from_sums_moved_on_with_each_read() {
        // 500 orders a second, each naming one of 1,500 items: a minute's panes hold 30,000
        // item entries, more than one read may merge (MAX_WINDOW_KEYS), so before the sums were
        // kept `popular` went to SQL at such rates. Late orders land in seconds the sums hold.
        let mut recent = Recent::default();
        let t0: i64 = 1_795_618_800_000;
        let mut rows: Vec<Row> = Vec::new();
        let mut rng = Rng(0xb05e_0000_0000_0001);
        for s in 0..90i64 {
            for i in 0..500i64 {
                let late = rng.below(50) == 0;
                let time_ms = t0 + s * 1000 + i * 2 - if late { 30_000 } else { 0 };
                let row = Row {
                    id: format!("o{s}-{i}"),
                    time_ms,
                    total: None,
                    customer: None,
                    city: Some(format!("city{}", rng.below(300))),
                    items: vec![(
                        Some(format!("item{}", (i * 7 + s * 11) % 1_500)),
                        Some(format!("cat{}", i % 9)),
                        Some((i % 5) as i32),
                    )],
                    coupons: Vec::new(),
                    fraud: false,
                };
                observe(&mut recent, &row, t0 + s * 1000 + i * 2);
                rows.push(row);
            }
            let q = t0 + s * 1000 + 999;
            rows.retain(|r| r.time_ms >= q - 62_000);
            if s >= 60 {
                let entries: usize = recent.seconds.values().map(|p| p.items.len()).sum();
                assert!(
                    entries > MAX_WINDOW_KEYS,
                    "{entries} item entries in the panes"
                );
            }
            assert_eq!(
                recent.top_items(ItemList::Items, q, 5),
                Some(model_items(&rows, q, false)),
                "second {s}"
            );
            assert_eq!(
                recent.top_counts(CountList::Cities, q, 5),
                Some(model_counts(&rows, q, false)),
                "second {s}"
            );
            // A second reader whose clock is a second behind: the sums move back and forth.
            let behind = q - 1_000;
            assert_eq!(
                recent.top_counts(CountList::Cities, behind, 5),
                Some(model_counts(&rows, behind, false)),
                "second {s}, a second behind"
            );
        }
        // Added up at the first reads (while nothing was held, afresh was as cheap as a move),
        // then moved on by every read.
        assert!(recent.rebuilds <= 2, "{} rebuilds", recent.rebuilds);
    }

    #[test]
    fn sums_follow_prunes_and_are_dropped_when_a_second_they_hold_runs_out_of_keys() {
        let mut recent = Recent::new(4);
        let t0: i64 = 1_795_618_800_000;
        let mut rows: Vec<Row> = Vec::new();
        let add = |recent: &mut Recent,
                   rows: &mut Vec<Row>,
                   id: String,
                   time_ms: i64,
                   city: String,
                   now: i64| {
            let row = Row {
                id,
                time_ms,
                total: None,
                customer: None,
                city: Some(city),
                items: Vec::new(),
                coupons: Vec::new(),
                fraud: false,
            };
            observe(recent, &row, now);
            rows.push(row);
        };
        let check = |recent: &mut Recent, rows: &[Row], q: i64| {
            assert_eq!(
                recent.top_counts(CountList::Cities, q, 5),
                Some(model_counts(rows, q, false)),
                "read at {}",
                q - t0
            );
        };
        // Three orders a second; a read every second for the first 70.
        for s in 0..122i64 {
            for c in 0..3 {
                let t = t0 + s * 1000 + c;
                let city = format!("city{}", (s + c) % 5);
                add(&mut recent, &mut rows, format!("a{s}-{c}"), t, city, t);
            }
            let q = t0 + s * 1000 + 500;
            match s {
                0..70 => check(&mut recent, &rows, q),
                // Seconds 70-73 unread: prune took the seconds it dropped out of the sums,
                // and this read moves them on from there.
                74 => {
                    check(&mut recent, &rows, q);
                    assert_eq!(recent.rebuilds, 1, "moved, never added up afresh");
                }
                76 => {
                    // A late order makes second 60, inside the sums, run out of keys (3
                    // cities there, 2 more, 4 allowed): answers go to SQL while it is in the
                    // window...
                    for k in 0..2 {
                        let t = t0 + 60_000 + 10 + k;
                        add(
                            &mut recent,
                            &mut rows,
                            format!("late{k}"),
                            t,
                            format!("new{k}"),
                            q,
                        );
                    }
                    assert_eq!(recent.top_counts(CountList::Cities, q, 5), None);
                }
                // ... and are exact again once it left: nothing of it is left in the sums.
                121 => check(&mut recent, &rows, q),
                _ => {}
            }
        }
    }

    #[test]
    fn a_pane_out_of_keys_sends_its_window_to_sql_and_only_that_window() {
        let mut recent = Recent::new(3);
        let now = 1_000_000_000;
        for (i, city) in ["a", "b", "c", "d"].iter().enumerate() {
            let row = RecentRow {
                order_id: "x",
                time_ms: now - 10_000 + i as i64,
                city: Some(city),
                ..RecentRow::default()
            };
            recent.observe(&row, now);
        }
        assert_eq!(recent.top_counts(CountList::Cities, now, 5), None);
        assert_eq!(recent.top_items(ItemList::Items, now, 5), None);
        // A minute later that pane is out of the window: answers again, from the newer panes.
        let later = now + 60_000;
        let row = RecentRow {
            order_id: "y",
            time_ms: later,
            city: Some("e"),
            ..RecentRow::default()
        };
        recent.observe(&row, later);
        assert_eq!(
            recent.top_counts(CountList::Cities, later, 5),
            Some(vec![Ranked {
                key: Some("e".into()),
                value: 1
            }])
        );
        assert!(
            recent.keys() <= 3,
            "an overflowed pane drops its lists: {}",
            recent.keys()
        );
    }

    fn city_row<'a>(id: &'a str, time_ms: i64, city: &'a str) -> RecentRow<'a> {
        RecentRow {
            order_id: id,
            time_ms,
            customer_id: Some(id),
            city: Some(city),
            ..RecentRow::default()
        }
    }

    #[test]
    fn one_read_merges_a_bounded_number_of_keys() {
        let mut recent = Recent::new(usize::MAX);
        let now = 1_000_000_000;
        for i in 0..MAX_WINDOW_KEYS {
            recent.observe(
                &city_row("o", now - 30_000 + (i % 20) as i64 * 1000, &format!("c{i}")),
                now,
            );
        }
        assert!(recent.top_counts(CountList::Cities, now, 5).is_some());
        recent.observe(&city_row("o", now, "one more"), now);
        assert_eq!(recent.top_counts(CountList::Cities, now, 5), None);
        // Other lists of the same panes still answer.
        assert!(recent.top_counts(CountList::States, now, 5).is_some());
    }

    #[test]
    fn key_text_is_bounded_over_all_panes_and_given_back_as_panes_age() {
        let mut recent = Recent::new(usize::MAX).with_key_bytes(100 * (8 + KEY_OVERHEAD));
        let now = 1_000_000_000;
        for i in 0..100 {
            recent.observe(&city_row("o", now - 10_000, &format!("city{i:04}")), now);
        }
        assert!(recent.top_counts(CountList::Cities, now, 5).is_some());
        recent.observe(&city_row("o", now - 5_000, "city9999"), now);
        assert_eq!(recent.top_counts(CountList::Cities, now, 5), None);
        // Two minutes later those panes are gone and their bytes free again.
        let later = now + 120_000;
        for i in 0..100 {
            recent.observe(&city_row("o", later, &format!("city{i:04}")), later);
        }
        assert!(recent.top_counts(CountList::Cities, later, 5).is_some());
    }

    #[test]
    fn answers_that_may_hold_rows_past_retention_are_left_to_sql() {
        let now = 1_000_000_000_000;
        let mut recent = Recent::default().with_retention(Some(30 * MINUTE_MS));
        recent.observe(&city_row("a", now - 40 * MINUTE_MS, "old"), now);
        recent.observe(&city_row("b", now, "new"), now);
        // The hour reaches past a 30-minute retention; the newest lists hold a 40-minute-old order.
        assert_eq!(recent.per_minute(now), None);
        assert_eq!(recent.latest(now), None);
        assert_eq!(recent.users(now), None);
        assert!(recent.top_counts(CountList::Cities, now, 5).is_some());
        let mut kept = Recent::default().with_retention(Some(2 * 3_600_000));
        kept.observe(&city_row("a", now - 40 * MINUTE_MS, "old"), now);
        assert!(kept.per_minute(now).is_some() && kept.latest(now).is_some());
    }

    #[test]
    fn a_second_copy_of_an_order_is_listed_twice_as_sql_lists_it() {
        let mut recent = Recent::default();
        let now = 1_000_000_000;
        for _ in 0..2 {
            recent.observe(&city_row("same", now, "c"), now);
        }
        let latest = recent.latest(now).expect("latest");
        assert_eq!(latest.len(), 2);
        assert!(latest.iter().all(|o| o.order_id == "same"));
    }

    #[test]
    fn windows_are_aligned_to_the_second_and_the_minute() {
        assert_eq!(minute_window(120_000), (61_000, 121_000));
        assert_eq!(minute_window(120_999), (61_000, 121_000));
        assert_eq!(hour_window(3_600_000), (60_000, 3_660_000));
        assert_eq!(hour_window(3_659_999), (60_000, 3_660_000));
        assert_eq!(minute_window(-1), (-60_000, 0));
    }
}
