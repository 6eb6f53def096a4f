// SPDX-License-Identifier: GPL-2.0
/* One program per Bitcoin Core tracepoint. Each copies its arguments synchronously (they
 * point into temporaries that die when the probe returns) into a fixed record and emits it.
 * An event that cannot be emitted is counted in `drops`, never lost silently. */
#include <stdbool.h>
#include <linux/types.h>
#include <linux/bpf.h>
#include <linux/ptrace.h>
#include <bpf/bpf_helpers.h>
#include <bpf/usdt.bpf.h>

#include "records.h"
#include "table.h" /* generated from ipc-protocol's table by bpf/build.rs */

char LICENSE[] SEC("license") = "GPL";

/* Key: tracepoint_id * DROP_CAUSES + drop_cause. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, TP_COUNT * DROP_CAUSES);
	__type(key, __u32);
	__type(value, __u64);
} drops SEC(".maps");

/* Never read or written. Clang emits BTF only for types that globals or maps use (behind a
 * pointer, only a forward declaration); this keeps every record layout and id enum in the
 * object's BTF for bpf/tests/layout.rs. */
struct btf_anchor {
	struct record_header header;
	struct message_record message;
	struct connection_record connection;
	struct misbehaving_record misbehaving;
	struct mempool_added_record mempool_added;
	struct mempool_removed_record mempool_removed;
	struct mempool_replaced_record mempool_replaced;
	struct mempool_rejected_record mempool_rejected;
	struct block_connected_record block_connected;
	struct addrman_new_record addrman_new;
	struct addrman_tried_record addrman_tried;
	struct utxocache_coin_record utxocache_coin;
	struct utxocache_flush_record utxocache_flush;
	enum tracepoint_id tracepoint;
	enum drop_cause drop_cause;
	enum ring_id ring;
} btf_anchor;

/* Every argument of a hit after one look-up of its USDT spec. libbpf's BPF_USDT fetches each
 * argument through bpf_usdt_arg(), which looks the spec up and reads the saved register
 * anew for each: six times for a message, about a third of a hit's time in the BPF program.
 * Here the spec is looked up once and the saved registers loaded once; each argument is then
 * taken from that copy (or, for a memory operand, read from user memory), with libbpf's own
 * spec layout and casts (usdt.bpf.h). A failed read fails the hit, counted as read_failed. */
#define REGS (sizeof(struct pt_regs) / 8)

static __always_inline int usdt_args(struct pt_regs *ctx, long *out, const int n)
{
	struct __bpf_usdt_spec *spec;
	unsigned long regs[REGS];
	int spec_id, i;

	spec_id = __bpf_usdt_spec_id(ctx);
	if (spec_id < 0)
		return -1;
	spec = bpf_map_lookup_elem(&__bpf_usdt_specs, &spec_id);
	if (!spec || spec->arg_cnt < n)
		return -1;
	/* Context loads at constant offsets, which the verifier allows: no helper call. */
#pragma unroll
	for (i = 0; i < REGS; i++)
		regs[i] = ((unsigned long *)ctx)[i];
#pragma unroll
	for (i = 0; i < n; i++) {
		struct __bpf_usdt_arg_spec *arg = &spec->args[i];
		/* Registers as indexes of 8-byte words, so that the verifier sees aligned reads. */
		unsigned int reg = (unsigned short)arg->reg_off >> 3, idx_reg = arg->idx_reg_off >> 3;
		unsigned long val, idx;

		if (arg->arg_type != BPF_USDT_ARG_CONST &&
		    (arg->reg_off & 7 || reg >= REGS)) /* a negative offset is >= REGS here */
			return -1;
		switch (arg->arg_type) {
		case BPF_USDT_ARG_CONST:
			val = arg->val_off;
			break;
		case BPF_USDT_ARG_REG:
			val = regs[reg];
			break;
		case BPF_USDT_ARG_REG_DEREF:
			if (bpf_probe_read_user(&val, sizeof(val), (void *)regs[reg] + arg->val_off))
				return -1;
			break;
		case BPF_USDT_ARG_SIB:
			if (arg->idx_reg_off & 7 || idx_reg >= REGS)
				return -1;
			idx = regs[idx_reg];
			if (bpf_probe_read_user(&val, sizeof(val),
						(void *)(regs[reg] + (idx << arg->scale_bitshift) + arg->val_off)))
				return -1;
			break;
		default:
			return -1;
		}
		/* 1-, 2- or 4-byte arguments: clear the upper bits, sign-extending signed ones. */
		val <<= arg->arg_bitshift;
		if (arg->arg_signed)
			val = ((long)val) >> arg->arg_bitshift;
		else
			val = val >> arg->arg_bitshift;
		out[i] = val;
	}
	return 0;
}

