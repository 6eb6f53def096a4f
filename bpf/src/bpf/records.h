/* Record layouts shared with Rust (ipc-protocol/src/records.rs). The layout test in
 * bpf/tests/layout.rs compares both through this object's BTF: change them together. The
 * tracepoint ids, drop causes, rings, string buffers' sizes and largest payload come from the
 * generated table.h. */
#ifndef EXTRACTOR_RECORDS_H
#define EXTRACTOR_RECORDS_H

#include <linux/types.h>

#include "table.h" /* generated from ipc-protocol's table by bpf/build.rs */

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
	char msg_type[MSG_TYPE_BUF];
	/* Bytes of the peer's address that follow: the string and its NUL, in whole words. Most
	 * addresses take a few words of ADDR_BUF's 65, and
	 * a message's record is forwarded for every hit: only what they take goes over the
	 * socket, and small messages from known peers take a small reservation. */
	__u32 addr_room;
	__u32 _pad;
	char conn_type[CONN_TYPE_BUF];
	/* followed by addr_room bytes of address, then msg_size payload bytes */
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

struct utxocache_coin_record {
	__u8 txid[32];
	__u32 index;
	__u32 height;
	__s64 value;
	__u8 is_coinbase;
	__u8 _pad[7];
};

struct utxocache_flush_record {
	__s64 duration_us;
	__u32 mode;
	__u32 _pad;
	__u64 coins_count;
	__u64 coins_mem_usage;
	__u8 for_prune;
	__u8 _pad2[7];
};

#endif
