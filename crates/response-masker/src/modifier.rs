//! Compiled modifiers: whole-string application and the incremental
//! (streaming) form of each.

use regex::{Regex, RegexBuilder};

use crate::config::ModifierConfig;
use crate::path::FieldPath;

/// What a modifier does to a string.
#[derive(Debug)]
enum Op {
    Replace {
        regex: Regex,
        replace: String,
        expand: bool,
        /// The longest text (in bytes) the pattern can match, when bounded.
        max_len: Option<usize>,
    },
    Upper,
    Lower,
    Trim(Vec<char>),
}

/// One compiled modifier.
#[derive(Debug)]
pub(crate) struct Modifier {
    pub(crate) path: FieldPath,
    op: Op,
    /// Why the modifier cannot be applied to a stream, if it cannot.
    stream_problem: Option<String>,
}

/// A compile error: the key under the modifier (`field`, `find`) and why.
pub(crate) type CompileError = (&'static str, String);

impl Modifier {
    pub(crate) fn compile(config: &ModifierConfig) -> Result<Self, CompileError> {
        let (field, op) = match config {
            ModifierConfig::Regexp(c) => (&c.field, compile_replace(&c.find, &c.replace, true)?),
            ModifierConfig::Literal(c) => {
                if c.find.is_empty() {
                    return Err(("find", "must not be empty".to_owned()));
                }
                (
                    &c.field,
                    compile_replace(&regex::escape(&c.find), &c.replace, false)?,
                )
            }
            ModifierConfig::Upper(c) => (&c.field, Op::Upper),
            ModifierConfig::Lower(c) => (&c.field, Op::Lower),
            ModifierConfig::Trim(c) => (&c.field, Op::Trim(c.find.chars().collect())),
        };
        let path = FieldPath::parse(field).map_err(|e| ("field", e))?;
        let stream_problem = match &op {
            Op::Replace { max_len: None, .. } => Some(
                "the pattern can match unboundedly long text (it has `*`, `+` or `{n,}`), so a \
                 stream cannot be masked with a bounded hold-back; bound every repetition \
                 (e.g. `{0,32}` instead of `*`)"
                    .to_owned(),
            ),
            Op::Trim(_) => Some("trim needs the whole text, which a stream never has".to_owned()),
            _ => None,
        };
        Ok(Self {
            path,
            op,
            stream_problem,
        })
    }

    pub(crate) fn stream_problem(&self) -> Option<&str> {
        self.stream_problem.as_deref()
    }

    /// The modifier applied to a whole string; `None` when it is unchanged.
    pub(crate) fn apply(&self, text: &str) -> Option<String> {
        let result = match &self.op {
            Op::Replace {
                regex,
                replace,
                expand,
                ..
            } => {
                let replaced = if *expand {
                    regex.replace_all(text, replace.as_str())
                } else {
                    regex.replace_all(text, regex::NoExpand(replace))
                };
                match replaced {
                    std::borrow::Cow::Borrowed(_) => return None,
                    std::borrow::Cow::Owned(owned) => owned,
                }
            }
            Op::Upper => text.chars().flat_map(char::to_uppercase).collect(),
            Op::Lower => text.chars().flat_map(char::to_lowercase).collect(),
            Op::Trim(set) => text.trim_matches(|c| set.contains(&c)).to_owned(),
        };
        (result != text).then_some(result)
    }
}

fn compile_replace(find: &str, replace: &str, expand: bool) -> Result<Op, CompileError> {
    let hir = regex_syntax::ParserBuilder::new()
        .build()
        .parse(find)
        .map_err(|e| ("find", format!("invalid regular expression: {e}")))?;
    let properties = hir.properties();
    if properties.minimum_len() == Some(0) {
        return Err((
            "find",
            "the pattern matches empty text, which would insert the replacement everywhere"
                .to_owned(),
        ));
    }
    let regex = RegexBuilder::new(find)
        .build()
        .map_err(|e| ("find", format!("invalid regular expression: {e}")))?;
    Ok(Op::Replace {
        regex,
        replace: replace.to_owned(),
        expand,
        max_len: properties.maximum_len(),
    })
}

/// The incremental form of one modifier over one text stream: text goes in
/// piece by piece, and what comes out, concatenated, is what the modifier
/// makes of the whole text.
#[derive(Debug, Default)]
pub(crate) struct StreamStage {
    /// Already-emitted context (at most one char, for `\b` and `^`)
    /// followed by the held-back text.
    buffer: String,
    context_len: usize,
}

impl StreamStage {
    /// Feeds text; appends to `out` what is now certain. With `at_end`,
    /// everything is emitted.
    pub(crate) fn push(
        &mut self,
        modifier: &Modifier,
        input: &str,
        at_end: bool,
        out: &mut String,
    ) {
        match &modifier.op {
            Op::Upper => out.extend(input.chars().flat_map(char::to_uppercase)),
            Op::Lower => out.extend(input.chars().flat_map(char::to_lowercase)),
            // Not streamable: refused when the masker is built.
            Op::Trim(_) | Op::Replace { max_len: None, .. } => out.push_str(input),
            Op::Replace {
                regex,
                replace,
                expand,
                max_len: Some(max_len),
            } => {
                self.buffer.push_str(input);
                let end = self.buffer.len();
                // A match may start at `p` only if it can be decided now:
                // everything it could cover (and the one char after it that
                // an assertion may look at) is already here.
                let decided = if at_end {
                    end + 1
                } else {
                    end.saturating_sub(*max_len)
                };
                let mut pos = self.context_len;
                while pos < end {
                    let Some(captures) = regex.captures_at(&self.buffer, pos) else {
                        break;
                    };
                    let Some(found) = captures.get(0) else {
                        break;
                    };
                    if found.start() >= decided {
                        break;
                    }
                    out.push_str(&self.buffer[pos..found.start()]);
                    if *expand {
                        captures.expand(replace, out);
                    } else {
                        out.push_str(replace);
                    }
                    pos = found.end();
                }
                let mut safe = decided.min(end);
                while !self.buffer.is_char_boundary(safe) {
                    safe -= 1;
                }
                if safe > pos {
                    out.push_str(&self.buffer[pos..safe]);
                    pos = safe;
                }
                // Keep one char before `pos` as context for assertions.
                let keep_from = self.buffer[..pos]
                    .char_indices()
                    .next_back()
                    .map_or(pos, |(i, _)| i);
                self.buffer.drain(..keep_from);
                self.context_len = pos - keep_from;
            }
        }
    }
}

/// The modifiers that apply to one text stream, chained in order.
#[derive(Debug)]
pub(crate) struct StreamChain {
    stages: Vec<(usize, StreamStage)>,
}

impl StreamChain {
    pub(crate) fn new(modifier_indexes: &[usize]) -> Self {
        Self {
            stages: modifier_indexes
                .iter()
                .map(|&i| (i, StreamStage::default()))
                .collect(),
        }
    }

    pub(crate) fn modifier_indexes(&self) -> impl Iterator<Item = usize> + '_ {
        self.stages.iter().map(|(i, _)| *i)
    }

    /// Feeds text through every stage; returns what may be emitted now.
    pub(crate) fn push(&mut self, modifiers: &[Modifier], input: &str) -> String {
        self.run(modifiers, input, false)
    }

    /// Ends the text: returns everything still held back.
    pub(crate) fn finish(&mut self, modifiers: &[Modifier]) -> String {
        self.run(modifiers, "", true)
    }

    fn run(&mut self, modifiers: &[Modifier], input: &str, at_end: bool) -> String {
        let mut text = input.to_owned();
        for (index, stage) in &mut self.stages {
            let Some(modifier) = modifiers.get(*index) else {
                continue;
            };
            let mut out = String::with_capacity(text.len());
            stage.push(modifier, &text, at_end, &mut out);
            text = out;
        }
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{ModifierConfig, ReplaceConfig};
    use proptest::prelude::*;

    fn regexp(find: &str, replace: &str) -> Modifier {
        Modifier::compile(&ModifierConfig::Regexp(ReplaceConfig {
            field: "f".into(),
            find: find.into(),
            replace: replace.into(),
        }))
        .unwrap()
    }

    fn whole(modifiers: &[Modifier], text: &str) -> String {
        modifiers
            .iter()
            .fold(text.to_owned(), |text, m| m.apply(&text).unwrap_or(text))
    }

    fn streamed(modifiers: &[Modifier], pieces: &[&str]) -> String {
        let indexes: Vec<usize> = (0..modifiers.len()).collect();
        let mut chain = StreamChain::new(&indexes);
        let mut out = String::new();
        for piece in pieces {
            out.push_str(&chain.push(modifiers, piece));
        }
        out.push_str(&chain.finish(modifiers));
        out
    }

    const CARD: &str = r"\b(?:\d[ -]?){13,16}\b";

    #[test]
    fn seed_patterns() {
        let mods = [
            regexp(r"\b(\d{13,16})\b", "XXX-CREDIT-CARD-XXX"),
            regexp(r"([\d+\-\s]*)(\d{4})", "XXX-$2"),
        ];
        assert_eq!(whole(&mods, "/__echo/123456789"), "/__echo/XXX-6789");
        assert_eq!(
            whole(&mods[..1], "card 4111111111111111 ok"),
            "card XXX-CREDIT-CARD-XXX ok"
        );
        assert!(mods[0].stream_problem().is_none());
        assert!(mods[1].stream_problem().unwrap().contains("unboundedly"));
    }

    #[test]
    fn expansion_follows_go() {
        let m = regexp(r"(?P<first>\d{4})(\d{4})", "${first}-$2-$2x-$$");
        // `$2x` names a group that does not exist: empty, as in Go.
        assert_eq!(m.apply("12345678").unwrap(), "1234-5678--$");
    }

    #[test]
    fn empty_matching_and_invalid_patterns_are_refused() {
        let config = |find: &str| {
            ModifierConfig::Regexp(ReplaceConfig {
                field: "f".into(),
                find: find.into(),
                replace: String::new(),
            })
        };
        assert!(
            Modifier::compile(&config("a{0,3}"))
                .unwrap_err()
                .1
                .contains("empty")
        );
        assert!(
            Modifier::compile(&config("("))
                .unwrap_err()
                .1
                .contains("invalid")
        );
    }

    #[test]
    fn card_split_across_pieces() {
        let mods = [regexp(CARD, "XXXX")];
        let pieces = ["Your card 4111 11", "11 1111 ", "1111, on file"];
        assert_eq!(streamed(&mods, &pieces), "Your card XXXX, on file");
        assert_eq!(whole(&mods, &pieces.concat()), "Your card XXXX, on file");
        // Nothing of the number leaks before the match is decided.
        let mut chain = StreamChain::new(&[0]);
        let first = chain.push(&mods, pieces[0]);
        let second = chain.push(&mods, pieces[1]);
        assert!(!first.contains("4111") && !second.contains("11"));
    }

    #[test]
    fn hold_back_is_bounded() {
        let mods = [regexp(r"\d{4}", "#")];
        let mut chain = StreamChain::new(&[0]);
        let out = chain.push(&mods, &"a".repeat(100));
        // At most the longest match is held back: four Unicode digits of up
        // to four bytes each.
        assert_eq!(out.len(), 100 - 16);
    }

    fn pattern_set() -> &'static [Vec<Modifier>] {
        static SET: std::sync::OnceLock<Vec<Vec<Modifier>>> = std::sync::OnceLock::new();
        SET.get_or_init(|| {
            vec![
                vec![regexp(CARD, "[card]")],
                vec![
                    regexp(r"\b(\d{13,16})\b", "XXX-CREDIT-CARD-XXX"),
                    regexp(r"(\d{3})-(\d{2})-(\d{4})", "XXX-XX-$3"),
                ],
                vec![regexp(r"^ab|cd$|\bxy\b", "<$0>")],
                vec![regexp(r"(?i)secret|token", "***"), regexp(r"\*\*\*\*", "!")],
                vec![
                    Modifier::compile(&ModifierConfig::Literal(ReplaceConfig {
                        field: "f".into(),
                        find: "é1".into(),
                        replace: "$1".into(),
                    }))
                    .unwrap(),
                    Modifier::compile(&ModifierConfig::Upper(crate::config::FieldConfig {
                        field: "f".into(),
                    }))
                    .unwrap(),
                ],
            ]
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(3000))]
        #[test]
        fn split_equals_whole(
            text in "[0-9 \\-abcdxyé*ESCRTOKN]{0,60}",
            cuts in proptest::collection::vec(0usize..64, 0..8),
            set in 0usize..5,
        ) {
            let mods = &pattern_set()[set];
            let mut points: Vec<usize> = cuts.into_iter().map(|c| c.min(text.len())).collect();
            points.sort_unstable();
            let mut pieces = Vec::new();
            let mut last = 0;
            for p in points {
                let mut p = p.max(last);
                while !text.is_char_boundary(p) { p += 1; }
                pieces.push(&text[last..p]);
                last = p;
            }
            pieces.push(&text[last..]);
            prop_assert_eq!(streamed(mods, &pieces), whole(mods, &text));
        }
    }
}