#define ___usdt_argv0() ctx
#define ___usdt_argv1(x) ___usdt_argv0(), argv[0]
#define ___usdt_argv2(x, args...) ___usdt_argv1(args), argv[1]
#define ___usdt_argv3(x, args...) ___usdt_argv2(args), argv[2]
#define ___usdt_argv4(x, args...) ___usdt_argv3(args), argv[3]
#define ___usdt_argv5(x, args...) ___usdt_argv4(args), argv[4]
#define ___usdt_argv6(x, args...) ___usdt_argv5(args), argv[5]
#define ___usdt_argv7(x, args...) ___usdt_argv6(args), argv[6]
#define ___usdt_argv8(x, args...) ___usdt_argv7(args), argv[7]
#define ___usdt_argv(args...) ___bpf_apply(___usdt_argv, ___bpf_narg(args))(args)

/* Like libbpf's BPF_USDT, with every argument fetched by usdt_args() first; a failed fetch is
 * counted for the program's tracepoint (TP_OF_<name>, from table.h). */
#define USDT(name, args...)                                                              \
	name(struct pt_regs *ctx);                                                           \
	static __always_inline typeof(name(0)) ____##name(struct pt_regs *ctx, ##args);      \
	typeof(name(0)) name(struct pt_regs *ctx)                                            \
	{                                                                                    \
		long argv[___bpf_narg(args)];                                                \
                                                                                             \
		if (usdt_args(ctx, argv, ___bpf_narg(args))) {                               \
			count_drop(TP_OF_##name, DROP_READ_FAILED);                          \
			return 0;                                                            \
		}                                                                            \
		_Pragma("GCC diagnostic push")                                               \
		_Pragma("GCC diagnostic ignored \"-Wint-conversion\"")                       \
		return ____##name(___usdt_argv(args));                                       \
		_Pragma("GCC diagnostic pop")                                                \
	}                                                                                    \
	static __always_inline typeof(name(0)) ____##name(struct pt_regs *ctx, ##args)

#define EVENT(type)                        \
	struct {                           \
		struct record_header hdr;  \
		struct type rec;           \
	}

static __always_inline void count_drop(enum tracepoint_id tp, enum drop_cause cause)
{
	__u32 key = tp * DROP_CAUSES + cause;
	__u64 *n = bpf_map_lookup_elem(&drops, &key);

	if (n)
		/* Atomic although the slot is per-CPU: a uprobe program runs preemptible, so
		 * another hit on the same CPU may interleave a plain read-modify-write. */
		__sync_fetch_and_add(n, 1);
}

/* Waking the loader is the dearest part of a hit for the traced thread: an irq_work (in a VM,
 * a trapped APIC write) and a context switch, on 2 cores often onto the traced thread's own
 * CPU. The loader looks at the rings by itself while records keep coming, every half
 * WAKEUP_INTERVAL_NS or, from 64k records a second, every WAKEUP_INTERVAL_NS
 * (loader/src/main.rs), and says until when in loader_polling_until_ns (CLOCK_MONOTONIC, as the
 * records' timestamps); only a record after that wakes it, and then only if none did for
 * WAKEUP_INTERVAL_NS. A ring a quarter full wakes it too, but at most every FULL_WAKEUP_GAP_NS:
 * while the loader is behind (a slow publisher, NATS down, a burst) the ring stays that full,
 * and a wakeup on every hit cost each hit several microseconds (docs/performance.md) and woke
 * a loader already draining. The loader only moves the deadline forward, so a stale read errs
 * towards a wakeup; the other timestamps race between CPUs, harmlessly: at worst one wakeup
 * too many. */
#define FULL_WAKEUP_GAP_NS (WAKEUP_INTERVAL_NS / 8)
__u64 loader_polling_until_ns;
__u64 ring_woken_ns[RING_COUNT];
/* Each ring's size, set by the loader before loading (it sizes the rings): read here, where
 * asking the ring would take a helper call on every hit. */
const volatile __u64 ring_bytes[RING_COUNT];

/* `now` is the record's own timestamp: no second clock read. */
static __always_inline __u64 wakeup(enum ring_id ring, __u64 now)
{
	void *map = ring_map(ring);
	/* A later timestamp stored from another CPU wraps this round: as if none had woken it. */
	__u64 since = now - ring_woken_ns[ring];

	if (since < FULL_WAKEUP_GAP_NS ||
	    ((now < loader_polling_until_ns || since < WAKEUP_INTERVAL_NS) &&
	     bpf_ringbuf_query(map, BPF_RB_AVAIL_DATA) < ring_bytes[ring] / 4))
		return BPF_RB_NO_WAKEUP;
	ring_woken_ns[ring] = now;
	return BPF_RB_FORCE_WAKEUP;
}

#define SUBMIT(e, tp) bpf_ringbuf_submit(e, wakeup(ring_id_of(tp), (e)->hdr.ktime_ns))

static __always_inline void fill_header(struct record_header *hdr, enum tracepoint_id tp, __u32 len,
					__u64 now)
{
	hdr->ktime_ns = now;
	hdr->tracepoint = tp;
	hdr->_pad = 0;
	hdr->len = len;
}

/* Reserves a fixed-size record in the tracepoint's ring; `size` is a compile-time constant at
 * every caller. */
static __always_inline void *reserve_event(enum tracepoint_id tp, __u64 size)
{
	struct record_header *hdr = bpf_ringbuf_reserve(ring_map(ring_id_of(tp)), size, 0);

	if (!hdr) {
		count_drop(tp, DROP_RING_FULL);
		return NULL;
	}
	fill_header(hdr, tp, size - sizeof(*hdr), bpf_ktime_get_ns());
	return hdr;
}

static __always_inline int read_failed(enum tracepoint_id tp, void *event)
{
	bpf_ringbuf_discard(event, 0);
	count_drop(tp, DROP_READ_FAILED);
	return 0;
}

#define READ_STR(dst, src) (bpf_probe_read_user_str(dst, sizeof(dst), src) < 0)
#define READ_HASH(dst, src) (bpf_probe_read_user(dst, 32, src) < 0)

/* Payloads up to this size (ping, pong, feefilter, an inv of one: most messages) are read
 * onto the stack and copied into the record, as the command is: the kernel's user-copy check
 * of a ring destination (vmalloc memory) takes longer than copying them twice. */
#define STAGED_PAYLOAD 64

/* Reads `len` payload bytes into a record whose payload buffer holds `cap`; `len <= cap`. */
static __always_inline int read_payload(__u8 *dst, const __u32 cap, __u64 len, const void *data)
{
	/* One register for the bound check and the read, so that the verifier sees the bound. */
	barrier_var(len);
	if (cap >= STAGED_PAYLOAD && len <= STAGED_PAYLOAD) {
		__u64 staged[STAGED_PAYLOAD / 8] = {};

		if (bpf_probe_read_user(staged, len, data) < 0)
			return -1;
		__builtin_memcpy(dst, staged, sizeof(staged));
		return 0;
	}
	return bpf_probe_read_user(dst, len, data) < 0 ? -1 : 0;
}

/* A message is written straight into its ring reservation: a uprobe program may be preempted
 * (it only runs with migration disabled), so no per-CPU scratch buffer is safe to share. The
 * record's tail holds the peer's address, in as many words as it takes, then the payload.
 * Messages take a fixed-size reservation of the smallest class that holds their tail (a
 * peer's first message, whose address is not read yet, one with room for any address); the
 * header's `len` tells the loader how much of it to forward. */
#define EMIT_MESSAGE(addr_max, cap)                                                            \
	do {                                                                                   \
		struct {                                                                       \
			struct message_head head;                                              \
			__u64 tail[((addr_max) + (cap)) / 8];                                  \
		} *e = bpf_ringbuf_reserve(ring_map(RING_MESSAGES), sizeof(*e), 0);           \
		__u32 len = size;                                                              \
		__u64 now;                                                                     \
		long room;                                                                     \
                                                                                               \
		if (!e) {                                                                      \
			count_drop(tp, DROP_RING_FULL);                                        \
			return 0;                                                              \
		}                                                                              \
		now = bpf_ktime_get_ns();                                                      \
		if (len > cap) /* never: the caller chose the class; tells the verifier */   \
			len = cap;                                                             \
		room = fill_message_head(&e->head, e->tail, addr_max, known, known_room,       \
					 peer_id, addr, conn_type, msg_type, size);            \
		if (room < 0 || room > (addr_max) ||                                           \
		    read_payload((__u8 *)e->tail + room, cap, len, data))                      \
			return read_failed(tp, e);                                             \
		fill_header(&e->head.hdr, tp, sizeof(e->head.rec) + room + size, now);         \
		SUBMIT(&e->head, tp);                                                          \
		return 0;                                                                      \
	} while (0)

struct message_head {
	struct record_header hdr;
	struct message_record rec;
};

/* Payloads above the largest class are copied in chunks of this size. */
#define LARGE_CHUNK 16384
#define LARGEST_CLASS 16384
/* Room for the addresses of peers on every network, with their port: an IPv6 one takes 48
 * bytes, a Tor v3 one 72, an I2P one 64. Only names given to -addnode, -connect or -seednode
 * take more; a small message from such a peer takes a larger class. */
#define SMALL_ADDR_ROOM 128

/* A peer's connection type and address as its first message read them. Each string read is
 * a helper call through the kernel's user-copy checks, two thirds of a small message's time
 * in the program on some CPUs (docs/performance.md), and Bitcoin Core keeps both constant
 * for a connection's life (CNode::m_addr_name, m_conn_type), never reusing a peer id within
 * a process; a loader serves one process. Later messages copy them from here. The LRU
 * evicts peers that stopped sending first: closed ones, as 512 exceed Core's connections. */
struct peer_strings {
	__u32 addr_room;
	__u32 _pad;
	char conn_type[CONN_TYPE_BUF];
	char addr[ADDR_BUF];
};

/* On a miss, the record from addr_room on, address included, is the map value. */
_Static_assert(__builtin_offsetof(struct message_record, conn_type) ==
			       __builtin_offsetof(struct message_record, addr_room) + 8 &&
		       sizeof(struct message_record) ==
			       __builtin_offsetof(struct message_record, conn_type) + CONN_TYPE_BUF &&
		       sizeof(struct peer_strings) == 8 + CONN_TYPE_BUF + ADDR_BUF,
	       "message_record must end as struct peer_strings begins");
/* The address and payload that follow a message's head are copied in whole 8-byte words. */
_Static_assert(sizeof(struct message_head) % 8 == 0 && ADDR_BUF % 8 == 0 &&
		       CONN_TYPE_BUF % 8 == 0 && MSG_TYPE_BUF % 8 == 0 && SMALL_ADDR_ROOM % 8 == 0,
	       "the message strings' buffers must be whole words");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 512);
	__type(key, __s64);
	__type(value, struct peer_strings);
} known_peers SEC(".maps");

