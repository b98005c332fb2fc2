//! Chrome's v3 log list as JSON (`log_list_schema.json` v3), field for
//! field. Unknown fields are ignored, as a v3 reader must: Chrome adds
//! optional fields within a schema version. These types are converted into
//! the domain types of [`super`] by one validating step.

use serde::Deserialize;

#[derive(Deserialize)]
pub(super) struct List {
    pub version: Option<String>,
    pub log_list_timestamp: String,
    #[serde(default)]
    pub is_all_logs: bool,
    pub operators: Vec<Operator>,
}

#[derive(Deserialize)]
pub(super) struct Operator {
    pub name: String,
    #[serde(default)]
    pub email: Vec<String>,
    #[serde(default)]
    pub logs: Vec<Log>,
    /// Static CT API logs (c2sp.org/static-ct-api): same SCTs, other URLs.
    #[serde(default)]
    pub tiled_logs: Vec<Log>,
}

#[derive(Deserialize)]
pub(super) struct Log {
    pub description: Option<String>,
    pub log_id: String,
    pub key: String,
    /// RFC 6962 logs have `url`; tiled logs `submission_url` and
    /// `monitoring_url`.
    pub url: Option<String>,
    pub submission_url: Option<String>,
    pub monitoring_url: Option<String>,
    pub mmd: Option<u64>,
    pub state: Option<State>,
    pub temporal_interval: Option<TemporalInterval>,
    pub log_type: Option<String>,
    #[serde(default)]
    pub previous_operators: Vec<PreviousOperator>,
}

/// Exactly one of these is present in a valid list.
#[derive(Deserialize)]
pub(super) struct State {
    pub pending: Option<Since>,
    pub qualified: Option<Since>,
    pub usable: Option<Since>,
    /// Also carries `final_tree_head`, which the policy does not use.
    pub readonly: Option<Since>,
    pub retired: Option<Since>,
    pub rejected: Option<Since>,
}

#[derive(Deserialize)]
pub(super) struct Since {
    pub timestamp: String,
}

#[derive(Deserialize)]
pub(super) struct TemporalInterval {
    pub start_inclusive: String,
    pub end_exclusive: String,
}

#[derive(Deserialize)]
pub(super) struct PreviousOperator {
    pub name: String,
    pub end_time: String,
}
