/* Bitcoin Core's tracepoints, fired the way Bitcoin Core fires them (src/util/trace.h):
 * systemtap probes in variadic mode, each guarded by a semaphore in section `.probes` that a
 * tracer increments when it attaches. Argument types match Bitcoin Core's call sites, so
 * `readelf -n` shows the same widths and signedness (e.g. `-8@` for NodeId, `8@` for size_t,
 * `4@` for enum Network, `1@` for bool). Each function returns whether the probe fired.
 *
 * The compiler picks each argument's operand. In an -O2 bitcoind most are registers, others
 * stack slots, indexed slots or constants, and one tracepoint may have several sites. Some
 * sites below are written to get each of those forms, so that tests read every form a
 * tracer must (simulator/tests/notes.rs checks that they are there). */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define SDT_USE_VARIADIC
#define _SDT_HAS_SEMAPHORES 1
#include <sys/sdt.h>

#define TRACEPOINT_SEMAPHORE(context, event) \
	unsigned short context##_##event##_semaphore __attribute__((section(".probes")))
#define TRACEPOINT_ACTIVE(context, event) (context##_##event##_semaphore > 0)
#define TRACEPOINT(context, event, ...)                              \
	do {                                                         \
		if (!TRACEPOINT_ACTIVE(context, event))              \
			return false;                                \
		STAP_PROBEV(context, event, __VA_ARGS__);            \
		return true;                                         \
	} while (0)

/* Unscoped and without a fixed type, like Bitcoin Core's `enum Network`. */
enum Network { NET_UNROUTABLE = 0, NET_IPV4, NET_IPV6, NET_ONION, NET_I2P, NET_CJDNS, NET_INTERNAL, NET_MAX };

TRACEPOINT_SEMAPHORE(net, inbound_message);
TRACEPOINT_SEMAPHORE(net, outbound_message);
TRACEPOINT_SEMAPHORE(net, inbound_connection);
TRACEPOINT_SEMAPHORE(net, outbound_connection);
TRACEPOINT_SEMAPHORE(net, closed_connection);
TRACEPOINT_SEMAPHORE(net, evicted_inbound_connection);
TRACEPOINT_SEMAPHORE(net, misbehaving_connection);
TRACEPOINT_SEMAPHORE(mempool, added);
TRACEPOINT_SEMAPHORE(mempool, removed);
TRACEPOINT_SEMAPHORE(mempool, replaced);
TRACEPOINT_SEMAPHORE(mempool, rejected);
TRACEPOINT_SEMAPHORE(validation, block_connected);
TRACEPOINT_SEMAPHORE(addrman, attempt_add);
TRACEPOINT_SEMAPHORE(addrman, move_to_good);
TRACEPOINT_SEMAPHORE(utxocache, add);
TRACEPOINT_SEMAPHORE(utxocache, spent);
TRACEPOINT_SEMAPHORE(utxocache, uncache);
TRACEPOINT_SEMAPHORE(utxocache, flush);

#define SITE __attribute__((noinline)) bool

SITE sim_net_inbound_message(int64_t id, const char *addr, const char *conn_type,
			     const char *msg_type, size_t size, const unsigned char *data)
{
	TRACEPOINT(net, inbound_message, id, addr, conn_type, msg_type, size, data);
}

SITE sim_net_outbound_message(int64_t id, const char *addr, const char *conn_type,
			      const char *msg_type, size_t size, const unsigned char *data)
{
	TRACEPOINT(net, outbound_message, id, addr, conn_type, msg_type, size, data);
}

SITE sim_net_inbound_connection(int64_t id, const char *addr, const char *conn_type,
				uint32_t network, size_t existing)
{
	enum Network n = (enum Network)network;
	TRACEPOINT(net, inbound_connection, id, addr, conn_type, n, existing);
}

SITE sim_net_outbound_connection(int64_t id, const char *addr, const char *conn_type,
				 uint32_t network, size_t existing)
{
	enum Network n = (enum Network)network;
	TRACEPOINT(net, outbound_connection, id, addr, conn_type, n, existing);
}

SITE sim_net_closed_connection(int64_t id, const char *addr, const char *conn_type,
			       uint32_t network, int64_t time_established)
{
	enum Network n = (enum Network)network;
	TRACEPOINT(net, closed_connection, id, addr, conn_type, n, time_established);
}

SITE sim_net_evicted_inbound_connection(int64_t id, const char *addr, const char *conn_type,
					uint32_t network, int64_t time_established)
{
	enum Network n = (enum Network)network;
	TRACEPOINT(net, evicted_inbound_connection, id, addr, conn_type, n, time_established);
}

SITE sim_net_misbehaving_connection(int64_t id, const char *message)
{
	TRACEPOINT(net, misbehaving_connection, id, message);
}

SITE sim_mempool_added(const unsigned char *txid, int32_t vsize, int64_t fee)
{
	TRACEPOINT(mempool, added, txid, vsize, fee);
}

