//! The one table of tracepoints (docs/tracepoints.md). Everything a tracepoint implies is
//! here: its id, provider and name, category, record layout; and per category its
//! command-line switch, whether it is on by default, its BPF ring and its NATS subject. The
//! BPF side's ids, drop causes and ring maps are generated from it (`crate::c_header`), the
//! loader's and the launcher's flags are derived from it (`crate::cli`), and the publisher's
//! decoder and the simulator match on [`Tracepoint`] exhaustively. Adding a tracepoint starts
//! with one line below.

use crate::records::{
    AddrmanNewRecord, AddrmanTriedRecord, BlockConnectedRecord, ConnectionRecord, Layout, MempoolAddedRecord,
    MempoolRejectedRecord, MempoolRemovedRecord, MempoolReplacedRecord, MessageRecord, MisbehavingRecord, RecordLayout,
    UtxocacheCoinRecord, UtxocacheFlushRecord,
};

/// A BPF ring buffer. Bulky or numerous events get one of their own, so that a flood of them
/// cannot crowd out the others.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Ring {
    /// P2P messages, up to 4 MiB each.
    Messages,
    /// Connection, mempool, validation and addrman events.
    Events,
    /// UTXO cache changes: connecting one block fires thousands.
    Utxocache,
}

impl Ring {
    pub const ALL: [Ring; 3] = [Ring::Messages, Ring::Events, Ring::Utxocache];

    /// Index of the ring in the loader's list and in the BPF programs' wakeup state.
    pub const fn index(self) -> usize {
        self as usize
    }

    /// The ring's map in the BPF object.
    pub const fn map_name(self) -> &'static str {
        match self {
            Ring::Messages => "messages",
            Ring::Events => "events",
            Ring::Utxocache => "utxocache",
        }
    }

    /// The loader's flag that sizes it.
    pub const fn size_flag(self) -> &'static str {
        match self {
            Ring::Messages => "message-ring-bytes",
            Ring::Events => "event-ring-bytes",
            Ring::Utxocache => "utxocache-ring-bytes",
        }
    }

    pub const fn default_bytes(self) -> u32 {
        match self {
            Ring::Messages => 32 << 20,
            Ring::Events => 2 << 20,
            Ring::Utxocache => 4 << 20,
        }
    }

    /// The smallest size the loader accepts: the message ring must hold a 4 MiB message.
    pub const fn min_bytes(self) -> u32 {
        match self {
            Ring::Messages => 8 << 20,
            Ring::Events | Ring::Utxocache => 64 << 10,
        }
    }
}

macro_rules! categories {
    ($( $(#[$doc:meta])* $variant:ident: $flag:literal, $default_on:literal, $subject:literal, $ring:ident, $help:literal; )+) => {
        /// A group of tracepoints switched on or off by one command-line flag.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum Category {
            $( $(#[$doc])* $variant, )+
        }

        impl Category {
            pub const ALL: &'static [Category] = &[ $( Category::$variant, )+ ];

            /// The flag that switches it (without `--`): `no-…` for the categories that are on
            /// by default, as the seed's CLI has them.
            pub const fn flag(self) -> &'static str {
                match self { $( Category::$variant => $flag, )+ }
            }

            /// Hooked unless switched off: Bitcoin Core's own tracepoints, as upstream.
            pub const fn default_on(self) -> bool {
                match self { $( Category::$variant => $default_on, )+ }
            }

            /// The NATS subject of its events (docs/wire-format.md).
            pub const fn subject(self) -> &'static str {
                match self { $( Category::$variant => $subject, )+ }
            }

            /// The BPF ring its records go through.
            pub const fn ring(self) -> Ring {
                match self { $( Category::$variant => Ring::$ring, )+ }
            }

            /// The flag's help text.
            pub const fn help(self) -> &'static str {
                match self { $( Category::$variant => $help, )+ }
            }
        }
    };
}

