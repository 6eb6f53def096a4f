//! The one table of tracepoints. Every stage (BPF program names, loader attach, publisher
//! decoder and NATS subject) is keyed by [`Tracepoint`]; adding a tracepoint starts here.

use crate::records::{
    AddrmanNewRecord, AddrmanTriedRecord, BlockConnectedRecord, ConnectionRecord, Layout, MempoolAddedRecord,
    MempoolRejectedRecord, MempoolRemovedRecord, MempoolReplacedRecord, MessageRecord, MisbehavingRecord, RecordLayout,
};

/// The seed's tracepoint categories, each switched by one command-line flag.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Category {
    /// `--no-p2pmsg-tracepoints`
    P2pMessages,
    /// `--no-connection-tracepoints`
    Connections,
    /// `--no-mempool-tracepoints`
    Mempool,
    /// `--no-validation-tracepoints`
    Validation,
    /// `--addrman-tracepoints` (off by default: not in Bitcoin Core)
    Addrman,
}

impl Category {
    /// The categories hooked unless switched off: Bitcoin Core's own.
    pub const DEFAULT: [Category; 4] =
        [Category::P2pMessages, Category::Connections, Category::Mempool, Category::Validation];
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

            /// The id carried in BPF records and IPC frames (`enum tracepoint_id` in C).
            pub const fn id(self) -> u16 {
                self as u16
            }

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
}

impl Tracepoint {
    /// Tracepoints hooked when their category is enabled; addrman is opt-in.
    pub fn enabled(categories: &[Category]) -> Vec<Tracepoint> {
        Self::ALL.iter().copied().filter(|tp| categories.contains(&tp.category())).collect()
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
        assert_eq!(Tracepoint::ValidationBlockConnected.program(), "validation_block_connected");
    }

    #[test]
    fn default_categories_give_the_twelve_core_tracepoints() {
        let enabled = Tracepoint::enabled(&Category::DEFAULT);
        assert_eq!(enabled.len(), 12);
        assert!(!enabled.contains(&Tracepoint::AddrmanAttemptAdd));
    }
}
