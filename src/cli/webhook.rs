//! `pinproxy webhook`: serve the mutating admission webhook (see
//! [`crate::k8s::webhook`]).

use super::{init_tracing, Error, LogFormat};

pub fn webhook(args: &crate::k8s::webhook::WebhookArgs) -> Result<(), Error> {
    init_tracing(LogFormat::Json);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let serial_of: crate::k8s::webhook::SerialReader =
        std::sync::Arc::new(|bytes: &[u8]| Ok(crate::policy::load::serial(bytes)?));
    rt.block_on(crate::k8s::webhook::run(args, serial_of))
        .map_err(Error::failed)
}
