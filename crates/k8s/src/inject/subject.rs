//! The template being injected: what errors and warnings point at.

use super::{InjectError, TemplateRef, Warning};

/// The template being injected, for errors and warnings.
pub(super) struct Subject<'a> {
    pub(super) index: usize,
    pub(super) kind: &'a str,
    pub(super) name: String,
}

impl Subject<'_> {
    pub(super) fn template(&self) -> Box<TemplateRef> {
        Box::new(TemplateRef {
            index: self.index,
            kind: self.kind.to_string(),
            name: self.name.clone(),
        })
    }

    pub(super) fn warning(&self, message: &str) -> Warning {
        Warning {
            index: self.index,
            kind: self.kind.to_string(),
            name: self.name.clone(),
            message: message.to_string(),
        }
    }

    pub(super) fn malformed(&self, reason: &str) -> InjectError {
        InjectError::Malformed {
            index: self.index,
            kind: self.kind.to_string(),
            name: self.name.clone(),
            reason: reason.to_string(),
        }
    }
}
