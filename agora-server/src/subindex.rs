//! Which subscriptions a topic name matches: a token trie of subscription patterns
//! (`sensors.*.temp`, `orders.>`, or a concrete name), as nats-server's sublist is, so
//! that a publish costs a walk of its name's tokens, not a scan of every subscription.
//! Plain state, generic over what a subscription is (`S`: the broker's subscriber
//! handle, a plain id in the tests).
//!
//! The rules are [`Pattern`]'s: `*` is exactly one token, `>` one or more trailing
//! tokens, and a wildcard never matches a first token starting with `$` (the broker's
//! reserved names are matched only by a pattern that spells them out).
//!
//! [`MatchCache`] keeps the answers for names already asked about, keyed by the index's
//! generation, which every change moves on: a stale answer is never used, and a publish
//! to a name seen before costs one hash lookup whatever the number of subscriptions.
//! It holds at most a fixed number of names (past it, it starts again empty).

use std::collections::HashMap;
use std::sync::Arc;

use crate::auth::{Pattern, Token};

/// One level of the trie: what the next token may be.
struct Level<S> {
    literal: HashMap<String, Node<S>>,
    /// `*`
    one: Option<Box<Node<S>>>,
    /// `>`: its subscriptions match one or more further tokens; it has no level below.
    rest: Vec<S>,
}

impl<S> Default for Level<S> {
    fn default() -> Self {
        Level {
            literal: HashMap::new(),
            one: None,
            rest: Vec::new(),
        }
    }
}

impl<S> Level<S> {
    fn is_empty(&self) -> bool {
        self.literal.is_empty() && self.one.is_none() && self.rest.is_empty()
    }
}

/// A token's place: the subscriptions whose pattern ends here, and the level below.
struct Node<S> {
    subs: Vec<S>,
    next: Level<S>,
}

impl<S> Default for Node<S> {
    fn default() -> Self {
        Node {
            subs: Vec::new(),
            next: Level::default(),
        }
    }
}

impl<S> Node<S> {
    fn is_empty(&self) -> bool {
        self.subs.is_empty() && self.next.is_empty()
    }
}

/// See the module documentation.
pub struct SubIndex<S> {
    root: Level<S>,
    len: usize,
    generation: u64,
}

impl<S> Default for SubIndex<S> {
    fn default() -> Self {
        SubIndex {
            root: Level::default(),
            len: 0,
            generation: 0,
        }
    }
}

impl<S: Clone + PartialEq> SubIndex<S> {
    /// Subscriptions in the index.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether it holds no subscription.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Moves on with every change: a [`MatchCache`] answer of another generation is
    /// stale.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Adds subscription `sub` with `pattern` (a pattern may hold many subscriptions,
    /// and a subscription may be added under several patterns).
    pub fn insert(&mut self, pattern: &Pattern, sub: S) {
        let mut level = &mut self.root;
        let tokens = pattern.tokens();
        for (i, t) in tokens.iter().enumerate() {
            let last = i + 1 == tokens.len();
            let node = match t {
                Token::Rest => {
                    level.rest.push(sub);
                    self.len += 1;
                    self.generation += 1;
                    return;
                }
                Token::One => level.one.get_or_insert_with(Box::default),
                Token::Literal(l) => level.literal.entry(l.clone()).or_default(),
            };
            if last {
                node.subs.push(sub);
                self.len += 1;
                self.generation += 1;
                return;
            }
            level = &mut node.next;
        }
    }

    /// Removes subscription `sub` from `pattern`; false when it was not there. Empty
    /// branches are pruned, so the trie's size follows its subscriptions.
    pub fn remove(&mut self, pattern: &Pattern, sub: &S) -> bool {
        let removed = remove_at(&mut self.root, pattern.tokens(), sub);
        if removed {
            self.len -= 1;
            self.generation += 1;
        }
        removed
    }

