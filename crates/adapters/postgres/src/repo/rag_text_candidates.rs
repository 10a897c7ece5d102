//! Which of a tenant's chunks can match a full-text query, worked out in process.
//!
//! The vector replica (`rag_vector_cache`) also keeps, per tenant, an inverted index of
//! the lexemes Postgres stored for each chunk (`tsvector_to_array(tsv)`). For a query,
//! Postgres parses it (`websearch_to_tsquery('simple', …)::text`, the same call the
//! direct search makes) and this module reads that text and walks the index: a lexeme
//! gives the chunks that hold it, `&` and `<N>` (phrases need every word) intersect,
//! `|` unites, and `!` or a prefix match can only be answered by "any chunk". The result
//! is a superset of the chunks `tsv @@ query` accepts — never a chunk fewer — which
//! Postgres then confirms and ranks by primary key, so the answer is exactly the direct
//! search's while the tenant's other rows are never read.

use std::collections::HashMap;
use trellis_rag::index::ChunkId;

/// A parsed `tsquery`, reduced to what the candidate walk needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Query {
    Lexeme(String),
    /// Matches more than one lexeme (`'foo':*`) or the absence of one (`!…`): any
    /// chunk may match.
    Any,
    /// `&`, or a phrase (`<->`, `<N>`), which needs both sides present.
    Both(Box<Query>, Box<Query>),
    Either(Box<Query>, Box<Query>),
}

/// Text Postgres printed that this parser does not understand. The caller then uses the
/// direct search, so a surprise costs speed, never results.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Unparsed(pub(crate) String);

/// Parses `tsquery` output (`'a' & ( 'b' | !'c' ) <-> 'd':*`). `None` for the empty
/// query (only punctuation or nothing was asked), which matches nothing.
pub(crate) fn parse(text: &str) -> Result<Option<Query>, Unparsed> {
    let mut p = Parser {
        chars: text.chars().collect(),
        at: 0,
    };
    p.skip_spaces();
    if p.at == p.chars.len() {
        return Ok(None);
    }
    let query = p.either()?;
    p.skip_spaces();
    if p.at != p.chars.len() {
        return Err(p.error("trailing text"));
    }
    Ok(Some(query))
}

struct Parser {
    chars: Vec<char>,
    at: usize,
}

impl Parser {
    fn error(&self, what: &str) -> Unparsed {
        Unparsed(format!("{what} at character {}", self.at))
    }

    fn peek(&self) -> Option<char> {
        self.chars.get(self.at).copied()
    }

    fn skip_spaces(&mut self) {
        while self.peek().is_some_and(char::is_whitespace) {
            self.at += 1;
        }
    }

    /// `|` binds loosest.
    fn either(&mut self) -> Result<Query, Unparsed> {
        let mut left = self.both()?;
        loop {
            self.skip_spaces();
            if self.peek() != Some('|') {
                return Ok(left);
            }
            self.at += 1;
            let right = self.both()?;
            left = Query::Either(Box::new(left), Box::new(right));
        }
    }

    /// `&` next.
    fn both(&mut self) -> Result<Query, Unparsed> {
        let mut left = self.phrase()?;
        loop {
            self.skip_spaces();
            if self.peek() != Some('&') {
                return Ok(left);
            }
            self.at += 1;
            let right = self.phrase()?;
            left = Query::Both(Box::new(left), Box::new(right));
        }
    }

    /// `<->` and `<N>` bind tighter than `&`.
    fn phrase(&mut self) -> Result<Query, Unparsed> {
        let mut left = self.unary()?;
        loop {
            self.skip_spaces();
            if self.peek() != Some('<') {
                return Ok(left);
            }
            self.at += 1;
            while self.peek().is_some_and(|c| c == '-' || c.is_ascii_digit()) {
                self.at += 1;
            }
            if self.peek() != Some('>') {
                return Err(self.error("unclosed phrase operator"));
            }
            self.at += 1;
            let right = self.unary()?;
            left = Query::Both(Box::new(left), Box::new(right));
        }
    }

    fn unary(&mut self) -> Result<Query, Unparsed> {
        self.skip_spaces();
        match self.peek() {
            Some('!') => {
                self.at += 1;
                // What is under the negation does not matter: any chunk may lack it.
                self.unary()?;
                Ok(Query::Any)
            }
            Some('(') => {
                self.at += 1;
                let inner = self.either()?;
                self.skip_spaces();
                if self.peek() != Some(')') {
                    return Err(self.error("unclosed parenthesis"));
                }
                self.at += 1;
                Ok(inner)
            }
            Some('\'') => self.operand(),
            _ => Err(self.error("expected a lexeme")),
        }
    }

