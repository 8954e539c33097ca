//! The SMTP sandbox: a real SMTP server (RFC 5321) on TCP with STARTTLS (RFC 3207, the sandbox's
//! certificate) and AUTH PLAIN / LOGIN (RFC 4954), as a relay such as SES or Postmark's SMTP
//! endpoint speaks it. It refuses mail before authentication when accounts are registered, keeps
//! each accepted message whole (the raw RFC 5322 text, dot-unstuffed) in the shared record, one
//! entry per recipient, and answers from the fault plan: a scripted reply per recipient at `RCPT
//! TO` (`550 5.1.1` for a mailbox that does not exist, `452 4.2.2` for a full one), `421` at the
//! greeting in an outage (recorded with an empty target: no recipient was named).

use std::collections::BTreeMap;
use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::json;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use crate::faults::Answer;
use crate::record::{ProviderKind, Received};
use crate::{Shared, lock};

/// The largest message taken (`SIZE`): 50 MiB.
const MAX_SIZE: usize = 50 * 1024 * 1024;

trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

/// The sandbox's 421 (outage), 451 (internal) and 421 4.7.0 (slow down).
pub fn standard_answers() -> (Answer, Answer, Answer) {
    (
        Answer::new(421, "4.3.2").with_message("Service not available, closing transmission channel"),
        Answer::new(451, "4.3.0").with_message("Requested action aborted: local error in processing"),
        Answer::new(421, "4.7.0").with_message("Too many messages, slow down"),
    )
}

/// Serves SMTP on `listener` until the task is aborted.
pub async fn serve(
    listener: TcpListener,
    shared: Arc<Shared>,
    tls: Arc<rustls::ServerConfig>,
    connections: Arc<std::sync::atomic::AtomicU64>,
) {
    let acceptor = TlsAcceptor::from(tls);
    loop {
        let Ok((tcp, _)) = listener.accept().await else { continue };
        connections.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let (shared, acceptor) = (shared.clone(), acceptor.clone());
        tokio::spawn(async move {
            if let Err(error) = session(Box::new(tcp), shared, acceptor).await {
                tracing::debug!(%error, "An SMTP sandbox session ended with an error.");
            }
        });
    }
}

/// What the client has said so far in this transaction.
#[derive(Default)]
struct Envelope {
    from: Option<String>,
    to: Vec<String>,
}

async fn session(stream: Box<dyn Stream>, shared: Arc<Shared>, acceptor: TlsAcceptor) -> std::io::Result<()> {
    let mut io = BufReader::new(stream);
    if let Some(answer) = shared.fault(ProviderKind::Smtp, "") {
        // Refused before any recipient: recorded with an empty target, as a relay logs it.
        record(&shared, "", &Envelope::default(), &None, Some(&answer), None);
        io.write_all(reply(&answer).as_bytes()).await?;
        return Ok(());
    }
    io.write_all(b"220 localhost ESMTP Herald sandbox\r\n").await?;
    let (mut tls, mut user, mut envelope) = (false, None::<String>, Envelope::default());
    let mut line = String::new();
    loop {
        line.clear();
        if io.read_line(&mut line).await? == 0 {
            return Ok(());
        }
        let command = line.trim_end().to_owned();
        let verb = command.split_whitespace().next().unwrap_or_default().to_ascii_uppercase();
        let needs_auth = !lock(&shared.smtp_accounts).is_empty() && user.is_none();
        match verb.as_str() {
            "EHLO" | "HELO" => {
                envelope = Envelope::default();
                let mut lines =
                    vec!["250-localhost".to_owned(), "250-PIPELINING".into(), "250-8BITMIME".into(), format!("250-SIZE {MAX_SIZE}")];
                if !tls {
                    lines.push("250-STARTTLS".into());
                }
                lines.push("250-AUTH PLAIN LOGIN".into());
                lines.push("250 ENHANCEDSTATUSCODES".into());
                io.write_all(format!("{}\r\n", lines.join("\r\n")).as_bytes()).await?;
            }
            "STARTTLS" if !tls => {
                io.write_all(b"220 2.0.0 Ready to start TLS\r\n").await?;
                io.flush().await?;
                let plain = io.into_inner();
                let secured = acceptor.accept(plain).await?;
                io = BufReader::new(Box::new(secured) as Box<dyn Stream>);
                (tls, user, envelope) = (true, None, Envelope::default());
            }
            "AUTH" => {
                let mut words = command.split_whitespace().skip(1);
                let mechanism = words.next().unwrap_or_default().to_ascii_uppercase();
                let credentials = match mechanism.as_str() {
                    "PLAIN" => {
                        let encoded = match words.next() {
                            Some(encoded) => encoded.to_owned(),
                            None => prompt(&mut io, "").await?,
                        };
                        let decoded = STANDARD.decode(encoded.trim()).unwrap_or_default();
                        let parts: Vec<String> = decoded.split(|b| *b == 0).map(|p| String::from_utf8_lossy(p).into_owned()).collect();
                        (parts.len() == 3).then(|| (parts[1].clone(), parts[2].clone()))
                    }
                    "LOGIN" => {
                        let name = prompt(&mut io, "VXNlcm5hbWU6").await?;
                        let password = prompt(&mut io, "UGFzc3dvcmQ6").await?;
                        let text = |b64: &str| String::from_utf8_lossy(&STANDARD.decode(b64.trim()).unwrap_or_default()).into_owned();
                        Some((text(&name), text(&password)))
                    }
                    _ => None,
                };
                let known = credentials.filter(|(name, password)| lock(&shared.smtp_accounts).get(name).is_some_and(|p| p == password));
                match known {
                    Some((name, _)) => {
                        user = Some(name);
                        io.write_all(b"235 2.7.0 Authentication successful\r\n").await?;
                    }
                    None => io.write_all(b"535 5.7.8 Authentication credentials invalid\r\n").await?,
                }
            }
            "MAIL" if needs_auth => io.write_all(b"530 5.7.0 Authentication required\r\n").await?,
            "MAIL" => {
                envelope = Envelope { from: Some(address(&command)), to: Vec::new() };
                io.write_all(b"250 2.1.0 Ok\r\n").await?;
            }
            "RCPT" if envelope.from.is_none() => io.write_all(b"503 5.5.1 MAIL first\r\n").await?,
            "RCPT" => {
                let to = address(&command);
                match shared.fault(ProviderKind::Smtp, &to) {
                    Some(answer) => {
                        record(&shared, &to, &envelope, &user, Some(&answer), None);
                        io.write_all(reply(&answer).as_bytes()).await?;
                    }
                    None => {
                        envelope.to.push(to);
                        io.write_all(b"250 2.1.5 Ok\r\n").await?;
                    }
                }
            }
            "DATA" if envelope.to.is_empty() => io.write_all(b"554 5.5.1 No valid recipients\r\n").await?,
            "DATA" => {
                io.write_all(b"354 End data with <CR><LF>.<CR><LF>\r\n").await?;
                io.flush().await?;
                let message = read_data(&mut io).await?;
                let Some(message) = message else {
                    io.write_all(b"552 5.3.4 Message size exceeds fixed limit\r\n").await?;
                    envelope = Envelope::default();
                    continue;
                };
                shared.pause(ProviderKind::Smtp).await;
                let id = uuid::Uuid::new_v4().simple().to_string();
                for to in &envelope.to {
                    record(&shared, to, &envelope, &user, None, Some((&id, &message)));
                }
                io.write_all(format!("250 2.0.0 Ok: queued as {id}\r\n").as_bytes()).await?;
                envelope = Envelope::default();
            }
            "RSET" => {
                envelope = Envelope::default();
                io.write_all(b"250 2.0.0 Ok\r\n").await?;
            }
            "NOOP" => io.write_all(b"250 2.0.0 Ok\r\n").await?,
            "QUIT" => {
                io.write_all(b"221 2.0.0 Bye\r\n").await?;
                return Ok(());
            }
            _ => io.write_all(b"502 5.5.2 Command not recognized\r\n").await?,
        }
        io.flush().await?;
    }
}