/* Copies a NUL-terminated string word by word, up to the word holding its NUL: an address
 * is a few words of its 65, a connection type one to three of its four. Both buffers are
 * 8-byte aligned. */
static __always_inline void copy_string(__u64 *dst, const __u64 *src, const int words)
{
	int i;

#pragma clang loop unroll(disable)
	for (i = 0; i < words; i++) {
		__u64 w = src[i];

		dst[i] = w;
		if ((w - 0x0101010101010101ULL) & ~w & 0x8080808080808080ULL)
			break;
	}
}

/* Fills a message's record (not its header), and the start of its tail (`addr_max` bytes
 * there are the address's) with the peer's address. Returns the bytes the address takes, or
 * -1 if a read failed. A known peer's strings are copied from `known`, its address in the
 * `room` read from there once; a new peer's are read, into a tail with room for any address,
 * and kept for its next messages. */
static __always_inline long fill_message_head(struct message_head *m, __u64 *tail,
					      const __u32 addr_max, struct peer_strings *known,
					      __u32 room, __s64 peer_id, const char *addr,
					      const char *conn_type, const char *msg_type, __u64 size)
{
	m->rec.peer_id = peer_id;
	m->rec.msg_size = size;
	m->rec._pad = 0;
	if (known) {
		/* Where the address's room ends: never outside 0..addr_max - 1, as entries are
		 * written from records with their room; the check tells the verifier. */
		__u64 last_byte = (__u64)room - 1;

		barrier_var(last_byte);
		if (last_byte >= addr_max)
			return -1;
		m->rec.addr_room = room;
		/* The copy stops at the NUL, not at the room: a loop that compared its count with
		 * the room would leave the verifier a state for each count it stopped at. An LRU
		 * entry may be recycled for another peer while it is read; the room's last byte is
		 * a NUL whatever was copied, so the record stays well-formed. */
		copy_string(tail, (const __u64 *)known->addr, addr_max / 8);
		((__u8 *)tail)[last_byte] = 0;
		copy_string((__u64 *)m->rec.conn_type, (const __u64 *)known->conn_type,
			    CONN_TYPE_BUF / 8);
	} else {
		long n;

		/* Never in a class with less room: it is chosen for known peers only. Folds away
		 * the reads below, which the verifier would refuse there. */
		if (addr_max < ADDR_BUF)
			return -1;
		n = bpf_probe_read_user_str(tail, ADDR_BUF, addr);
		if (n < 0 || READ_STR(m->rec.conn_type, conn_type))
			return -1;
		room = (n + 7) & ~7;
		m->rec.addr_room = room;
		bpf_map_update_elem(&known_peers, &peer_id, &m->rec.addr_room, BPF_ANY);
	}
	/* Read onto the stack: a read into the ring (vmalloc memory) goes through more of the
	 * kernel's user-copy checks on the destination than one onto the stack. */
	__u64 command[MSG_TYPE_BUF / 8] = {};

	if (READ_STR(command, msg_type))
		return -1;
	__builtin_memcpy(m->rec.msg_type, command, sizeof(command));
	return room;
}

