use herald_schemas::providers::TwilioCredentials;
use herald_schemas::{Channel, Content, Delivery, Secret, Timestamp};

use super::*;
use crate::providers::Class;

fn account(from: Option<&str>, service: Option<&str>) -> TwilioCredentials {
    TwilioCredentials {
        account_sid: format!("AC{}", "0a".repeat(16)),
        auth_token: Secret::new("token"),
        from: from.map(Into::into),
        messaging_service_sid: service.map(Into::into),
    }
}

fn delivery(channel: Channel, body: &str, rendered_in: Option<&str>, user_locale: Option<&str>) -> Delivery {
    let parts = [("body".to_owned(), body.to_owned())].into_iter().collect();
    Delivery {
        channel,
        address: "+821012345678".into(),
        locale: user_locale.map(Into::into),
        content: Some(Content { parts, locale: rendered_in.map(Into::into), ..Content::default() }),
        ..herald_stage::memory::delivery(3)
    }
}

fn field<'a>(form: &'a [(&str, String)], name: &str) -> Option<&'a str> {
    form.iter().find(|(n, _)| *n == name).map(|(_, v)| v.as_str())
}

#[test]
fn answers_are_classified_by_twilio_code() {
    let body = |code: u32, status: u16| {
        format!(r#"{{"code":{code},"message":"m","more_info":"https://www.twilio.com/docs/errors/{code}","status":{status}}}"#)
    };
    let cases = [
        (400, body(21211, 400), Class::Permanent, "21211"),
        (400, body(21614, 400), Class::Permanent, "21614"),
        (400, body(21612, 400), Class::Permanent, "21612"),
        (400, body(21610, 400), Class::OptedOut, "21610"),
        (401, body(20003, 401), Class::Permanent, "20003"),
        (429, body(20429, 429), Class::Throttled, "20429"),
        (503, body(20503, 503), Class::Outage, "20503"),
        (500, String::new(), Class::Outage, "http_500"),
        (502, "<html>bad gateway</html>".into(), Class::Outage, "http_502"),
    ];
    for (status, body, class, code) in cases {
        let error = classify(status, &body, None);
        assert_eq!((error.class, error.code.as_str()), (class, code), "{status} {body}");
    }
    assert_eq!(
        classify(429, &body(20429, 429), Some(std::time::Duration::from_secs(2))).retry_after,
        Some(std::time::Duration::from_secs(2))
    );
}

#[test]
fn a_message_is_sent_from_the_number_or_the_messaging_service() {
    let config = TwilioConfig { status_callback: Some("https://herald.example/v1/receipts/twilio".into()), ..TwilioConfig::default() };
    let mut d = delivery(Channel::Sms, "Your code is 1234", None, None);
    let now = Timestamp::from_second(1_800_000_000).unwrap();
    d.expires_at = Some(Timestamp::from_second(1_800_000_600).unwrap());
    let form = message(&d, &account(Some("+15005550006"), None), &config, now).unwrap();
    assert_eq!(field(&form, "To"), Some("+821012345678"));
    assert_eq!(field(&form, "From"), Some("+15005550006"));
    assert_eq!(field(&form, "Body"), Some("Your code is 1234"));
    let own = format!("https://herald.example/v1/receipts/twilio/{}/{}", d.tenant, d.delivery_id);
    assert_eq!(field(&form, "StatusCallback"), Some(own.as_str()), "the delivery's own receipt URL");
    assert_eq!(field(&form, "ValidityPeriod"), Some("600"), "the notification's expiry");
    let service = format!("MG{}", "1f".repeat(16));
    let form = message(&d, &account(Some("+15005550006"), Some(&service)), &config, now).unwrap();
    assert_eq!((field(&form, "MessagingServiceSid"), field(&form, "From")), (Some(service.as_str()), None));
    let empty = delivery(Channel::Sms, "", None, None);
    assert_eq!(message(&empty, &account(Some("+15005550006"), None), &config, now).unwrap_err().code, "no_body");
}

#[test]
fn a_call_says_the_text_in_the_recipients_language() {
    let config = TwilioConfig {
        status_callback: Some("https://herald.example/cb".into()),
        machine_detection: Some("DetectMessageEnd".into()),
        ring_timeout: Some(30),
        voice: Some("Polly.Seoyeon".into()),
        ..TwilioConfig::default()
    };
    let d = delivery(Channel::Voice, "배송이 시작되었습니다 & <곧> 도착", Some("ko"), Some("ko-KR"));
    let form = call(&d, &account(Some("+15005550006"), None), &config).unwrap();
    assert_eq!(
        field(&form, "Twiml"),
        Some(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Response><Say language=\"ko-KR\" voice=\"Polly.Seoyeon\">배송이 시작되었습니다 &amp; &lt;곧&gt; 도착</Say></Response>"
        )
    );
    assert_eq!(field(&form, "MachineDetection"), Some("DetectMessageEnd"));
    assert_eq!(field(&form, "Timeout"), Some("30"));
    assert_eq!(field(&form, "StatusCallbackEvent"), Some("initiated ringing answered completed"));
    let own = format!("https://herald.example/cb/{}/{}", d.tenant, d.delivery_id);
    assert_eq!(field(&form, "StatusCallback"), Some(own.as_str()));
    assert_eq!(call(&d, &account(None, Some(&format!("MG{}", "1f".repeat(16)))), &config).unwrap_err().code, "no_sender");
    // The language is the rendered text's: a user in de-DE reading the default (English) text
    // hears it in Twilio's default, not in German.
    assert_eq!(language(&delivery(Channel::Voice, "x", Some("default"), Some("de-DE"))), None);
    assert_eq!(language(&delivery(Channel::Voice, "x", Some("ko_KR"), None)).as_deref(), Some("ko-KR"));
    assert_eq!(language(&delivery(Channel::Voice, "x", Some("en"), Some("en-GB"))).as_deref(), Some("en-GB"));
    assert_eq!(language(&delivery(Channel::Voice, "x", Some("ja"), Some("ko-KR"))).as_deref(), Some("ja-JP"));
}
