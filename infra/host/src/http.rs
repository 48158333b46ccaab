//! Outgoing `wasi:http`: allowed only to the hosts a component lists in
//! `allowed_outbound_hosts`; anything else is `HTTP-request-denied` before a socket
//! is opened.

use std::sync::Arc;

use wasmtime_wasi_http::{Error, RequestOptions, WasiBody, WasiHttpHooks};

use crate::outbound::AllowedHosts;

/// The interface's state in one instance: which component it is, and where it may
/// send requests.
pub struct OutgoingHooks {
    component: Arc<str>,
    allowed: Arc<AllowedHosts>,
}

impl OutgoingHooks {
    pub fn new(component: Arc<str>, allowed: Arc<AllowedHosts>) -> OutgoingHooks {
        OutgoingHooks { component, allowed }
    }
}

type SendResult = wasmtime_wasi_http::Result<(
    http::Response<WasiBody>,
    Box<dyn Future<Output = wasmtime_wasi_http::Result<()>> + Send>,
)>;

impl WasiHttpHooks for OutgoingHooks {
    fn send_request(
        &mut self,
        request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
        fut: Box<dyn Future<Output = wasmtime_wasi_http::Result<()>> + Send>,
    ) -> Box<dyn Future<Output = SendResult> + Send> {
        let uri = request.uri();
        let scheme = uri.scheme_str().unwrap_or("https").to_string();
        let host = uri.host().unwrap_or("").to_string();
        let port = uri.port_u16();
        let allowed = self.allowed.allows(&scheme, &host, port);
        if !allowed {
            tracing::info!(
                component = %self.component,
                "outgoing request to {scheme}://{host} denied: not in allowed_outbound_hosts"
            );
            return Box::new(async { Err(Error::HttpRequestDenied) });
        }
        drop(fut);
        Box::new(async move {
            use http_body_util::BodyExt;
            let (res, io) = wasmtime_wasi_http::default_send_request(request, options).await?;
            Ok((
                res.map(BodyExt::boxed_unsync),
                Box::new(io) as Box<dyn Future<Output = _> + Send>,
            ))
        })
    }
}
