/* Record layouts shared with Rust (ipc-protocol/src/records.rs). The layout test in
 * bpf/tests/layout.rs compares both through this object's BTF: change them together. */
#ifndef EXTRACTOR_RECORDS_H
#define EXTRACTOR_RECORDS_H

#include <linux/types.h>

/* String buffers hold the published cap plus one byte (to detect an over-long string)
 * plus the NUL, rounded up to 8. */
#define ADDR_BUF 520      /* cap 512 */
#define CONN_TYPE_BUF 32  /* longest is 19: outbound-full-relay */
#define MSG_TYPE_BUF 16   /* cap 12: CMessageHeader::MESSAGE_TYPE_SIZE */
#define REASON_BUF 264    /* cap 256 */
/* Largest P2P payload captured, as upstream: Bitcoin Core's largest is 4,000,000 bytes
 * (MAX_PROTOCOL_MESSAGE_LENGTH, MAX_BLOCK_SERIALIZED_SIZE). */
#define MAX_PAYLOAD_CAPTURE 4194304

/* Ids of ipc_protocol::Tracepoint. */
enum tracepoint_id {
	TP_NET_INBOUND_MESSAGE = 0,
	TP_NET_OUTBOUND_MESSAGE = 1,
	TP_NET_INBOUND_CONNECTION = 2,
	TP_NET_OUTBOUND_CONNECTION = 3,
	TP_NET_CLOSED_CONNECTION = 4,
	TP_NET_EVICTED_INBOUND_CONNECTION = 5,
	TP_NET_MISBEHAVING_CONNECTION = 6,
	TP_MEMPOOL_ADDED = 7,
	TP_MEMPOOL_REMOVED = 8,
	TP_MEMPOOL_REPLACED = 9,
	TP_MEMPOOL_REJECTED = 10,
	TP_VALIDATION_BLOCK_CONNECTED = 11,
	TP_ADDRMAN_ATTEMPT_ADD = 12,
	TP_ADDRMAN_MOVE_TO_GOOD = 13,
	TP_COUNT = 14,
};

/* Indexes of ipc_protocol::DropCause counted here. */
enum drop_cause {
	DROP_RING_FULL = 0,
	DROP_READ_FAILED = 1,
	DROP_PAYLOAD_TOO_LARGE = 2,
	DROP_CAUSES = 3,
};

/* In front of every record in a ring buffer; read by the loader only. `len` counts the body
 * bytes that follow and matter: a message reservation can be larger than its payload. */
struct record_header {
	__u64 ktime_ns;
	__u16 tracepoint;
	__u16 _pad;
	__u32 len;
};

struct message_record {
	__s64 peer_id;
	__u64 msg_size;
	char addr[ADDR_BUF];
	char conn_type[CONN_TYPE_BUF];
	char msg_type[MSG_TYPE_BUF];
	/* followed by msg_size payload bytes */
};

struct connection_record {
	__s64 peer_id;
	char addr[ADDR_BUF];
	char conn_type[CONN_TYPE_BUF];
	__u32 network;
	__u32 _pad;
	__u64 value; /* existing_connections, or time_established for closed/evicted */
};

struct misbehaving_record {
	__s64 peer_id;
	char message[REASON_BUF];
};

struct mempool_added_record {
	__u8 txid[32];
	__s32 vsize;
	__u32 _pad;
	__s64 fee;
};

struct mempool_removed_record {
	__u8 txid[32];
	__s32 vsize;
	__u32 _pad;
	__s64 fee;
	__u64 entry_time;
	char reason[REASON_BUF];
};

struct mempool_replaced_record {
	__u8 replaced_txid[32];
	__u8 replacement_id[32];
	__s32 replaced_vsize;
	__s32 replacement_vsize;
	__s64 replaced_fee;
	__u64 replaced_entry_time;
	__s64 replacement_fee;
	__u8 replaced_by_tx;
	__u8 _pad[7];
};

struct mempool_rejected_record {
	__u8 txid[32];
	char reason[REASON_BUF];
};

struct block_connected_record {
	__u8 hash[32];
	__s32 height;
	__s32 inputs;
	__u64 transactions;
	__s64 sigops;
	__s64 connection_time_ns;
};

struct addrman_new_record {
	__u8 inserted;
	__u8 _pad[3];
	__s32 bucket;
	__s32 bucket_pos;
	__u32 addr_as;
	__u32 source_as;
	__u32 _pad2;
	char addr[ADDR_BUF];
	char source[ADDR_BUF];
};

struct addrman_tried_record {
	__s32 bucket;
	__s32 bucket_pos;
	__u32 addr_as;
	__u32 source_as;
	char addr[ADDR_BUF];
	char source[ADDR_BUF];
};

#endif
