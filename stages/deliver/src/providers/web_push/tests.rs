use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use herald_schemas::providers::VapidCredentials;
use herald_schemas::{Content, Delivery, Priority, Secret};
use p256::elliptic_curve::rand_core::OsRng;
use p256::elliptic_curve::sec1::ToEncodedPoint;

use super::*;

/// A browser's side of a subscription: its key pair and auth secret.
struct Browser {
    secret: p256::SecretKey,
    auth: [u8; 16],
}

impl Browser {
    fn new() -> Self {
        Browser { secret: p256::SecretKey::random(&mut OsRng), auth: rand::random() }
    }

    fn subscription(&self, endpoint: &str) -> String {
        serde_json::json!({
            "endpoint": endpoint,
            "keys": {
                "p256dh": URL_SAFE_NO_PAD.encode(self.secret.public_key().to_sec1_bytes()),
                "auth": URL_SAFE_NO_PAD.encode(self.auth),
            }
        })
        .to_string()
    }
}

fn delivery(address: String) -> Delivery {
    let parts = [("title", "Order shipped"), ("body", "Your order #1234 is on its way"), ("url", "https://shop.example/o/1234")];
    Delivery {
        channel: herald_schemas::Channel::WebPush,
        platform: Some(herald_schemas::directory::Platform::Web),
        address,
        priority: Priority::High,
        content: Some(Content { parts: parts.iter().map(|(k, v)| ((*k).into(), (*v).into())).collect(), ..Content::default() }),
        ..herald_stage::memory::delivery(11)
    }
}

#[test]
fn the_body_decrypts_with_the_subscribers_keys_and_the_headers_say_how_to_deliver() {
    let browser = Browser::new();
    let push =
        build(&delivery(browser.subscription("https://push.example.net:8443/p/abc")), Timestamp::now(), Duration::from_secs(60)).unwrap();
    assert_eq!(push.origin, "https://push.example.net:8443");
    let plaintext = web_push_native::decrypt(push.body.clone(), &browser.secret, web_push_native::Auth::from_slice(&browser.auth)).unwrap();
    let message: serde_json::Value = serde_json::from_slice(&plaintext).unwrap();
    assert_eq!(message["title"], "Order shipped");
    assert_eq!(message["url"], "https://shop.example/o/1234");
    let header = |name: &str| push.headers.iter().find(|(n, _)| *n == name).map(|(_, v)| v.as_str());
    assert_eq!((header("TTL"), header("Urgency"), header("Content-Encoding")), (Some("60"), Some("high"), Some("aes128gcm")));
    // Another browser's keys do not open it.
    let other = Browser::new();
    assert!(web_push_native::decrypt(push.body, &other.secret, web_push_native::Auth::from_slice(&browser.auth)).is_err());
}

#[test]
fn the_vapid_jwt_verifies_with_the_public_key_for_the_push_services_origin() {
    let server = p256::SecretKey::random(&mut OsRng);
    let public_key = URL_SAFE_NO_PAD.encode(server.public_key().to_sec1_bytes());
    let credentials = VapidCredentials {
        subject: "mailto:ops@example.com".into(),
        public_key: public_key.clone(),
        private_key: Secret::new(URL_SAFE_NO_PAD.encode(server.to_bytes())),
    };
    let vapid = vapid::Vapid::new(&credentials).unwrap();
    let header = vapid.authorization("https://push.example.net", Duration::from_secs(12 * 3600)).unwrap();
    assert_eq!(vapid.authorization("https://push.example.net", Duration::from_secs(12 * 3600)).unwrap(), header, "reused");
    let (token, k) = header.strip_prefix("vapid t=").unwrap().split_once(", k=").unwrap();
    assert_eq!(k, public_key);
    let point = server.public_key().to_encoded_point(false);
    let key = jsonwebtoken::DecodingKey::from_ec_components(
        &URL_SAFE_NO_PAD.encode(point.x().unwrap()),
        &URL_SAFE_NO_PAD.encode(point.y().unwrap()),
    )
    .unwrap();
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::ES256);
    validation.set_audience(&["https://push.example.net"]);
    validation.set_required_spec_claims(&["exp", "aud", "sub"]);
    let claims = jsonwebtoken::decode::<serde_json::Value>(token, &key, &validation).unwrap().claims;
    let exp = claims["exp"].as_i64().unwrap();
    let now = jiff::Timestamp::now().as_second();
    assert!(exp > now && exp <= now + 24 * 3600, "exp within 24 h: {claims}");
    assert_eq!(claims["sub"], "mailto:ops@example.com");
    // A public key that is not the private key's is refused when the credentials are used.
    let wrong = VapidCredentials {
        public_key: URL_SAFE_NO_PAD.encode(p256::SecretKey::random(&mut OsRng).public_key().to_sec1_bytes()),
        ..credentials
    };
    assert_eq!(vapid::Vapid::new(&wrong).unwrap_err().code, "invalid_credentials");
}

#[test]
fn a_garbled_subscription_is_an_invalid_token_not_a_retry() {
    let error = build(&delivery("not json".into()), Timestamp::now(), Duration::from_secs(60)).unwrap_err();
    assert_eq!((error.class, error.code.as_str()), (crate::providers::Class::TokenInvalid, "invalid_subscription"));
}