/* A large message (up to 4 MiB) takes a reservation of its size and the longest address
 * through a dynptr, so the ring holds what the message needs and no more; the record's length
 * counts only the room its address takes. The verifier wants constant-size copies, so the
 * payload is read in LARGE_CHUNK pieces; the last piece ends at the payload's end and may
 * overlap the one before it (the payload is larger than one chunk). bpf_loop copies the
 * pieces: the verifier checks its callback on its own, where it walked an open loop of 256
 * pieces for every state the code before it left, close to its limit (docs/performance.md;
 * bpf/tests/verifier.rs). */
struct large_copy {
	struct bpf_dynptr ring;
	const __u8 *data;
	__u64 payload_at; /* the payload's offset in the reservation */
	__u64 last;       /* the last piece's offset in the payload */
	bool failed;
};

static long copy_piece(__u32 i, void *ctx)
{
	struct large_copy *c = ctx;
	__u64 off = (__u64)i * LARGE_CHUNK;
	void *dst;

	if (off > c->last)
		off = c->last;
	dst = bpf_dynptr_data(&c->ring, c->payload_at + off, LARGE_CHUNK);
	if (!dst || bpf_probe_read_user(dst, LARGE_CHUNK, c->data + off) < 0) {
		c->failed = true;
		return 1;
	}
	return 0;
}

