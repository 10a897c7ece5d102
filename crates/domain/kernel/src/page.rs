//! Cursor pagination. Ids are UUIDv7, so "items after this id" is a stable, index-backed
//! keyset page that neither skips nor repeats rows when others insert meanwhile.

use serde::Serialize;
use uuid::Uuid;

/// Page size when the client names none.
pub const DEFAULT_PAGE_SIZE: u32 = 20;
/// The largest page a client may ask for.
pub const MAX_PAGE_SIZE: u32 = 100;

/// An opaque position: the id of the last item on the previous page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor(Uuid);

impl Cursor {
    #[must_use]
    pub fn after(id: Uuid) -> Self {
        Self(id)
    }

    #[must_use]
    pub fn id(&self) -> Uuid {
        self.0
    }

    #[must_use]
    pub fn encode(&self) -> String {
        self.0.simple().to_string()
    }

    /// # Errors
    /// `InvalidPage::Cursor` when the text is not a cursor this API handed out.
    pub fn decode(s: &str) -> Result<Self, InvalidPage> {
        if s.len() != 32 {
            return Err(InvalidPage::Cursor);
        }
        Uuid::try_parse(s)
            .map(Self)
            .map_err(|_| InvalidPage::Cursor)
    }
}

/// Why a paging request was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidPage {
    #[error("limit must be between 1 and {MAX_PAGE_SIZE}")]
    Limit,
    #[error("cursor is not valid")]
    Cursor,
}

/// What page the client wants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageRequest {
    limit: u32,
    after: Option<Cursor>,
}

impl Default for PageRequest {
    fn default() -> Self {
        Self {
            limit: DEFAULT_PAGE_SIZE,
            after: None,
        }
    }
}

impl PageRequest {
    /// # Errors
    /// When `limit` is 0 or above [`MAX_PAGE_SIZE`], or the cursor is malformed.
    pub fn new(limit: Option<u32>, cursor: Option<&str>) -> Result<Self, InvalidPage> {
        let limit = limit.unwrap_or(DEFAULT_PAGE_SIZE);
        if limit == 0 || limit > MAX_PAGE_SIZE {
            return Err(InvalidPage::Limit);
        }
        let after = cursor
            .filter(|c| !c.is_empty())
            .map(Cursor::decode)
            .transpose()?;
        Ok(Self { limit, after })
    }

    #[must_use]
    pub fn limit(&self) -> u32 {
        self.limit
    }

    #[must_use]
    pub fn after(&self) -> Option<Cursor> {
        self.after
    }

    /// Turns `limit + 1` fetched rows into a page: the extra row only says there is more.
    pub fn finish<T>(&self, mut rows: Vec<T>, id_of: impl Fn(&T) -> Uuid) -> Page<T> {
        let limit = self.limit as usize;
        let next_cursor = if rows.len() > limit {
            rows.truncate(limit);
            rows.last().map(|last| Cursor::after(id_of(last)).encode())
        } else {
            None
        };
        Page {
            items: rows,
            next_cursor,
        }
    }
}

/// One page of results, oldest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next_cursor: Option<String>,
}

impl<T> Page<T> {
    pub fn map<U>(self, f: impl FnMut(T) -> U) -> Page<U> {
        Page {
            items: self.items.into_iter().map(f).collect(),
            next_cursor: self.next_cursor,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_page_larger_than_the_maximum_is_refused() {
        assert_eq!(
            PageRequest::new(Some(MAX_PAGE_SIZE + 1), None),
            Err(InvalidPage::Limit)
        );
        assert_eq!(PageRequest::new(Some(0), None), Err(InvalidPage::Limit));
    }

    #[test]
    fn a_garbled_cursor_is_refused() {
        assert_eq!(
            PageRequest::new(None, Some("nope")),
            Err(InvalidPage::Cursor)
        );
    }

    #[test]
    fn the_extra_row_becomes_the_next_cursor() {
        let req = PageRequest::new(Some(2), None).unwrap();
        let ids: Vec<Uuid> = (0..3).map(|_| Uuid::now_v7()).collect();
        let page = req.finish(ids.clone(), |u| *u);
        assert_eq!(page.items.len(), 2);
        let next = page.next_cursor.unwrap();
        assert_eq!(Cursor::decode(&next).unwrap().id(), ids[1]);
    }
}