categories! {
    P2pMessages: "no-p2pmsg-tracepoints", true, "netmsg", Messages,
        "Don't hook the P2P message tracepoints (net:inbound_message, net:outbound_message)";
    Connections: "no-connection-tracepoints", true, "netconn", Events,
        "Don't hook the connection tracepoints (net:*_connection)";
    Mempool: "no-mempool-tracepoints", true, "mempool", Events,
        "Don't hook the mempool tracepoints (mempool:*)";
    Validation: "no-validation-tracepoints", true, "validation", Events,
        "Don't hook the validation tracepoints (validation:block_connected)";
    /// Not in Bitcoin Core: needs a binary patched with them. Upstream removed the addrman
    /// events from its schema and tools (peer-observer #412, April 2026): on its one-token
    /// `addrman` they would stop its tools, which panic on an `ebpf` event they do not know.
    Addrman: "addrman-tracepoints", false, "peer-observer-ebpf.addrman", Events,
        "Hook the addrman tracepoints (not in Bitcoin Core; needs a patched binary), published on peer-observer-ebpf.addrman";
    /// This project's own subject and messages: peer-observer's tools subscribe to `*` (one
    /// token) and stop on anything that is not their `event.Event`, so the subject has two.
    Utxocache: "utxocache-tracepoints", false, "peer-observer-ebpf.utxocache", Utxocache,
        "Hook the UTXO cache tracepoints (utxocache:*), published on peer-observer-ebpf.utxocache";
}

impl Category {
    /// The categories hooked when no flag is given.
    pub fn defaults() -> Vec<Category> {
        Self::ALL.iter().copied().filter(|c| c.default_on()).collect()
    }
}

macro_rules! tracepoints {
    ($( $variant:ident = $id:literal : $provider:literal, $name:literal, $category:ident, $layout:ty; )+) => {
        /// A Bitcoin Core USDT tracepoint this extractor can hook.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        #[repr(u16)]
        pub enum Tracepoint {
            $( $variant = $id, )+
        }

        impl Tracepoint {
            /// Every tracepoint, in id order.
            pub const ALL: &'static [Tracepoint] = &[ $( Tracepoint::$variant, )+ ];

            pub const fn from_id(id: u16) -> Option<Self> {
                match id {
                    $( $id => Some(Tracepoint::$variant), )+
                    _ => None,
                }
            }

            /// USDT provider, e.g. `net`.
            pub const fn provider(self) -> &'static str {
                match self { $( Tracepoint::$variant => $provider, )+ }
            }

            /// USDT probe name, e.g. `inbound_message`.
            pub const fn name(self) -> &'static str {
                match self { $( Tracepoint::$variant => $name, )+ }
            }

            /// Name of the BPF program handling it: `<provider>_<name>`.
            pub const fn program(self) -> &'static str {
                match self { $( Tracepoint::$variant => concat!($provider, "_", $name), )+ }
            }

            pub const fn category(self) -> Category {
                match self { $( Tracepoint::$variant => Category::$category, )+ }
            }

            /// Layout of the record body the BPF program emits for this tracepoint.
            pub const fn layout(self) -> &'static Layout {
                match self { $( Tracepoint::$variant => &<$layout as RecordLayout>::LAYOUT, )+ }
            }
        }
    };
}

tracepoints! {
    NetInboundMessage = 0: "net", "inbound_message", P2pMessages, MessageRecord;
    NetOutboundMessage = 1: "net", "outbound_message", P2pMessages, MessageRecord;
    NetInboundConnection = 2: "net", "inbound_connection", Connections, ConnectionRecord;
    NetOutboundConnection = 3: "net", "outbound_connection", Connections, ConnectionRecord;
    NetClosedConnection = 4: "net", "closed_connection", Connections, ConnectionRecord;
    NetEvictedInboundConnection = 5: "net", "evicted_inbound_connection", Connections, ConnectionRecord;
    NetMisbehavingConnection = 6: "net", "misbehaving_connection", Connections, MisbehavingRecord;
    MempoolAdded = 7: "mempool", "added", Mempool, MempoolAddedRecord;
    MempoolRemoved = 8: "mempool", "removed", Mempool, MempoolRemovedRecord;
    MempoolReplaced = 9: "mempool", "replaced", Mempool, MempoolReplacedRecord;
    MempoolRejected = 10: "mempool", "rejected", Mempool, MempoolRejectedRecord;
    ValidationBlockConnected = 11: "validation", "block_connected", Validation, BlockConnectedRecord;
    AddrmanAttemptAdd = 12: "addrman", "attempt_add", Addrman, AddrmanNewRecord;
    AddrmanMoveToGood = 13: "addrman", "move_to_good", Addrman, AddrmanTriedRecord;
    UtxocacheAdd = 14: "utxocache", "add", Utxocache, UtxocacheCoinRecord;
    UtxocacheSpent = 15: "utxocache", "spent", Utxocache, UtxocacheCoinRecord;
    UtxocacheUncache = 16: "utxocache", "uncache", Utxocache, UtxocacheCoinRecord;
    UtxocacheFlush = 17: "utxocache", "flush", Utxocache, UtxocacheFlushRecord;
}

