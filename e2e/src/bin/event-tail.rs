//! Prints the events arriving on a NATS server, one line each: the demo's window onto the
//! stream.

use clap::Parser;
use futures_util::StreamExt;
use prost::Message;
use publisher::proto::event::Event;

/// Subscribes to every single-token subject and prints each peer-observer event.
#[derive(Parser)]
struct Cli {
    /// Address of the NATS server
    #[arg(short = 'n', long, default_value = "127.0.0.1:4222")]
    nats_address: String,
    /// Exit after this many events (0: never)
    #[arg(long, default_value_t = 0)]
    count: u64,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let cli = Cli::parse();
    let client = async_nats::connect(&cli.nats_address).await?;
    let mut subscriber = client.subscribe("*").await?;
    let mut seen = 0u64;
    while let Some(msg) = subscriber.next().await {
        match Event::decode(msg.payload.clone()) {
            Ok(event) => {
                let body = format!("{:?}", event.peer_observer_event);
                let body: String = body.chars().take(300).collect();
                println!("[{}] {} {}", event.timestamp, msg.subject, body);
            }
            Err(e) => println!("{} undecodable payload ({} bytes): {e}", msg.subject, msg.payload.len()),
        }
        seen += 1;
        if seen == cli.count {
            break;
        }
    }
    Ok(())
}
