//! Delivery channels.

use std::fmt;
use std::str::FromStr;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::directory::Platform;

/// A way of reaching a person. Each channel is served by one or more deliver [`Route`]s, each
/// with its own consumers, so a provider outage on one never stalls the others.
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

/// A deliver route: the provider queue a delivery waits on. `push` splits by the device's
/// platform into `apns` and `fcm`, so an outage of one never slows the other; every other
/// channel is its own route.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Route {
    /// iOS push through APNs.
    Apns,
    /// Android push through FCM.
    Fcm,
    WebPush,
    Sms,
    Voice,
    Email,
    Webhook,
    InApp,
    Log,
}

impl Route {
    /// Every route, in a stable order.
    pub const ALL: [Route; 9] =
        [Route::Apns, Route::Fcm, Route::WebPush, Route::Sms, Route::Voice, Route::Email, Route::Webhook, Route::InApp, Route::Log];

    /// The route of a delivery on `channel` to a device of `platform`. A push without a platform
    /// goes to APNs, as render sizes it.
    pub fn of(channel: Channel, platform: Option<Platform>) -> Route {
        match channel {
            Channel::Push if platform == Some(Platform::Android) => Route::Fcm,
            Channel::Push => Route::Apns,
            Channel::WebPush => Route::WebPush,
            Channel::Sms => Route::Sms,
            Channel::Voice => Route::Voice,
            Channel::Email => Route::Email,
            Channel::Webhook => Route::Webhook,
            Channel::InApp => Route::InApp,
            Channel::Log => Route::Log,
        }
    }

    /// The channel the route serves.
    pub fn channel(self) -> Channel {
        match self {
            Route::Apns | Route::Fcm => Channel::Push,
            Route::WebPush => Channel::WebPush,
            Route::Sms => Channel::Sms,
            Route::Voice => Channel::Voice,
            Route::Email => Channel::Email,
            Route::Webhook => Channel::Webhook,
            Route::InApp => Channel::InApp,
            Route::Log => Channel::Log,
        }
    }

    /// The routes of `channel`.
    pub fn of_channel(channel: Channel) -> Vec<Route> {
        Route::ALL.into_iter().filter(|r| r.channel() == channel).collect()
    }

    /// The route's name in subjects and consumer names.
    pub fn as_str(self) -> &'static str {
        match self {
            Route::Apns => "apns",
            Route::Fcm => "fcm",
            Route::WebPush => "web_push",
            Route::Sms => "sms",
            Route::Voice => "voice",
            Route::Email => "email",
            Route::Webhook => "webhook",
            Route::InApp => "in_app",
            Route::Log => "log",
        }
    }
}

impl fmt::Display for Route {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The error for a route name that does not exist.
#[derive(Debug, Clone, thiserror::Error)]
#[error("unknown route `{0}`: expected one of apns, fcm, web_push, sms, voice, email, webhook, in_app, log")]
pub struct UnknownRoute(pub String);

impl FromStr for Route {
    type Err = UnknownRoute;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Route::ALL.into_iter().find(|r| r.as_str() == s).ok_or_else(|| UnknownRoute(s.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn push_splits_by_platform_and_every_route_serves_its_channel() {
        assert_eq!(Route::of(Channel::Push, Some(Platform::Android)), Route::Fcm);
        assert_eq!(Route::of(Channel::Push, Some(Platform::Ios)), Route::Apns);
        assert_eq!(Route::of(Channel::Push, None), Route::Apns);
        for route in Route::ALL {
            assert_eq!(route.as_str().parse::<Route>().unwrap(), route);
            assert!(Route::of_channel(route.channel()).contains(&route));
        }
        for channel in Channel::ALL {
            assert!(!Route::of_channel(channel).is_empty(), "{channel} has no route");
        }
    }

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