    /// `'lexeme'`, with `''` and `\\` standing for `'` and `\`, then optional
    /// `:weights` and `*` (prefix).
    fn operand(&mut self) -> Result<Query, Unparsed> {
        self.at += 1;
        let mut lexeme = String::new();
        loop {
            match self.peek() {
                None => return Err(self.error("unclosed lexeme")),
                Some('\'') if self.chars.get(self.at + 1) == Some(&'\'') => {
                    lexeme.push('\'');
                    self.at += 2;
                }
                Some('\'') => {
                    self.at += 1;
                    break;
                }
                Some('\\') => {
                    let Some(next) = self.chars.get(self.at + 1).copied() else {
                        return Err(self.error("dangling escape"));
                    };
                    lexeme.push(next);
                    self.at += 2;
                }
                Some(c) => {
                    lexeme.push(c);
                    self.at += 1;
                }
            }
        }
        let mut prefix = false;
        if self.peek() == Some(':') {
            self.at += 1;
            while let Some(c) = self.peek() {
                match c {
                    '*' => prefix = true,
                    'A'..='D' | 'a'..='d' => {}
                    _ => break,
                }
                self.at += 1;
            }
        }
        Ok(if prefix {
            Query::Any
        } else {
            Query::Lexeme(lexeme)
        })
    }
}

/// Chunks that may match: all of them, or these (sorted slot numbers).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Candidates {
    All,
    Some(Vec<u32>),
}

/// One tenant's inverted index: chunk slots by lexeme.
#[derive(Debug, Default)]
pub(crate) struct Postings {
    chunks: Vec<ChunkId>,
    slots: HashMap<ChunkId, u32>,
    by_lexeme: HashMap<Box<str>, Vec<u32>>,
}

impl Postings {
    /// Adds a chunk's lexemes; a chunk already held is left as it is (the replica only
    /// adds rows incrementally, and a changed row reloads the tenant).
    pub(crate) fn add(&mut self, chunk: ChunkId, lexemes: &[String]) {
        if self.slots.contains_key(&chunk) {
            return;
        }
        let Ok(slot) = u32::try_from(self.chunks.len()) else {
            return;
        };
        self.chunks.push(chunk);
        self.slots.insert(chunk, slot);
        for lexeme in lexemes {
            let list = self.by_lexeme.entry(lexeme.as_str().into()).or_default();
            // Slots only grow and a chunk's lexemes are distinct, so lists stay sorted.
            if list.last() != Some(&slot) {
                list.push(slot);
            }
        }
    }

    pub(crate) fn clear(&mut self) {
        *self = Self::default();
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.chunks.len()
    }

    /// The chunks `query` may match.
    pub(crate) fn candidates(&self, query: &Query) -> Candidates {
        match query {
            Query::Any => Candidates::All,
            Query::Lexeme(l) => {
                Candidates::Some(self.by_lexeme.get(l.as_str()).cloned().unwrap_or_default())
            }
            Query::Both(a, b) => match (self.candidates(a), self.candidates(b)) {
                (Candidates::All, other) | (other, Candidates::All) => other,
                (Candidates::Some(x), Candidates::Some(y)) => Candidates::Some(intersect(&x, &y)),
            },
            Query::Either(a, b) => match (self.candidates(a), self.candidates(b)) {
                (Candidates::All, _) | (_, Candidates::All) => Candidates::All,
                (Candidates::Some(x), Candidates::Some(y)) => Candidates::Some(unite(&x, &y)),
            },
        }
    }

    /// The chunk ids of slots.
    pub(crate) fn ids(&self, slots: &[u32]) -> Vec<ChunkId> {
        slots
            .iter()
            .filter_map(|s| self.chunks.get(*s as usize).copied())
            .collect()
    }
}

fn intersect(a: &[u32], b: &[u32]) -> Vec<u32> {
    let (mut i, mut j, mut out) = (0, 0, Vec::new());
    while i < a.len() && j < b.len() {
        match a[i].cmp(&b[j]) {
            std::cmp::Ordering::Less => i += 1,
            std::cmp::Ordering::Greater => j += 1,
            std::cmp::Ordering::Equal => {
                out.push(a[i]);
                i += 1;
                j += 1;
            }
        }
    }
    out
}