    /// Every subscription whose pattern matches the concrete name `name` (dot-separated
    /// tokens), once per pattern it was added under.
    pub fn matches(&self, name: &str) -> Vec<S> {
        let tokens: Vec<&str> = name.split('.').collect();
        let mut out = Vec::new();
        collect(&self.root, &tokens, 0, &mut out);
        out
    }
}

fn remove_at<S: PartialEq>(level: &mut Level<S>, tokens: &[Token], sub: &S) -> bool {
    let Some((t, rest)) = tokens.split_first() else {
        return false;
    };
    let take = |v: &mut Vec<S>| match v.iter().position(|s| s == sub) {
        Some(i) => {
            v.swap_remove(i);
            true
        }
        None => false,
    };
    match t {
        Token::Rest => take(&mut level.rest),
        Token::One => {
            let Some(node) = level.one.as_mut() else {
                return false;
            };
            let removed = match rest.is_empty() {
                true => take(&mut node.subs),
                false => remove_at(&mut node.next, rest, sub),
            };
            if node.is_empty() {
                level.one = None;
            }
            removed
        }
        Token::Literal(l) => {
            let Some(node) = level.literal.get_mut(l.as_str()) else {
                return false;
            };
            let removed = match rest.is_empty() {
                true => take(&mut node.subs),
                false => remove_at(&mut node.next, rest, sub),
            };
            if node.is_empty() {
                level.literal.remove(l.as_str());
            }
            removed
        }
    }
}

fn collect<S: Clone>(level: &Level<S>, tokens: &[&str], depth: usize, out: &mut Vec<S>) {
    let Some((t, rest)) = tokens.split_first() else {
        return;
    };
    // Wildcards never stand for a reserved first token.
    let wild = depth > 0 || !t.starts_with('$');
    if wild {
        out.extend(level.rest.iter().cloned());
    }
    let mut visit = |node: &Node<S>| match rest.is_empty() {
        true => out.extend(node.subs.iter().cloned()),
        false => collect(&node.next, rest, depth + 1, out),
    };
    if let Some(node) = level.literal.get(*t) {
        visit(node);
    }
    if wild {
        if let Some(node) = &level.one {
            visit(node);
        }
    }
}

/// Names asked about, and their matches of one generation of a [`SubIndex`].
pub struct MatchCache<S> {
    generation: u64,
    max: usize,
    answers: HashMap<String, Arc<[S]>>,
}

impl<S: Clone + PartialEq> MatchCache<S> {
    /// A cache of at most `max` names.
    pub fn new(max: usize) -> MatchCache<S> {
        MatchCache {
            generation: u64::MAX,
            max,
            answers: HashMap::new(),
        }
    }

    /// What `name` matches in `index`: from the cache when it is of the index's
    /// generation, else walked and kept.
    pub fn matches(&mut self, index: &SubIndex<S>, name: &str) -> Arc<[S]> {
        if self.generation != index.generation() {
            self.answers.clear();
            self.generation = index.generation();
        }
        if let Some(a) = self.answers.get(name) {
            return a.clone();
        }
        let found: Arc<[S]> = index.matches(name).into();
        if self.answers.len() >= self.max {
            self.answers.clear();
        }
        self.answers.insert(name.to_owned(), found.clone());
        found
    }

    /// Names kept.
    pub fn len(&self) -> usize {
        self.answers.len()
    }