impl Tracepoint {
    /// The id carried in BPF records and IPC frames (`enum tracepoint_id` in C).
    pub const fn id(self) -> u16 {
        self as u16
    }

    /// The NATS subject of its events.
    pub const fn subject(self) -> &'static str {
        self.category().subject()
    }

    /// The BPF ring its records go through.
    pub const fn ring(self) -> Ring {
        self.category().ring()
    }

    /// The tracepoints of the given categories, in id order.
    pub fn enabled(categories: &[Category]) -> Vec<Tracepoint> {
        Self::ALL.iter().copied().filter(|tp| categories.contains(&tp.category())).collect()
    }

    /// The tracepoints hooked when no flag is given.
    pub fn defaults() -> Vec<Tracepoint> {
        Self::enabled(&Category::defaults())
    }

    /// Parses `provider:name`.
    pub fn from_full_name(full: &str) -> Option<Self> {
        let (provider, name) = full.split_once(':')?;
        Self::ALL.iter().copied().find(|tp| tp.provider() == provider && tp.name() == name)
    }
}

impl std::fmt::Display for Tracepoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.provider(), self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_dense_and_round_trip() {
        for (i, tp) in Tracepoint::ALL.iter().enumerate() {
            assert_eq!(tp.id() as usize, i);
            assert_eq!(Tracepoint::from_id(tp.id()), Some(*tp));
            assert_eq!(Tracepoint::from_full_name(&tp.to_string()), Some(*tp));
        }
        assert_eq!(Tracepoint::from_id(Tracepoint::ALL.len() as u16), None);
    }

    #[test]
    fn program_names_follow_provider_and_name() {
        assert_eq!(Tracepoint::NetInboundMessage.program(), "net_inbound_message");
        assert_eq!(Tracepoint::UtxocacheFlush.program(), "utxocache_flush");
    }

    #[test]
    fn defaults_are_bitcoin_cores_twelve_peer_observer_tracepoints() {
        let defaults = Tracepoint::defaults();
        assert_eq!(defaults.len(), 12);
        assert!(defaults.iter().all(|tp| !matches!(tp.provider(), "addrman" | "utxocache")));
    }

    #[test]
    fn switches_of_default_categories_switch_them_off_and_the_others_on() {
        for c in Category::ALL {
            assert_eq!(c.flag().starts_with("no-"), c.default_on(), "{c:?}");
            assert!(c.flag().ends_with("-tracepoints"), "{c:?}");
        }
    }

    #[test]
    fn subjects_outside_peer_observers_schema_are_outside_its_wildcard() {
        for c in Category::ALL {
            // Upstream's schema since #412 (April 2026): no addrman events.
            let upstream = !matches!(c, Category::Utxocache | Category::Addrman);
            assert_eq!(!c.subject().contains('.'), upstream, "{c:?}: peer-observer's tools subscribe to `*`");
        }
    }

    #[test]
    fn every_ring_carries_some_category() {
        for ring in Ring::ALL {
            assert!(Category::ALL.iter().any(|c| c.ring() == ring), "{ring:?}");
            assert!(ring.default_bytes().is_power_of_two() && ring.default_bytes() >= ring.min_bytes());
            assert_eq!(Ring::ALL[ring.index()], ring);
        }
    }
}