static __always_inline int emit_large_message(enum tracepoint_id tp, struct peer_strings *known,
					      __u32 known_room, __s64 peer_id, const char *addr,
					      const char *conn_type, const char *msg_type, __u64 size,
					      const __u8 *data)
{
	const __u32 head = sizeof(struct message_head) + ADDR_BUF;
	struct large_copy c = { .data = data, .last = size - LARGE_CHUNK };
	struct message_head *m;
	long room;
	__u64 now;

	if (size > MAX_PAYLOAD_CAPTURE) {
		count_drop(tp, DROP_PAYLOAD_TOO_LARGE);
		return 0;
	}
	if (bpf_ringbuf_reserve_dynptr(ring_map(RING_MESSAGES), head + size, 0, &c.ring)) {
		bpf_ringbuf_discard_dynptr(&c.ring, 0); /* the verifier requires it even on failure */
		count_drop(tp, DROP_RING_FULL);
		return 0;
	}
	now = bpf_ktime_get_ns();
	m = bpf_dynptr_data(&c.ring, 0, head);
	if (!m)
		goto read_failed;
	room = fill_message_head(m, (__u64 *)(m + 1), ADDR_BUF, known, known_room, peer_id, addr,
				 conn_type, msg_type, size);
	if (room < 0 || room > ADDR_BUF)
		goto read_failed;
	c.payload_at = sizeof(*m) + room;
	if (bpf_loop((size + LARGE_CHUNK - 1) / LARGE_CHUNK, copy_piece, &c, 0) < 0 || c.failed)
		goto read_failed;
	fill_header(&m->hdr, tp, sizeof(m->rec) + room + size, now);
	bpf_ringbuf_submit_dynptr(&c.ring, wakeup(RING_MESSAGES, now));
	return 0;

read_failed:
	bpf_ringbuf_discard_dynptr(&c.ring, 0);
	count_drop(tp, DROP_READ_FAILED);
	return 0;
}