fn unite(a: &[u32], b: &[u32]) -> Vec<u32> {
    let (mut i, mut j, mut out) = (0, 0, Vec::with_capacity(a.len().max(b.len())));
    while i < a.len() || j < b.len() {
        let next = match (a.get(i), b.get(j)) {
            (Some(x), Some(y)) if x == y => {
                i += 1;
                j += 1;
                *x
            }
            (Some(x), Some(y)) if x < y => {
                i += 1;
                *x
            }
            (_, Some(y)) => {
                j += 1;
                *y
            }
            (Some(x), None) => {
                i += 1;
                *x
            }
            (None, None) => break,
        };
        out.push(next);
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn lex(s: &str) -> Box<Query> {
        Box::new(Query::Lexeme(s.into()))
    }

    #[test]
    fn websearch_output_parses_with_phrases_binding_tighter_than_and_and_or_loosest() {
        // What Postgres prints for `a or b c or -d "e f"`.
        let q = parse("'a' | 'b' & 'c' | !'d' & 'e' <-> 'f'")
            .unwrap()
            .unwrap();
        assert_eq!(
            q,
            Query::Either(
                Box::new(Query::Either(
                    lex("a"),
                    Box::new(Query::Both(lex("b"), lex("c")))
                )),
                Box::new(Query::Both(
                    Box::new(Query::Any),
                    Box::new(Query::Both(lex("e"), lex("f")))
                )),
            )
        );
    }

    #[test]
    fn quotes_and_backslashes_inside_lexemes_are_unescaped() {
        assert_eq!(parse(r"'a''b'").unwrap(), Some(Query::Lexeme("a'b".into())));
        assert_eq!(
            parse(r"'c\\d'").unwrap(),
            Some(Query::Lexeme(r"c\d".into()))
        );
        assert_eq!(parse("'ünï'").unwrap(), Some(Query::Lexeme("ünï".into())));
    }

    #[test]
    fn prefixes_negations_and_groups_may_match_any_chunk() {
        assert_eq!(parse("'foo':*").unwrap(), Some(Query::Any));
        assert_eq!(
            parse("'foo':AB").unwrap(),
            Some(Query::Lexeme("foo".into()))
        );
        assert_eq!(parse("!( 'g' <-> 'h' )").unwrap(), Some(Query::Any));
        assert_eq!(
            parse("'g' <2> ( 'h' | 'i' )").unwrap(),
            Some(Query::Both(
                lex("g"),
                Box::new(Query::Either(lex("h"), lex("i")))
            ))
        );
    }

    #[test]
    fn an_empty_query_is_none_and_garbage_is_refused() {
        assert_eq!(parse("").unwrap(), None);
        assert_eq!(parse("   ").unwrap(), None);
        for bad in ["'open", "'a' &", "( 'a'", "'a' 'b'", "'a' <- 'b'", "x"] {
            assert!(parse(bad).is_err(), "{bad} parsed");
        }
    }

    fn postings() -> (Postings, Vec<ChunkId>) {
        let ids: Vec<ChunkId> = (0..4).map(|_| ChunkId::new()).collect();
        let mut p = Postings::default();
        let words = |s: &str| s.split(' ').map(String::from).collect::<Vec<_>>();
        p.add(ids[0], &words("reset your password"));
        p.add(ids[1], &words("password rules"));
        p.add(ids[2], &words("reset the router"));
        p.add(ids[3], &words("billing"));
        (p, ids)
    }

    fn matching(p: &Postings, query: &str) -> Candidates {
        p.candidates(&parse(query).unwrap().unwrap())
    }

    #[test]
    fn and_and_phrases_intersect_and_or_unites() {
        let (p, ids) = postings();
        let Candidates::Some(both) = matching(&p, "'reset' & 'password'") else {
            panic!("expected candidates")
        };
        assert_eq!(p.ids(&both), vec![ids[0]]);
        let Candidates::Some(phrase) = matching(&p, "'reset' <-> 'password'") else {
            panic!("expected candidates")
        };
        assert_eq!(p.ids(&phrase), vec![ids[0]]);
        let Candidates::Some(either) = matching(&p, "'billing' | 'router' | 'rules'") else {
            panic!("expected candidates")
        };
        assert_eq!(p.ids(&either), vec![ids[1], ids[2], ids[3]]);
        assert_eq!(matching(&p, "'nowhere'"), Candidates::Some(vec![]));
    }

    #[test]
    fn a_negation_narrows_nothing_and_alone_needs_every_chunk() {
        let (p, ids) = postings();
        let Candidates::Some(c) = matching(&p, "'reset' & !'router'") else {
            panic!("expected candidates")
        };
        // A superset: Postgres drops the router chunk when it confirms.
        assert_eq!(p.ids(&c), vec![ids[0], ids[2]]);
        assert_eq!(matching(&p, "!'router'"), Candidates::All);
        assert_eq!(matching(&p, "'billing' | !'router'"), Candidates::All);
    }

    #[test]
    fn a_chunk_added_twice_is_held_once() {
        let (mut p, ids) = postings();
        p.add(ids[1], &["password".into(), "extra".into()]);
        assert_eq!(p.len(), 4);
        assert_eq!(matching(&p, "'extra'"), Candidates::Some(vec![]));
        p.clear();
        assert_eq!(p.len(), 0);
    }
}
