//! `pinproxy status`: every sidecar in the cluster and whether it runs the
//! pinset its Secret holds (see [`crate::k8s::status`]).

use std::sync::Arc;

use crate::k8s::status::{self, Api, Output, StatusArgs};

use super::Error;

pub fn status(args: &StatusArgs) -> Result<(), Error> {
    let cfg = status::kubeconfig_load(args.kubeconfig.as_deref(), args.context.as_deref())
        .map_err(Error::failed)?;
    let api = Arc::new(Api::new(cfg).map_err(Error::failed)?);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    // The message may carry what the API server or a pod said: escaped
    // as the report is.
    let report = rt
        .block_on(status::collect(api, args.namespace.as_deref()))
        .map_err(|e| Error::failed(status::visible(&e.to_string()).into_owned()))?;
    match args.output {
        Output::Text => out!("{}", status::render_text(&report)),
        Output::Json => outln!("{}", status::render_json(&report)),
    }
    Ok(())
}
