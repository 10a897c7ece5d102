//! Search-box text shared by the domains that search words (message and memory
//! search in content, the full-text half of retrieval in rag), so every adapter reads
//! a query the same way.
//!
//! Queries reach the stores in web-search syntax (Postgres' `websearch_to_tsquery`):
//! every word is required, `or` between two words makes either enough, quotes ask for a
//! phrase and `-word` excludes a word. A question typed into a chat is not written in
//! that syntax — "how long do refunds take?" would need a passage to hold all five
//! words — so where a query is a question, [`any_word_query`] rewrites it to match any
//! of its words.

/// At most this many distinct words of a query are searched for.
pub const MAX_SEARCH_WORDS: usize = 32;

/// A query as web-search syntax that matches *any* of its words (letters and digits),
/// lower-cased, deduplicated and joined by `or`; the more of them a text holds, the
/// higher it ranks. `None` when the query has no words (nothing can match).
///
/// Only letters and digits reach the parser, so quotes and `-` keep no special
/// meaning; the word `or` itself is dropped, since it would read as the operator.
#[must_use]
pub fn any_word_query(query: &str) -> Option<String> {
    let mut words: Vec<String> = Vec::new();
    for word in query
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
    {
        if word != "or" && !words.contains(&word) {
            words.push(word);
            if words.len() == MAX_SEARCH_WORDS {
                break;
            }
        }
    }
    (!words.is_empty()).then(|| words.join(" or "))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn a_query_becomes_its_distinct_words_ored() {
        assert_eq!(
            any_word_query("Is the user vegetarian? Vegetarian!").as_deref(),
            Some("is or the or user or vegetarian")
        );
        assert_eq!(
            any_word_query("\"refund\" -window").as_deref(),
            Some("refund or window")
        );
        assert_eq!(
            any_word_query("this or that").as_deref(),
            Some("this or that")
        );
    }

    #[test]
    fn a_query_without_words_matches_nothing() {
        assert_eq!(any_word_query("?! -- \"\""), None);
        assert_eq!(any_word_query("or"), None);
    }

    #[test]
    fn only_the_first_distinct_words_are_searched_for() {
        let long: String = (0..100).map(|i| format!("w{i} ")).collect();
        let query = any_word_query(&long).unwrap();
        assert_eq!(query.split(" or ").count(), MAX_SEARCH_WORDS);
    }
}