static __always_inline int emit_message(enum tracepoint_id tp, __s64 peer_id, const char *addr,
					const char *conn_type, const char *msg_type, __u64 size,
					const void *data)
{
	struct peer_strings *known = bpf_map_lookup_elem(&known_peers, &peer_id);
	/* Read once: the class is chosen by it, and the entry may change meanwhile. */
	__u32 known_room = known ? known->addr_room : ADDR_BUF;

	if (known && known_room <= SMALL_ADDR_ROOM && size <= STAGED_PAYLOAD)
		EMIT_MESSAGE(SMALL_ADDR_ROOM, STAGED_PAYLOAD);
	if (size <= 256)
		EMIT_MESSAGE(ADDR_BUF, 256);
	if (size <= 4096)
		EMIT_MESSAGE(ADDR_BUF, 4096);
	if (size <= LARGEST_CLASS)
		EMIT_MESSAGE(ADDR_BUF, LARGEST_CLASS);
	return emit_large_message(tp, known, known_room, peer_id, addr, conn_type, msg_type, size,
				  data);
}

SEC("usdt")
int USDT(net_inbound_message, __s64 peer_id, const char *addr, const char *conn_type,
	 const char *msg_type, __u64 size, const void *data)
{
	return emit_message(TP_NET_INBOUND_MESSAGE, peer_id, addr, conn_type, msg_type, size, data);
}

SEC("usdt")
int USDT(net_outbound_message, __s64 peer_id, const char *addr, const char *conn_type,
	 const char *msg_type, __u64 size, const void *data)
{
	return emit_message(TP_NET_OUTBOUND_MESSAGE, peer_id, addr, conn_type, msg_type, size, data);
}

static __always_inline int emit_connection(enum tracepoint_id tp, __s64 peer_id, const char *addr,
					   const char *conn_type, __u32 network, __u64 value)
{
	EVENT(connection_record) *e = reserve_event(tp, sizeof(*e));

	if (!e)
		return 0;
	e->rec.peer_id = peer_id;
	e->rec.network = network;
	e->rec._pad = 0;
	e->rec.value = value;
	if (READ_STR(e->rec.addr, addr) || READ_STR(e->rec.conn_type, conn_type))
		return read_failed(tp, e);
	SUBMIT(e, tp);
	return 0;
}

SEC("usdt")
int USDT(net_inbound_connection, __s64 peer_id, const char *addr, const char *conn_type,
	 __u32 network, __u64 existing_connections)
{
	return emit_connection(TP_NET_INBOUND_CONNECTION, peer_id, addr, conn_type, network,
			       existing_connections);
}

SEC("usdt")
int USDT(net_outbound_connection, __s64 peer_id, const char *addr, const char *conn_type,
	 __u32 network, __u64 existing_connections)
{
	return emit_connection(TP_NET_OUTBOUND_CONNECTION, peer_id, addr, conn_type, network,
			       existing_connections);
}

SEC("usdt")
int USDT(net_closed_connection, __s64 peer_id, const char *addr, const char *conn_type,
	 __u32 network, __s64 time_established)
{
	return emit_connection(TP_NET_CLOSED_CONNECTION, peer_id, addr, conn_type, network,
			       time_established);
}

