//! P2P payload decoding for every command the decoder knows (and one it does not): any
//! payload from any peer decodes or is refused, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

const COMMANDS: [&str; 37] = [
    "version",
    "verack",
    "addr",
    "addrv2",
    "sendaddrv2",
    "inv",
    "getdata",
    "notfound",
    "getheaders",
    "getblocks",
    "tx",
    "block",
    "headers",
    "getaddr",
    "mempool",
    "sendheaders",
    "wtxidrelay",
    "filterclear",
    "ping",
    "pong",
    "merkleblock",
    "filterload",
    "filteradd",
    "getcfilters",
    "cfilter",
    "getcfheaders",
    "cfheaders",
    "getcfcheckpt",
    "cfcheckpt",
    "reject",
    "alert",
    "feefilter",
    "sendcmpct",
    "cmpctblock",
    "getblocktxn",
    "blocktxn",
    "sendtxrcncl",
];

fuzz_target!(|data: &[u8]| {
    let Some((&which, payload)) = data.split_first() else { return };
    let _ = publisher::p2p::decode(COMMANDS[which as usize % COMMANDS.len()], payload);
});
