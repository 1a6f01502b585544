//! Lines entered before, newest last, walked with Up and Down.

use alloc::collections::VecDeque;
use alloc::string::String;

/// A bounded list of entered lines and a position while browsing it.
#[derive(Clone, Debug)]
pub struct History {
    lines: VecDeque<String>,
    capacity: usize,
    /// Index into `lines` of the entry shown now; `None` = the user's own
    /// line (the draft).
    browsing: Option<usize>,
    /// What the user had typed before pressing Up, given back by Down.
    draft: String,
}

impl History {
    pub fn new(capacity: usize) -> Self {
        Self { lines: VecDeque::new(), capacity, browsing: None, draft: String::new() }
    }

    /// Remembers an entered line. Blank lines and a repeat of the newest
    /// entry are not kept (as in bash's `ignoreboth`, minus the space rule).
    pub fn push(&mut self, line: &str) {
        self.stop_browsing();
        if self.capacity == 0
            || line.trim().is_empty()
            || self.lines.back().is_some_and(|l| l == line)
        {
            return;
        }
        if self.lines.len() == self.capacity {
            self.lines.pop_front();
        }
        self.lines.push_back(String::from(line));
    }

    /// Forgets the browsing position (the line was entered or cancelled).
    pub fn stop_browsing(&mut self) {
        self.browsing = None;
        self.draft.clear();
    }

    /// The entry before the one shown, saving `current` as the draft when
    /// browsing starts; `None` at the oldest entry.
    pub fn older(&mut self, current: &str) -> Option<&str> {
        let index = match self.browsing {
            None if self.lines.is_empty() => return None,
            None => {
                self.draft = String::from(current);
                self.lines.len() - 1
            }
            Some(0) => return None,
            Some(index) => index - 1,
        };
        self.browsing = Some(index);
        Some(&self.lines[index])
    }

    /// The entry after the one shown, or the draft after the newest entry;
    /// `None` when not browsing.
    pub fn newer(&mut self) -> Option<&str> {
        let index = self.browsing?;
        if index + 1 < self.lines.len() {
            self.browsing = Some(index + 1);
            Some(&self.lines[index + 1])
        } else {
            self.browsing = None;
            Some(&self.draft)
        }
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.lines.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn walks_back_and_forth_and_returns_the_draft() {
        let mut history = History::new(8);
        history.push("one");
        history.push("two");
        assert_eq!(history.older("dra"), Some("two"));
        assert_eq!(history.older("ignored"), Some("one"));
        assert_eq!(history.older("ignored"), None);
        assert_eq!(history.newer(), Some("two"));
        assert_eq!(history.newer(), Some("dra"));
        assert_eq!(history.newer(), None);
    }

    #[test]
    fn skips_blanks_and_repeats_and_drops_the_oldest() {
        let mut history = History::new(2);
        for line in ["a", "a", "  ", "", "b", "c"] {
            history.push(line);
        }
        assert_eq!(history.len(), 2);
        assert_eq!(history.older(""), Some("c"));
        assert_eq!(history.older(""), Some("b"));
        assert_eq!(history.older(""), None);
        assert!(History::new(0).older("x").is_none());
    }
}