SEC("usdt")
int USDT(net_evicted_inbound_connection, __s64 peer_id, const char *addr,
	 const char *conn_type, __u32 network, __s64 time_established)
{
	return emit_connection(TP_NET_EVICTED_INBOUND_CONNECTION, peer_id, addr, conn_type,
			       network, time_established);
}

SEC("usdt")
int USDT(net_misbehaving_connection, __s64 peer_id, const char *message)
{
	const enum tracepoint_id tp = TP_NET_MISBEHAVING_CONNECTION;
	EVENT(misbehaving_record) *e = reserve_event(tp, sizeof(*e));

	if (!e)
		return 0;
	e->rec.peer_id = peer_id;
	if (READ_STR(e->rec.message, message))
		return read_failed(tp, e);
	SUBMIT(e, tp);
	return 0;
}

SEC("usdt")
int USDT(mempool_added, const void *txid, __s32 vsize, __s64 fee)
{
	const enum tracepoint_id tp = TP_MEMPOOL_ADDED;
	EVENT(mempool_added_record) *e = reserve_event(tp, sizeof(*e));

	if (!e)
		return 0;
	e->rec.vsize = vsize;
	e->rec._pad = 0;
	e->rec.fee = fee;
	if (READ_HASH(e->rec.txid, txid))
		return read_failed(tp, e);
	SUBMIT(e, tp);
	return 0;
}

SEC("usdt")
int USDT(mempool_removed, const void *txid, const char *reason, __s32 vsize, __s64 fee,
	 __u64 entry_time)
{
	const enum tracepoint_id tp = TP_MEMPOOL_REMOVED;
	EVENT(mempool_removed_record) *e = reserve_event(tp, sizeof(*e));

	if (!e)
		return 0;
	e->rec.vsize = vsize;
	e->rec._pad = 0;
	e->rec.fee = fee;
	e->rec.entry_time = entry_time;
	if (READ_HASH(e->rec.txid, txid) || READ_STR(e->rec.reason, reason))
		return read_failed(tp, e);
	SUBMIT(e, tp);
	return 0;
}

SEC("usdt")
int USDT(mempool_replaced, const void *replaced_txid, __s32 replaced_vsize,
	 __s64 replaced_fee, __u64 replaced_entry_time, const void *replacement_id,
	 __s32 replacement_vsize, __s64 replacement_fee, __u8 replaced_by_tx)
{
	const enum tracepoint_id tp = TP_MEMPOOL_REPLACED;
	EVENT(mempool_replaced_record) *e = reserve_event(tp, sizeof(*e));

	if (!e)
		return 0;
	e->rec.replaced_vsize = replaced_vsize;
	e->rec.replaced_fee = replaced_fee;
	e->rec.replaced_entry_time = replaced_entry_time;
	e->rec.replacement_vsize = replacement_vsize;
	e->rec.replacement_fee = replacement_fee;
	e->rec.replaced_by_tx = replaced_by_tx;
	__builtin_memset(e->rec._pad, 0, sizeof(e->rec._pad));
	if (READ_HASH(e->rec.replaced_txid, replaced_txid) ||
	    READ_HASH(e->rec.replacement_id, replacement_id))
		return read_failed(tp, e);
	SUBMIT(e, tp);
	return 0;
}

SEC("usdt")
int USDT(mempool_rejected, const void *txid, const char *reason)
{
	const enum tracepoint_id tp = TP_MEMPOOL_REJECTED;
	EVENT(mempool_rejected_record) *e = reserve_event(tp, sizeof(*e));

	if (!e)
		return 0;
	if (READ_HASH(e->rec.txid, txid) || READ_STR(e->rec.reason, reason))
		return read_failed(tp, e);
	SUBMIT(e, tp);
	return 0;
}

SEC("usdt")
int USDT(validation_block_connected, const void *hash, __s32 height, __u64 transactions,
	 __s32 inputs, __s64 sigops, __s64 connection_time_ns)
{
	const enum tracepoint_id tp = TP_VALIDATION_BLOCK_CONNECTED;
	EVENT(block_connected_record) *e = reserve_event(tp, sizeof(*e));

	if (!e)
		return 0;
	e->rec.height = height;
	e->rec.transactions = transactions;
	e->rec.inputs = inputs;
	e->rec.sigops = sigops;
	e->rec.connection_time_ns = connection_time_ns;
	if (READ_HASH(e->rec.hash, hash))
		return read_failed(tp, e);
	SUBMIT(e, tp);
	return 0;
}