/// Sends a `334` challenge and reads the answer line.
async fn prompt(io: &mut BufReader<Box<dyn Stream>>, challenge: &str) -> std::io::Result<String> {
    io.write_all(format!("334 {challenge}\r\n").as_bytes()).await?;
    io.flush().await?;
    let mut line = String::new();
    io.read_line(&mut line).await?;
    Ok(line.trim_end().to_owned())
}

/// The message after `DATA`, dot-unstuffed, or `None` when it passed [`MAX_SIZE`].
async fn read_data(io: &mut BufReader<Box<dyn Stream>>) -> std::io::Result<Option<Vec<u8>>> {
    let (mut message, mut line, mut too_big) = (Vec::new(), Vec::new(), false);
    loop {
        line.clear();
        if io.read_until(b'\n', &mut line).await? == 0 {
            return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "the connection closed during DATA"));
        }
        if line == b".\r\n" || line == b".\n" {
            return Ok((!too_big).then_some(message));
        }
        let text = if line.starts_with(b"..") { &line[1..] } else { &line[..] };
        if message.len() + text.len() > MAX_SIZE {
            too_big = true;
        } else {
            message.extend_from_slice(text);
        }
    }
}

/// The address in `MAIL FROM:<a>` or `RCPT TO:<b>`.
fn address(command: &str) -> String {
    let inner = command.split_once('<').and_then(|(_, rest)| rest.split_once('>')).map(|(a, _)| a);
    inner.unwrap_or_else(|| command.split_once(':').map_or("", |(_, a)| a.trim())).to_owned()
}

fn reply(answer: &Answer) -> String {
    let text = answer.message.clone().unwrap_or_else(|| "Refused".into());
    format!("{} {} {text}\r\n", answer.status, answer.reason)
}

/// Records a recipient's refusal or an accepted message for it.
fn record(
    shared: &Shared,
    to: &str,
    envelope: &Envelope,
    user: &Option<String>,
    refused: Option<&Answer>,
    accepted: Option<(&str, &[u8])>,
) {
    let raw = accepted.map(|(_, message)| String::from_utf8_lossy(message).into_owned());
    let subject = raw.as_deref().and_then(|m| header(m, "subject"));
    shared.record(Received {
        provider: ProviderKind::Smtp,
        at: jiff::Timestamp::now(),
        target: to.to_owned(),
        status: refused.map_or(250, |a| a.status),
        reason: refused.map(|a| a.reason.clone()),
        headers: BTreeMap::new(),
        payload: json!({ "mail_from": envelope.from, "rcpt_to": to, "subject": subject, "size": raw.as_ref().map(String::len) }),
        credential: user.clone(),
        message_id: accepted.map(|(id, _)| id.to_owned()),
        body: raw,
    });
}

/// A header's value in a raw message (unfolded), by case-insensitive name.
pub fn header(message: &str, name: &str) -> Option<String> {
    let head = message.split("\r\n\r\n").next()?;
    let mut value: Option<String> = None;
    for line in head.split("\r\n") {
        if let Some(v) = value.as_mut()
            && (line.starts_with(' ') || line.starts_with('\t'))
        {
            v.push_str(line.trim_start_matches(['\t']));
            continue;
        }
        if value.is_some() {
            break;
        }
        if let Some((n, v)) = line.split_once(':')
            && n.eq_ignore_ascii_case(name)
        {
            value = Some(v.trim().to_owned());
        }
    }
    value
}
