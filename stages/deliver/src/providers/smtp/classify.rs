//! SMTP replies → what they mean for the delivery. A relay answers every step with a code: 5xx
//! is permanent (`smtp_550`: no such mailbox, `smtp_554` refused); 4xx is retried (`smtp_421`
//! the service is closing, `smtp_451` a local error, `smtp_452` storage full). Without a reply:
//! a refused connection is an outage that may fail over; a timeout or a connection lost
//! mid-session is retried on the same relay (the message may have been taken).

use lettre::transport::smtp::Error;

use crate::ProviderError;
use crate::providers::Class;

/// What a failed send means.
pub fn classify(error: &Error) -> ProviderError {
    let detail = crate::http::causes(error);
    if let Some(code) = error.status() {
        let code = format!("smtp_{code}");
        let class = if error.is_permanent() { Class::Permanent } else { Class::Outage };
        return ProviderError::new(class, code, format!("the relay answered: {detail}"));
    }
    if error.is_timeout() {
        return ProviderError::outage("timeout", format!("the relay did not answer in time: {detail}"));
    }
    if error.is_tls() {
        return ProviderError::outage("tls_error", format!("TLS with the relay failed: {detail}"));
    }
    if refused(error) {
        return ProviderError::outage("connect_error", format!("cannot connect to the relay: {detail}"));
    }
    ProviderError::outage("transport_error", format!("the connection to the relay failed: {detail}"))
}

/// Whether the relay refused the connection: nothing was sent.
fn refused(error: &Error) -> bool {
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        if let Some(io) = cause.downcast_ref::<std::io::Error>() {
            return matches!(io.kind(), std::io::ErrorKind::ConnectionRefused | std::io::ErrorKind::AddrNotAvailable);
        }
        source = cause.source();
    }
    false
}
