//! `threshold <path> <test>`: keeps a message only when its value passes the test.
//!
//! A message whose value is missing, not a number, or whose payload is not JSON when a
//! JSON pointer is given, cannot be shown to be in range, so it is dropped.

use super::{Lookup, Msg, Mutator, Path, Step, Verdict};

/// The comparison a value must pass to be kept.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Test {
    /// `> x` / `above x`.
    Above(f64),
    /// `>= x`.
    AtLeast(f64),
    /// `< x` / `below x`.
    Below(f64),
    /// `<= x`.
    AtMost(f64),
    /// `between a b`: `a <= v <= b`.
    Between(f64, f64),
}

impl Test {
    /// Whether `v` passes.
    pub fn passes(self, v: f64) -> bool {
        match self {
            Test::Above(x) => v > x,
            Test::AtLeast(x) => v >= x,
            Test::Below(x) => v < x,
            Test::AtMost(x) => v <= x,
            Test::Between(a, b) => a <= v && v <= b,
        }
    }
}

pub(super) struct Threshold {
    path: Path,
    test: Test,
}

impl Threshold {
    pub fn new(path: Path, test: Test) -> Threshold {
        Threshold { path, test }
    }
}

impl Mutator for Threshold {
    fn apply(&self, msg: &mut Msg) -> Step {
        match msg.number(&self.path) {
            Lookup::Found(v) if self.test.passes(v) => Verdict::Keep.into(),
            _ => Verdict::Drop.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{chain, run};

    #[test]
    fn keeps_exactly_the_values_in_range() {
        let c = chain("threshold /temp > 30");
        assert!(run(&c, &[], r#"{"temp":30.5}"#).is_some());
        assert!(run(&c, &[], r#"{"temp":30}"#).is_none());
        assert!(run(&c, &[], r#"{"temp":-1}"#).is_none());
        let c = chain("threshold . between 10 20");
        for (v, keep) in [
            ("9.99", false),
            ("10", true),
            ("15", true),
            ("20", true),
            ("20.01", false),
        ] {
            assert_eq!(run(&c, &[], v).is_some(), keep, "{v}");
        }
        let c = chain("threshold header:level <= 3");
        assert!(run(&c, &[("level", "3")], "x").is_some());
        assert!(run(&c, &[("level", "4")], "x").is_none());
        let c = chain("threshold . >= 5 | threshold . < 6");
        assert!(run(&c, &[], "5").is_some());
        assert!(run(&c, &[], "6").is_none());
    }

    #[test]
    fn drops_what_it_cannot_read() {
        let c = chain("threshold /temp > 0");
        assert!(run(&c, &[], "not json").is_none());
        assert!(run(&c, &[], r#"{"temp":"hot"}"#).is_none());
        assert!(run(&c, &[], r#"{"other":1}"#).is_none());
        assert!(
            run(&c, &[], r#"{"temp":1"#).is_some(),
            "the scan stops at the field"
        );
        let c = chain("threshold header:level > 0");
        assert!(run(&c, &[], "1").is_none());
        assert!(run(&c, &[("level", "x")], "1").is_none());
        let c = chain("threshold . > 0");
        assert!(run(&c, &[], r#"{"temp":1}"#).is_none());
    }
}
