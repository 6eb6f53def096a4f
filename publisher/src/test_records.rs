//! Records as the BPF programs write them, for the publisher's unit tests (decode and render).

use bytemuck::Zeroable;
use ipc_protocol::records::{ConnectionRecord, MessageRecord, ADDR_BUF};

/// An envelope timestamp: 2023-11-14T22:13:20.123Z.
pub const TS: u64 = 1_700_000_000_123;

/// A hash of internal byte order 00 01 … 1f.
pub const H: [u8; 32] = {
    let mut h = [0u8; 32];
    let mut i = 0;
    while i < 32 {
        h[i] = i as u8;
        i += 1;
    }
    h
};

/// `H` reversed.
pub fn r_hash() -> [u8; 32] {
    let mut r = H;
    r.reverse();
    r
}

/// `text` in a NUL-padded string buffer of a record.
pub fn s<const N: usize>(text: &str) -> [u8; N] {
    let mut buf = [0u8; N];
    buf[..text.len()].copy_from_slice(text.as_bytes());
    buf
}

/// A `net:*_message` record body with its payload.
pub fn message(peer_id: i64, addr: &str, conn_type: &str, command: &str, payload: &[u8]) -> Vec<u8> {
    let mut r = MessageRecord::zeroed();
    r.peer_id = peer_id;
    r.msg_size = payload.len() as u64;
    // The address and its NUL, in whole words, as the BPF program writes it.
    let addr_room = (addr.len() + 1).next_multiple_of(8);
    assert!(addr_room <= ADDR_BUF, "an address of {} bytes does not fit a record", addr.len());
    r.addr_room = addr_room as u32;
    r.conn_type = s(conn_type);
    r.msg_type = s(command);
    let mut data = bytemuck::bytes_of(&r).to_vec();
    data.extend_from_slice(addr.as_bytes());
    data.resize(data.len() + addr_room - addr.len(), 0);
    data.extend_from_slice(payload);
    data
}

/// A `net:*_connection` record body.
pub fn connection(peer_id: i64, addr: &str, conn_type: &str, network: u32, value: u64) -> Vec<u8> {
    let mut r = ConnectionRecord::zeroed();
    r.peer_id = peer_id;
    r.addr = s(addr);
    r.conn_type = s(conn_type);
    r.network = network;
    r.value = value;
    bytemuck::bytes_of(&r).to_vec()
}
