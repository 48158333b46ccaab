//! What every Toaster component shares on top of spin-sdk: turning outcomes into HTTP
//! responses. Domain rules live in `toaster-core`; this crate owns only the platform edge.

pub mod respond;