    /// Whether it keeps no name.
    pub fn is_empty(&self) -> bool {
        self.answers.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use agora_protocol::Destination;

    fn p(name: &str) -> Pattern {
        Pattern::parse(&format!("topic:{name}")).unwrap()
    }

    fn sorted(mut v: Vec<u32>) -> Vec<u32> {
        v.sort_unstable();
        v
    }

    #[test]
    fn wildcards_and_literals_match_as_the_rules_say() {
        let mut ix = SubIndex::default();
        for (id, pat) in [
            (1, "sensors.*.temp"),
            (2, "sensors.>"),
            (3, "sensors.a.temp"),
            (4, ">"),
            (5, "*"),
            (6, "$sys.>"),
            (7, "*.a.*"),
        ] {
            ix.insert(&p(pat), id);
        }
        assert_eq!(sorted(ix.matches("sensors.a.temp")), vec![1, 2, 3, 4, 7]);
        assert_eq!(sorted(ix.matches("sensors.b.temp")), vec![1, 2, 4]);
        assert_eq!(sorted(ix.matches("sensors")), vec![4, 5]);
        assert_eq!(sorted(ix.matches("sensors.a")), vec![2, 4]);
        assert_eq!(sorted(ix.matches("x.a.y")), vec![4, 7]);
        assert_eq!(
            sorted(ix.matches("$sys.metrics")),
            vec![6],
            "no wildcard at the root"
        );
        assert_eq!(ix.len(), 7);
    }

    #[test]
    fn one_subscription_under_overlapping_patterns_is_matched_once_per_pattern() {
        let mut ix = SubIndex::default();
        ix.insert(&p("a.>"), 1);
        ix.insert(&p("a.*"), 1);
        assert_eq!(ix.matches("a.b"), vec![1, 1]);
        assert!(ix.remove(&p("a.>"), &1));
        assert_eq!(ix.matches("a.b"), vec![1]);
        assert!(!ix.remove(&p("a.>"), &1), "already gone");
        assert!(!ix.remove(&p("z.q"), &1), "never there");
    }

    #[test]
    fn removing_prunes_the_trie() {
        let mut ix = SubIndex::default();
        let pats = ["a.b.c", "a.*.c", "a.>", "*.b", ">", "a"];
        for (i, pat) in pats.iter().enumerate() {
            ix.insert(&p(pat), i as u32);
        }
        for (i, pat) in pats.iter().enumerate() {
            assert!(ix.remove(&p(pat), &(i as u32)), "{pat}");
        }
        assert_eq!(ix.len(), 0);
        assert!(ix.root.is_empty());
    }

    #[test]
    fn the_trie_agrees_with_the_pattern_rules() {
        // Every pattern over a small alphabet, against every name over it.
        let tokens = ["a", "b", "$s", "*", ">"];
        let mut pats = Vec::new();
        for n in 1..=3 {
            let mut idx = vec![0usize; n];
            loop {
                let name: Vec<&str> = idx.iter().map(|&i| tokens[i]).collect();
                if let Ok(pt) = Pattern::parse(&format!("topic:{}", name.join("."))) {
                    pats.push(pt);
                }
                let mut k = 0;
                while k < n {
                    idx[k] += 1;
                    if idx[k] < tokens.len() {
                        break;
                    }
                    idx[k] = 0;
                    k += 1;
                }
                if k == n {
                    break;
                }
            }
        }
        let mut ix = SubIndex::default();
        for (i, pt) in pats.iter().enumerate() {
            ix.insert(pt, i);
        }
        for name in [
            "a", "b", "$s", "a.b", "$s.a", "a.a", "a.b.a", "$s.b.b", "b.b.b.b",
        ] {
            let d: Destination = format!("topic:{name}").parse().unwrap();
            let want: Vec<usize> = (0..pats.len()).filter(|&i| pats[i].matches(&d)).collect();
            let mut got = ix.matches(name);
            got.sort_unstable();
            assert_eq!(got, want, "{name}");
        }
    }

    #[test]
    fn the_cache_answers_one_generation_only() {
        let mut ix = SubIndex::default();
        let mut cache = MatchCache::new(2);
        ix.insert(&p("a.*"), 1);
        assert_eq!(&*cache.matches(&ix, "a.b"), &[1]);
        assert_eq!(&*cache.matches(&ix, "a.b"), &[1]);
        ix.insert(&p("a.b"), 2);
        assert_eq!(
            sorted(cache.matches(&ix, "a.b").to_vec()),
            vec![1, 2],
            "stale answer"
        );
        cache.matches(&ix, "a.c");
        cache.matches(&ix, "a.d");
        assert!(cache.len() <= 2, "bounded");
    }
}
