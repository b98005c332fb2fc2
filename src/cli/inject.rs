//! `pinproxy inject`: add the sidecar to a manifest stream (see
//! [`crate::k8s::inject`]).

use super::Error;

pub fn inject(args: &crate::k8s::inject::InjectArgs) -> Result<(), Error> {
    // A reader that has gone (`inject | kubectl apply -f -` when kubectl
    // fails) ends the command as every command's output does (super::out).
    crate::k8s::inject::run(args, &mut super::out::Stdout::lock()).map_err(Error::failed)
}
