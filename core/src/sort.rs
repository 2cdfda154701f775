//! One stable sort for the crate's few sorts of whole records.
//!
//! Each `sort_by_key` on a different element type is a separate copy of the standard library's
//! sort in the binary, a few kilobytes each in the edge wasm. [`sort_by`] sorts indices instead,
//! through a single copy, and then moves the elements into that order: the same result as
//! `slice::sort_by` (stable: equal elements keep their order). For the small lists sorted here.

use std::cmp::Ordering;

/// `items.sort_by(compare)`.
pub(crate) fn sort_by<T>(items: &mut Vec<T>, compare: impl Fn(&T, &T) -> Ordering) {
    if items.len() < 2 {
        return;
    }
    let mut order: Vec<usize> = (0..items.len()).collect();
    sort_indices(&mut order, &|a, b| compare(&items[a], &items[b]));
    let mut slots: Vec<Option<T>> = items.drain(..).map(Some).collect();
    items.extend(order.into_iter().filter_map(|index| slots[index].take()));
}

/// `items.sort_by_key(key)`.
pub(crate) fn sort_by_key<T, K: Ord>(items: &mut Vec<T>, key: impl Fn(&T) -> K) {
    sort_by(items, |a, b| key(a).cmp(&key(b)));
}

/// `items.into_iter().collect()` into a `BTreeMap`, `BTreeSet` or JSON `Map`, one insert at a time.
///
/// Their own `FromIterator` sorts the items first (then bulk-builds the tree), which is one more
/// copy of the standard sort per element type; inserting needs none. Same result: for equal keys
/// the last value wins, as with `collect`. For the small maps built here.
pub(crate) fn collect_map<M: Default + Extend<T>, T>(items: impl IntoIterator<Item = T>) -> M {
    let mut map = M::default();
    map.extend(items);
    map
}

#[inline(never)]
fn sort_indices(order: &mut [usize], compare: &dyn Fn(usize, usize) -> Ordering) {
    order.sort_by(|&a, &b| compare(a, b));
}

#[cfg(test)]
mod tests {
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use super::*;

    #[test]
    fn sorts_as_the_standard_stable_sort() {
        let mut seed = 7u64;
        for len in 0..60 {
            let items: Vec<(u8, usize)> = (0..len)
                .map(|i| {
                    seed = seed
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    ((seed >> 60) as u8, i)
                })
                .collect();
            let mut expected = items.clone();
            expected.sort_by_key(|item| item.0);
            let mut sorted = items;
            sort_by_key(&mut sorted, |item| item.0);
            assert_eq!(sorted, expected);
        }
    }

    #[test]
    fn collects_maps_as_collect_does() {
        use std::collections::{BTreeMap, BTreeSet};
        let pairs = [("b", 1), ("a", 2), ("b", 3), ("c", 4), ("a", 5)];
        let expected: BTreeMap<&str, i32> = pairs.into_iter().collect();
        assert_eq!(collect_map::<BTreeMap<_, _>, _>(pairs), expected);
        let expected: serde_json::Map<String, serde_json::Value> = pairs
            .into_iter()
            .map(|(key, value)| (key.to_string(), value.into()))
            .collect();
        let map: serde_json::Map<String, serde_json::Value> =
            collect_map(pairs.map(|(key, value)| (key.to_string(), value.into())));
        assert_eq!(map, expected);
        let expected: BTreeSet<&str> = pairs.into_iter().map(|(key, _)| key).collect();
        assert_eq!(
            collect_map::<BTreeSet<_>, _>(pairs.map(|(key, _)| key)),
            expected
        );
    }
}
