//! A table of byte-string prefixes: which of them a key starts with, found in one walk along
//! the key, however many prefixes there are.
//!
//! A byte trie whose root is a 256-entry array (most keys leave after one read: no prefix starts
//! with their first byte) and whose deeper nodes keep their few children in a short list. A
//! lookup costs one step per byte of the longest prefix the key follows, and no hashing: an
//! earlier table of hash maps, one lookup per distinct prefix length, cost about 550
//! instructions per written key with ten hooks (callgrind), the walk a few dozen.

/// Values filed under prefixes.
#[derive(Debug, Clone)]
pub struct PrefixTable<V> {
    /// `root[b]`: the node of the one-byte prefix `b`, or 0 when no prefix starts with `b`.
    root: Box<[u32; 256]>,
    /// `nodes[0]` is the empty prefix; its values match every key.
    nodes: Vec<Node<V>>,
}

#[derive(Debug, Clone)]
struct Node<V> {
    /// (next byte, node), in insertion order: a handful at most in practice.
    children: Vec<(u8, u32)>,
    /// The values of the prefix that ends here.
    values: Vec<V>,
}

impl<V> Node<V> {
    fn new() -> Self {
        Node {
            children: Vec::new(),
            values: Vec::new(),
        }
    }
}

impl<V> Default for PrefixTable<V> {
    fn default() -> Self {
        PrefixTable {
            root: Box::new([0; 256]),
            nodes: vec![Node::new()],
        }
    }
}

impl<V> PrefixTable<V> {
    /// Files `value` under `prefix` (the empty prefix matches every key).
    pub fn insert(&mut self, prefix: &[u8], value: V) {
        let mut node = 0usize;
        for (depth, &byte) in prefix.iter().enumerate() {
            let next = if depth == 0 {
                self.root[usize::from(byte)]
            } else {
                self.nodes[node]
                    .children
                    .iter()
                    .find(|(b, _)| *b == byte)
                    .map_or(0, |&(_, n)| n)
            };
            node = if next != 0 {
                next as usize
            } else {
                let created = self.nodes.len() as u32;
                self.nodes.push(Node::new());
                if depth == 0 {
                    self.root[usize::from(byte)] = created;
                } else {
                    self.nodes[node].children.push((byte, created));
                }
                created as usize
            };
        }
        self.nodes[node].values.push(value);
    }

    /// Whether no prefix is filed.
    pub fn is_empty(&self) -> bool {
        self.nodes.len() == 1 && self.nodes[0].values.is_empty()
    }

    /// Whether a key starting with byte `first` (or, for `None`, the empty key) may start
    /// with some prefix: false lets a caller skip the key after one table read. Cheap enough
    /// to run over a thousand keys before walking any of them.
    #[inline]
    pub fn may_match(&self, first: Option<u8>) -> bool {
        if !self.nodes[0].values.is_empty() {
            return true;
        }
        first.is_some_and(|b| self.root[usize::from(b)] != 0)
    }

    /// Calls `f` with every value whose prefix `key` starts with, shortest prefix first.
    #[inline]
    pub fn for_each_match(&self, key: &[u8], mut f: impl FnMut(&V)) {
        for node in self.path(key) {
            for value in &node.values {
                f(value);
            }
        }
    }

    /// The value of the shortest prefix `key` starts with, if any.
    #[inline]
    pub fn first_match(&self, key: &[u8]) -> Option<&V> {
        self.path(key).find_map(|node| node.values.first())
    }

    /// The nodes of the prefixes of `key` that the table holds a node for, shortest first
    /// (the empty prefix's included).
    #[inline]
    fn path<'t, 'k>(&'t self, key: &'k [u8]) -> Path<'t, 'k, V> {
        Path {
            table: self,
            node: Some(0),
            rest: key,
        }
    }
}

/// A walk down the trie along a key (see [`PrefixTable::path`]).
struct Path<'t, 'k, V> {
    table: &'t PrefixTable<V>,
    /// The next node to yield; None once the key leaves the trie.
    node: Option<usize>,
    rest: &'k [u8],
}

impl<'t, V> Iterator for Path<'t, '_, V> {
    type Item = &'t Node<V>;

    #[inline]
    fn next(&mut self) -> Option<&'t Node<V>> {
        let index = self.node?;
        let node = &self.table.nodes[index];
        let next = match self.rest.split_first() {
            None => 0,
            Some((&byte, tail)) => {
                self.rest = tail;
                if index == 0 {
                    self.table.root[usize::from(byte)] as usize
                } else {
                    node.children
                        .iter()
                        .find(|(b, _)| *b == byte)
                        .map_or(0, |&(_, n)| n as usize)
                }
            }
        };
        self.node = (next != 0).then_some(next);
        Some(node)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn matches(table: &PrefixTable<usize>, key: &[u8]) -> Vec<usize> {
        let mut out = Vec::new();
        table.for_each_match(key, |&v| out.push(v));
        out
    }

    #[test]
    fn finds_every_prefix_of_a_key() {
        let mut t = PrefixTable::default();
        t.insert(b"user:", 1);
        t.insert(b"user:admin:", 2);
        t.insert(b"u", 3);
        t.insert(b"order:", 4);
        t.insert(b"user:", 5);
        assert_eq!(matches(&t, b"user:admin:7"), vec![3, 1, 5, 2]);
        assert_eq!(matches(&t, b"user:7"), vec![3, 1, 5]);
        assert_eq!(matches(&t, b"use"), vec![3]);
        assert!(matches(&t, b"x").is_empty());
        assert!(matches(&t, b"").is_empty());
        assert_eq!(t.first_match(b"user:1"), Some(&3));
        assert_eq!(t.first_match(b"order:1"), Some(&4));
        assert_eq!(t.first_match(b"orde"), None);
        t.insert(b"", 0);
        assert_eq!(matches(&t, b""), vec![0]);
        assert_eq!(t.first_match(b"zzz"), Some(&0));
    }

    proptest! {
        /// The table finds exactly the prefixes that a test of each prefix in turn finds.
        #[test]
        fn agrees_with_trying_each_prefix(
            prefixes in proptest::collection::vec(proptest::collection::vec(0u8..4, 0..5), 0..12),
            key in proptest::collection::vec(0u8..4, 0..8),
        ) {
            let mut table = PrefixTable::default();
            for (i, p) in prefixes.iter().enumerate() {
                table.insert(p, i);
            }
            let mut found = matches(&table, &key);
            found.sort_unstable();
            let expected: Vec<usize> = prefixes
                .iter()
                .enumerate()
                .filter(|(_, p)| key.starts_with(p))
                .map(|(i, _)| i)
                .collect();
            prop_assert_eq!(&found, &expected);
            let shortest = prefixes
                .iter()
                .enumerate()
                .filter(|(_, p)| key.starts_with(p))
                .min_by_key(|(i, p)| (p.len(), *i))
                .map(|(i, _)| i);
            prop_assert_eq!(table.first_match(&key).copied(), shortest);
        }
    }
}
