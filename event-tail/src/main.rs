//! Prints the events arriving on a NATS server, one line each: the demo's window onto the
//! stream. Lines read as a Bitcoin user reads them, or with `--json` are JSON objects for
//! tools such as `jq` (publisher::render).

use std::io::Write;
use std::sync::Arc;

use clap::Parser;
use futures_util::StreamExt;
use ipc_protocol::cli::NatsFlags;
use publisher::counters::Counters;
use publisher::decode::{Envelope, EnvelopeVersion};
use publisher::nats::SubjectPrefix;
use publisher::render;

/// Subscribes to peer-observer's subjects (`*`) and this project's own (`peer-observer-ebpf.>`),
/// behind `--nats-subject-prefix` if given, and prints each event. Takes the publisher's NATS
/// connection flags (address, credentials, TLS).
#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    nats: NatsFlags,
    /// Exit after this many events (0: never)
    #[arg(long, default_value_t = 0)]
    count: u64,
    /// Print each event as one JSON object, the envelope in the canonical proto3 JSON mapping
    /// with the .proto field names: {"subject": ..., "event": ...}
    #[arg(long)]
    json: bool,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let cli = Cli::parse();
    let client = publisher::nats::connect(&cli.nats, &Arc::new(Counters::default())).await?;
    // `*` matches one token only: this project's own subjects have two (docs/wire-format.md).
    let prefix = SubjectPrefix::of(&cli.nats);
    let mut messages = futures_util::stream::select(
        client.subscribe(prefix.subscription("*")).await?,
        client.subscribe(prefix.subscription("peer-observer-ebpf.>")).await?,
    );
    let mut out = std::io::stdout().lock();
    let mut seen = 0u64;
    let envelope = EnvelopeVersion::of(cli.nats.legacy_envelope);
    while let Some(msg) = messages.next().await {
        // An inventory's items are decoded only as the event is rendered (publisher/src/inventory.rs).
        let size = msg.payload.len();
        let line = match Envelope::decode(&msg.subject, &msg.payload, envelope) {
            Err(e) => Err(format!("undecodable payload ({size} bytes): {e}")),
            Ok(envelope) if cli.json => render::json(&msg.subject, &envelope)
                .map_err(|e| format!("payload ({size} bytes) decodes but does not render as JSON: {e}")),
            Ok(envelope) => Ok(render::readable(&msg.subject, &envelope)),
        };
        let written = match line {
            Ok(line) => writeln!(out, "{line}"),
            Err(e) => {
                let line = format!("{:?}: {e}", msg.subject.as_str());
                // Under --json on standard error, so that standard output stays one JSON object a line.
                if cli.json {
                    writeln!(std::io::stderr(), "{line}")
                } else {
                    writeln!(out, "{line}")
                }
            }
        };
        // A reader that went away (`| head`) ends the tail.
        if written.is_err() {
            break;
        }
        seen += 1;
        if seen == cli.count {
            break;
        }
    }
    Ok(())
}
