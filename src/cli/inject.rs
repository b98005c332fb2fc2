//! `pinproxy inject`: add the sidecar to a manifest stream (see
//! [`crate::k8s::inject`]).

use super::Error;

pub fn inject(args: &crate::k8s::inject::InjectArgs) -> Result<(), Error> {
    crate::k8s::inject::run(args).map_err(|e| {
        // `inject | kubectl apply -f -` whose reader stopped: as every
        // command's output (super::out).
        if let crate::k8s::inject::InjectError::Write(io) = &e {
            super::out::end_if_reader_gone(io);
        }
        Error::failed(e)
    })
}
