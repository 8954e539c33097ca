//! The admin API's client, for the commands that go through a running `herald up`/`api`.

use anyhow::{Context, bail};
use reqwest::Method;
use serde_json::{Value, json};

use crate::config::Config;
use herald_schemas::Secret;

/// A client of the admin API.
pub struct Client {
    http: reqwest::Client,
    base: String,
    token: Secret,
}

impl Client {
    pub fn new(config: &Config, tenant: &str) -> anyhow::Result<Self> {
        Ok(Client {
            http: reqwest::Client::builder().build()?,
            base: format!("{}/v1/tenants/{tenant}", config.api.url.trim_end_matches('/')),
            token: config.api.token()?,
        })
    }

    pub async fn send(&self, method: Method, path: &str, body: Option<RequestBody>) -> anyhow::Result<Option<Value>> {
        let url = format!("{}{path}", self.base);
        let mut request = self.http.request(method, &url).bearer_auth(self.token.expose());
        request = match body {
            Some(RequestBody::Json(value)) => request.json(&value),
            Some(RequestBody::Text(text)) => request.header("content-type", "application/x-ndjson").body(text),
            Some(RequestBody::Stream(body)) => request.header("content-type", "application/octet-stream").body(body),
            None => request,
        };
        let response =
            request.send().await.with_context(|| format!("cannot reach the admin API at {url}; is `herald up` running? (api.url)"))?;
        let status = response.status();
        let text = response.text().await?;
        if !status.is_success() {
            let error: Value =
                serde_json::from_str(&text).unwrap_or_else(|_| json!({ "error": { "code": status.as_u16(), "message": text } }));
            bail!(
                "{} ({status}): {}",
                error["error"]["code"].as_str().unwrap_or("error"),
                error["error"]["message"].as_str().unwrap_or(&text)
            );
        }
        if text.is_empty() { Ok(None) } else { Ok(Some(serde_json::from_str(&text)?)) }
    }
}

pub enum RequestBody {
    Json(Value),
    Text(String),
    /// Bytes streamed as they are read (uploads).
    Stream(reqwest::Body),
}

pub fn print(value: Option<Value>) -> anyhow::Result<()> {
    match value {
        Some(value) => println!("{}", serde_json::to_string_pretty(&value)?),
        None => println!("done"),
    }
    Ok(())
}
