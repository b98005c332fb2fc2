//! `pinproxy inject`: add the sidecar to a manifest stream (see
//! [`crate::k8s::inject`]).

use super::Error;

pub fn inject(args: &crate::k8s::inject::InjectArgs) -> Result<(), Error> {
    crate::k8s::inject::run(args).map_err(Error::failed)
}
