//! Delivery channels.

use std::fmt;
use std::str::FromStr;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A way of reaching a person. Each channel has its own deliver consumer, so a provider outage
/// on one channel never stalls the others.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Channel {
    /// Mobile push: APNs for iOS devices, FCM for Android devices.
    Push,
    /// Text message.
    Sms,
    /// Voice call.
    Voice,
    /// E-mail.
    Email,
    /// Browser push (RFC 8030/8291/8292).
    WebPush,
    /// HMAC-signed HTTP callback.
    Webhook,
    /// In-app inbox message, published on `herald.inbox.<tenant>.<user>`.
    InApp,
    /// The sandbox channel: records each delivery as a file. Needs no credentials.
    Log,
}

impl Channel {
    /// Every channel, in a stable order.
    pub const ALL: [Channel; 8] =
        [Channel::Push, Channel::Sms, Channel::Voice, Channel::Email, Channel::WebPush, Channel::Webhook, Channel::InApp, Channel::Log];

    /// The channel's name on the wire and in subjects.
    pub fn as_str(self) -> &'static str {
        match self {
            Channel::Push => "push",
            Channel::Sms => "sms",
            Channel::Voice => "voice",
            Channel::Email => "email",
            Channel::WebPush => "web_push",
            Channel::Webhook => "webhook",
            Channel::InApp => "in_app",
            Channel::Log => "log",
        }
    }
}

impl fmt::Display for Channel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The error for a channel name that does not exist.
#[derive(Debug, Clone, thiserror::Error)]
#[error("unknown channel `{0}`: expected one of push, sms, voice, email, web_push, webhook, in_app, log")]
pub struct UnknownChannel(pub String);

impl FromStr for Channel {
    type Err = UnknownChannel;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Channel::ALL.into_iter().find(|c| c.as_str() == s).ok_or_else(|| UnknownChannel(s.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_through_serde_and_from_str() {
        for channel in Channel::ALL {
            let json = serde_json::to_string(&channel).unwrap();
            assert_eq!(json, format!("\"{}\"", channel.as_str()));
            assert_eq!(channel.as_str().parse::<Channel>().unwrap(), channel);
        }
        assert!("pigeon".parse::<Channel>().is_err());
    }
}