SITE sim_mempool_removed(const unsigned char *txid, const char *reason, int32_t vsize,
			 int64_t fee, uint64_t entry_time)
{
	TRACEPOINT(mempool, removed, txid, reason, vsize, fee, entry_time);
}

/* Every argument from a stack slot (`-4@-12(%rsp)`, `1@-28(%rsp)`): only memory operands. */
#undef STAP_SDT_ARG_CONSTRAINT
#define STAP_SDT_ARG_CONSTRAINT o
SITE sim_mempool_replaced(const unsigned char *replaced_txid, int32_t replaced_vsize,
			  int64_t replaced_fee, uint64_t replaced_entry_time,
			  const unsigned char *replacement_id, int32_t replacement_vsize,
			  int64_t replacement_fee, bool replaced_by_tx)
{
	TRACEPOINT(mempool, replaced, replaced_txid, replaced_vsize, replaced_fee,
		   replaced_entry_time, replacement_id, replacement_vsize, replacement_fee,
		   replaced_by_tx);
}
#undef STAP_SDT_ARG_CONSTRAINT
#define STAP_SDT_ARG_CONSTRAINT nor

SITE sim_mempool_rejected(const unsigned char *txid, const char *reason)
{
	TRACEPOINT(mempool, rejected, txid, reason);
}

/* A one the optimizer cannot see through, as it cannot see a loop counter's value. */
static inline size_t opaque_one(void)
{
	size_t one = 1;

	__asm__("" : "+r"(one));
	return one;
}

/* `value` read from an array element at a run-time index: an indexed operand,
 * `-8@-24(%rsp,%rcx,8)` with 1 in %rcx. */
#define INDEXED(type, value) (((type[2]){ 0, value })[opaque_one()])

SITE sim_validation_block_connected(const unsigned char *hash, int height, size_t transactions,
				    int inputs, int64_t sigops, int64_t duration_ns)
{
	TRACEPOINT(validation, block_connected, hash, height, transactions, INDEXED(int, inputs),
		   sigops, INDEXED(int64_t, duration_ns));
}

SITE sim_addrman_attempt_add(bool inserted, int32_t bucket, int32_t bucket_pos, const char *addr,
			     uint32_t addr_as, const char *source, uint32_t source_as)
{
	TRACEPOINT(addrman, attempt_add, inserted, bucket, bucket_pos, addr, addr_as, source,
		   source_as);
}

SITE sim_addrman_move_to_good(int32_t bucket, int32_t bucket_pos, const char *addr,
			      uint32_t addr_as, const char *source, uint32_t source_as)
{
	TRACEPOINT(addrman, move_to_good, bucket, bucket_pos, addr, addr_as, source, source_as);
}

/* CCoinsViewCache::AddCoin, SpendCoin and Uncache: outpoint.hash.data(), (uint32_t)outpoint.n,
 * (uint32_t)coin.nHeight, (int64_t)coin.out.nValue, (bool)coin.IsCoinBase(). */
SITE sim_utxocache_add(const unsigned char *txid, uint32_t index, uint32_t height, int64_t value,
		       bool is_coinbase)
{
	TRACEPOINT(utxocache, add, txid, index, height, value, is_coinbase);
}

SITE sim_utxocache_spent(const unsigned char *txid, uint32_t index, uint32_t height,
			 int64_t value, bool is_coinbase)
{
	TRACEPOINT(utxocache, spent, txid, index, height, value, is_coinbase);
}

SITE sim_utxocache_uncache(const unsigned char *txid, uint32_t index, uint32_t height,
			   int64_t value, bool is_coinbase)
{
	TRACEPOINT(utxocache, uncache, txid, index, height, value, is_coinbase);
}

/* Chainstate::FlushStateToDisk: the duration in µs, (uint32_t)mode, (uint64_t)coins_count,
 * (uint64_t)coins_mem_usage, (bool)fFlushForPrune. Two sites, each passing `for_prune` as the
 * constant it is there (`1@$1`, `1@$0`), as where the compiler has inlined a caller. */
SITE sim_utxocache_flush(int64_t duration_us, uint32_t mode, uint64_t coins_count,
			 uint64_t coins_mem_usage, bool for_prune)
{
	if (!TRACEPOINT_ACTIVE(utxocache, flush))
		return false;
	if (for_prune)
		STAP_PROBEV(utxocache, flush, duration_us, mode, coins_count, coins_mem_usage,
			    (bool)true);
	else
		STAP_PROBEV(utxocache, flush, duration_us, mode, coins_count, coins_mem_usage,
			    (bool)false);
	return true;
}

/* `--lean`: net:inbound_message `count` times with the same arguments from one C loop, the
 * cheapest firing there is (benchmarks: a lean firing program's load on a tracer). Returns how
 * many of them a tracer saw. */
uint64_t sim_net_inbound_message_loop(uint64_t count, int64_t id, const char *addr,
				      const char *conn_type, const char *msg_type, size_t size,
				      const unsigned char *data)
{
	uint64_t fired = 0;

	for (uint64_t i = 0; i < count; i++)
		fired += sim_net_inbound_message(id, addr, conn_type, msg_type, size, data);
	return fired;
}
