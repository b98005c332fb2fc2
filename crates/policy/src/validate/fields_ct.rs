//! Validating `ct:` (docs/reference.md, "Certificate Transparency and
//! OCSP"), in `defaults:` and per entry.
//!
//! Certificate Transparency is about publicly-trusted certificates: CAs in
//! Mozilla's (and Chrome's) programmes log what they issue, private CAs
//! mostly do not, and a pin-only entry has no validated path to judge. So
//! `enforce` under pin-only is refused at load (there is nothing it could
//! judge), and `enforce` or `report` under a private CA bundle loads with a
//! warning: it only makes sense with a log list (`--ct-log-list`) naming
//! the private CA's own logs, otherwise every connection is refused.

use super::{Entry, Trust, Validator};
use crate::{CtMode, Unlisted};

const PRIVATE_ENFORCE: &str = "enforce under a private CA bundle refuses every certificate \
                               not logged in a log on the CT log list: a private CA's \
                               certificates usually are not (CT covers publicly-trusted CAs); \
                               keep it only with a --ct-log-list naming the CA's own logs";
const UNLISTED_TUNNELS: &str = "enforce does not reach most unlisted traffic: a CONNECT \
                                (HTTPS_PROXY) to an unlisted host and a transparent splice \
                                are byte tunnels, judged by the app's own TLS, not by \
                                pinproxy; only absolute-form https:// requests, whose TLS \
                                pinproxy makes, are judged. List the hosts CT must hold for";
const PIN_ONLY: &str = "enforce needs a validated path — a pin-only entry has no validated \
                        path whose leaf CT could judge; the pin is the trust here";

// === impl Validator ===

impl Validator<'_> {
    /// `defaults.ct`: the mode unlisted hosts get where pinproxy makes
    /// their TLS (validated under `defaults.trust`), and what webpki
    /// entries inherit.
    pub(super) fn ct_defaults(
        &mut self,
        written: Option<CtMode>,
        trust: &Trust,
        unlisted: Unlisted,
    ) -> CtMode {
        let line = self.lines.default_field("ct");
        if written == Some(CtMode::Enforce) && unlisted != Unlisted::Deny {
            self.warn(None, Some("defaults.ct"), line, UNLISTED_TUNNELS.into());
        }
        match (written, trust) {
            (Some(CtMode::Enforce), Trust::Bundle { .. }) => {
                self.warn(
                    None,
                    Some("defaults.ct"),
                    line,
                    format!(
                        "{PRIVATE_ENFORCE} (defaults.trust is a CA bundle: to enforce CT on \
                         publicly-trusted hosts, set ct: enforce on their trust: webpki entries)"
                    ),
                );
                CtMode::Enforce
            }
            (Some(CtMode::Report), Trust::Bundle { .. }) => {
                self.warn(
                    None,
                    Some("defaults.ct"),
                    line,
                    "report under a private CA bundle (defaults.trust): its certificates are \
                     usually not logged, so unlisted handshakes count as `none` unless \
                     --ct-log-list names the CA's own logs"
                        .into(),
                );
                CtMode::Report
            }
            _ => CtMode::default_for(trust, written),
        }
    }

    /// An entry's `ct:`, or what it inherits.
    pub(super) fn ct_entry(
        &mut self,
        e: &Entry<'_>,
        written: Option<CtMode>,
        trust: &Trust,
        defaults_written: Option<CtMode>,
    ) -> CtMode {
        let Some(mode) = written else {
            return CtMode::default_for(trust, defaults_written);
        };
        match (mode, trust) {
            (CtMode::Enforce, Trust::Bundle { .. }) => self.field_warn(e, "ct", PRIVATE_ENFORCE),
            (CtMode::Enforce, Trust::PinOnly) => self.field_err(e, "ct", PIN_ONLY),
            (CtMode::Report, Trust::Bundle { .. }) => self.field_warn(
                e,
                "ct",
                "report under a private CA bundle: its certificates are usually not logged, so \
                 handshakes count as `none` unless --ct-log-list names the CA's own logs",
            ),
            (CtMode::Report, Trust::PinOnly) => self.field_warn(
                e,
                "ct",
                "report under pin-only is never evaluated (no validated path); it is ignored",
            ),
            _ => {}
        }
        mode
    }
}