SEC("usdt")
int USDT(addrman_attempt_add, __u8 inserted, __s32 bucket, __s32 bucket_pos,
	 const char *addr, __u32 addr_as, const char *source, __u32 source_as)
{
	const enum tracepoint_id tp = TP_ADDRMAN_ATTEMPT_ADD;
	EVENT(addrman_new_record) *e = reserve_event(tp, sizeof(*e));

	if (!e)
		return 0;
	e->rec.inserted = inserted;
	__builtin_memset(e->rec._pad, 0, sizeof(e->rec._pad));
	e->rec.bucket = bucket;
	e->rec.bucket_pos = bucket_pos;
	e->rec.addr_as = addr_as;
	e->rec.source_as = source_as;
	e->rec._pad2 = 0;
	if (READ_STR(e->rec.addr, addr) || READ_STR(e->rec.source, source))
		return read_failed(tp, e);
	SUBMIT(e, tp);
	return 0;
}

SEC("usdt")
int USDT(addrman_move_to_good, __s32 bucket, __s32 bucket_pos, const char *addr,
	 __u32 addr_as, const char *source, __u32 source_as)
{
	const enum tracepoint_id tp = TP_ADDRMAN_MOVE_TO_GOOD;
	EVENT(addrman_tried_record) *e = reserve_event(tp, sizeof(*e));

	if (!e)
		return 0;
	e->rec.bucket = bucket;
	e->rec.bucket_pos = bucket_pos;
	e->rec.addr_as = addr_as;
	e->rec.source_as = source_as;
	if (READ_STR(e->rec.addr, addr) || READ_STR(e->rec.source, source))
		return read_failed(tp, e);
	SUBMIT(e, tp);
	return 0;
}

static __always_inline int emit_coin(enum tracepoint_id tp, const void *txid, __u32 index,
				     __u32 height, __s64 value, __u8 is_coinbase)
{
	EVENT(utxocache_coin_record) *e = reserve_event(tp, sizeof(*e));

	if (!e)
		return 0;
	e->rec.index = index;
	e->rec.height = height;
	e->rec.value = value;
	e->rec.is_coinbase = is_coinbase;
	__builtin_memset(e->rec._pad, 0, sizeof(e->rec._pad));
	if (READ_HASH(e->rec.txid, txid))
		return read_failed(tp, e);
	SUBMIT(e, tp);
	return 0;
}

SEC("usdt")
int USDT(utxocache_add, const void *txid, __u32 index, __u32 height, __s64 value,
	 __u8 is_coinbase)
{
	return emit_coin(TP_UTXOCACHE_ADD, txid, index, height, value, is_coinbase);
}

SEC("usdt")
int USDT(utxocache_spent, const void *txid, __u32 index, __u32 height, __s64 value,
	 __u8 is_coinbase)
{
	return emit_coin(TP_UTXOCACHE_SPENT, txid, index, height, value, is_coinbase);
}

SEC("usdt")
int USDT(utxocache_uncache, const void *txid, __u32 index, __u32 height, __s64 value,
	 __u8 is_coinbase)
{
	return emit_coin(TP_UTXOCACHE_UNCACHE, txid, index, height, value, is_coinbase);
}

SEC("usdt")
int USDT(utxocache_flush, __s64 duration_us, __u32 mode, __u64 coins_count,
	 __u64 coins_mem_usage, __u8 for_prune)
{
	const enum tracepoint_id tp = TP_UTXOCACHE_FLUSH;
	EVENT(utxocache_flush_record) *e = reserve_event(tp, sizeof(*e));

	if (!e)
		return 0;
	e->rec.duration_us = duration_us;
	e->rec.mode = mode;
	e->rec._pad = 0;
	e->rec.coins_count = coins_count;
	e->rec.coins_mem_usage = coins_mem_usage;
	e->rec.for_prune = for_prune;
	__builtin_memset(e->rec._pad2, 0, sizeof(e->rec._pad2));
	SUBMIT(e, tp);
	return 0;
}
