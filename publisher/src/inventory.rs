//! The body of `inv`, `getdata` and `notfound` (`ebpf_extractor.message.Inv`, `GetData`,
//! `NotFound`: one `repeated InventoryItem items = 1`), kept in its protobuf encoding.
//!
//! An inventory may hold 50,000 items. Decoded into `Vec<InventoryItem>`, each item took an
//! allocation for its hash, and prost walked the list twice more to size and encode it; the
//! publisher spent most of an inventory's time there. Here the items are encoded straight
//! from the P2P payload into one buffer of the exact size, and publishing copies that buffer
//! once. `build.rs` maps the three messages onto this type (prost's `extern_path`).

use prost::bytes::{Buf, BufMut};
use prost::encoding::{self, DecodeContext, WireType};
use prost::{DecodeError, Message};
use serde::ser::{Error as _, SerializeSeq, SerializeStruct};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::proto::bitcoin_primitives::InventoryItem;

/// The tag of `items` (field 1, length-delimited).
const ITEMS_KEY: u8 = 0x0a;
/// An item's encoding when its kind is known: the key of its `bytes` field, 32, the hash.
const KNOWN_ITEM_LEN: usize = 2 + 32;
/// `error = 15` set to true: key (15 << 3 | varint) and 1.
const ERROR_ITEM: [u8; 2] = [0x78, 0x01];

/// The encoded `items` field entries, each `0x0a`, its length and an `InventoryItem`.
#[derive(Clone, Default, PartialEq, Eq, Hash)]
pub struct Inventory {
    encoded: Vec<u8>,
}

impl Inventory {
    /// The encoded size of an entry for an item of P2P type `inv_type`.
    pub fn entry_len(inv_type: u32) -> usize {
        match Self::known_field(inv_type) {
            Some(_) => 2 + KNOWN_ITEM_LEN,
            None if inv_type == 0 => 2 + ERROR_ITEM.len(),
            None => 2 + 2 + 1 + encoding::encoded_len_varint(inv_type.into()) + 2 + 32,
        }
    }

    /// The `InventoryItem` field of a P2P type that has one of its own (docs/wire-format.md,
    /// "Inventory").
    fn known_field(inv_type: u32) -> Option<u8> {
        Some(match inv_type {
            1 => 1,
            2 => 2,
            5 => 3,
            0x4000_0001 => 4,
            0x4000_0002 => 5,
            4 => 6,
            _ => return None,
        })
    }

    /// An empty inventory with room for `bytes` of encoding.
    pub fn with_capacity(bytes: usize) -> Self {
        Inventory { encoded: Vec::with_capacity(bytes) }
    }

    /// Appends a P2P inventory entry: its type and hash as Bitcoin Core sent them
    /// (docs/wire-format.md, "Inventory": MSG_ERROR is `error` whatever its hash).
    pub fn push(&mut self, inv_type: u32, hash: &[u8; 32]) {
        match Self::known_field(inv_type) {
            Some(field) => {
                // One copy of a whole entry: two `extend_from_slice` per item cost twice as much.
                let mut entry = [0; 2 + KNOWN_ITEM_LEN];
                entry[..4].copy_from_slice(&[ITEMS_KEY, KNOWN_ITEM_LEN as u8, field << 3 | 2, 32]);
                entry[4..].copy_from_slice(hash);
                self.encoded.extend_from_slice(&entry);
            }
            None if inv_type == 0 => {
                self.encoded.extend_from_slice(&[ITEMS_KEY, ERROR_ITEM.len() as u8]);
                self.encoded.extend_from_slice(&ERROR_ITEM);
            }
            // `unknown = 7`, an UnknownItem of `inv_type = 1` and `hash = 2`; both lengths are
            // below 128, so each takes one byte.
            None => {
                let unknown = 1 + encoding::encoded_len_varint(inv_type.into()) + 2 + 32;
                self.encoded.extend_from_slice(&[ITEMS_KEY, (2 + unknown) as u8, 7 << 3 | 2, unknown as u8, 1 << 3]);
                encoding::encode_varint(inv_type.into(), &mut self.encoded);
                self.encoded.extend_from_slice(&[2 << 3 | 2, 32]);
                self.encoded.extend_from_slice(hash);
            }
        }
    }

    /// An inventory of these items, as a decoder of the published form would build it.
    pub fn from_items(items: &[InventoryItem]) -> Self {
        let mut inventory = Inventory::default();
        for item in items {
            encoding::message::encode(1, item, &mut inventory.encoded);
        }
        inventory
    }

    /// The items, decoded by prost; fails on an entry that is not an `InventoryItem`.
    pub fn items(&self) -> Result<Vec<InventoryItem>, DecodeError> {
        Items::decode(self.encoded.as_slice()).map(|decoded| decoded.items)
    }
}

/// The generated form of the same message.
#[derive(Clone, PartialEq, prost::Message)]
struct Items {
    #[prost(message, repeated, tag = "1")]
    items: Vec<InventoryItem>,
}

/// The canonical JSON mapping of the message, `{"items": [...]}` without `items` when empty
/// (src/render.rs), written item by item: an inventory's items are never all decoded at once.
impl Serialize for Inventory {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut message = serializer.serialize_struct("Inventory", usize::from(!self.encoded.is_empty()))?;
        if !self.encoded.is_empty() {
            message.serialize_field("items", &Entries(&self.encoded))?;
        }
        message.end()
    }
}

/// An inventory's encoded entries, as a JSON array of its items.
struct Entries<'a>(&'a [u8]);

impl Serialize for Entries<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut items = serializer.serialize_seq(None)?;
        let mut rest = self.0;
        while !rest.is_empty() {
            items.serialize_element(&next_item(&mut rest).map_err(S::Error::custom)?)?;
        }
        items.end()
    }
}

/// Decodes the entry `rest` starts with, an `items` field as [`Inventory`] keeps them.
fn next_item(rest: &mut &[u8]) -> Result<InventoryItem, DecodeError> {
    let (_, wire_type) = encoding::decode_key(rest)?;
    let mut item = InventoryItem::default();
    encoding::message::merge(wire_type, &mut item, rest, DecodeContext::default())?;
    Ok(item)
}

impl<'de> Deserialize<'de> for Inventory {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        /// `null` is the default value in the proto3 mapping, as absence is.
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Json {
            #[serde(default)]
            items: Option<Vec<InventoryItem>>,
        }
        Json::deserialize(deserializer).map(|json| Inventory::from_items(&json.items.unwrap_or_default()))
    }
}

impl std::fmt::Debug for Inventory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.items() {
            Ok(items) => f.debug_struct("Inventory").field("items", &items).finish(),
            Err(e) => f.debug_struct("Inventory").field("undecodable", &e).finish(),
        }
    }
}

impl Message for Inventory {
    fn encode_raw(&self, buf: &mut impl BufMut) {
        buf.put_slice(&self.encoded);
    }

    /// Keeps an `items` entry as it came; [`Inventory::items`] decodes it. Other fields are
    /// skipped, as prost's generated code does.
    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: WireType,
        buf: &mut impl Buf,
        ctx: DecodeContext,
    ) -> Result<(), DecodeError> {
        if tag != 1 {
            return encoding::skip_field(wire_type, tag, buf, ctx);
        }
        // An entry that lies whole in the input's current piece (always, decoding a slice or
        // `Bytes`) is copied from there with its length: no allocation for each of an
        // inventory's up to 50,000 entries. Anything else takes prost's decoder, which refuses
        // a truncated entry.
        if wire_type == WireType::LengthDelimited {
            let chunk = buf.chunk();
            let mut after_len = chunk;
            if let Ok(len) = encoding::decode_varint(&mut after_len) {
                if let Some(len) = usize::try_from(len).ok().filter(|len| *len <= after_len.len()) {
                    let whole = chunk.len() - after_len.len() + len;
                    self.encoded.push(ITEMS_KEY);
                    self.encoded.extend_from_slice(&chunk[..whole]);
                    buf.advance(whole);
                    return Ok(());
                }
            }
        }
        let mut entry = Vec::new();
        encoding::bytes::merge(wire_type, &mut entry, buf, ctx)?;
        encoding::bytes::encode(1, &entry, &mut self.encoded);
        Ok(())
    }

    fn encoded_len(&self) -> usize {
        self.encoded.len()
    }

    fn clear(&mut self) {
        self.encoded.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::bitcoin_primitives::{inventory_item::Item, UnknownItem};

    fn every_kind() -> Vec<(u32, [u8; 32])> {
        [0, 1, 2, 3, 4, 5, 0x4000_0001, 0x4000_0002, 0x4000_0005, u32::MAX]
            .into_iter()
            .enumerate()
            .map(|(i, t)| (t, [i as u8 + 1; 32]))
            .collect()
    }

    /// `{"items": [...]}`, each item as its generated serialiser writes it, and read back.
    #[test]
    fn json_is_the_canonical_mapping_of_the_generated_message() {
        let mut inventory = Inventory::default();
        assert_eq!(serde_json::to_string(&inventory).expect("JSON"), "{}");
        for (inv_type, hash) in every_kind() {
            inventory.push(inv_type, &hash);
        }
        let json = serde_json::to_string(&inventory).expect("JSON");
        let items = inventory.items().expect("items");
        assert_eq!(json, format!(r#"{{"items":{}}}"#, serde_json::to_string(&items).expect("JSON")));
        assert!(json.contains(r#"{"error":true}"#) && json.contains(r#""unknown":{"inv_type":4294967295,"#));
        assert_eq!(serde_json::from_str::<Inventory>(&json).expect("an inventory"), inventory);
        for empty in ["{}", r#"{"items":null}"#, r#"{"items":[]}"#] {
            assert_eq!(serde_json::from_str::<Inventory>(empty).expect("an inventory"), Inventory::default());
        }
        let e = serde_json::from_str::<Inventory>(r#"{"items":[],"count":1}"#).expect_err("no such field");
        assert!(e.to_string().starts_with("unknown field `count`"), "{e}");
    }

    #[test]
    fn encodes_as_prost_encodes_the_generated_items() {
        let mut inventory = Inventory::default();
        let mut items = Vec::new();
        for (inv_type, hash) in every_kind() {
            inventory.push(inv_type, &hash);
            let hash = hash.to_vec();
            let item = match inv_type {
                0 => Item::Error(true),
                1 => Item::Transaction(hash),
                2 => Item::Block(hash),
                4 => Item::CompactBlock(hash),
                5 => Item::Wtx(hash),
                0x4000_0001 => Item::WitnessTransaction(hash),
                0x4000_0002 => Item::WitnessBlock(hash),
                inv_type => Item::Unknown(UnknownItem { inv_type, hash }),
            };
            items.push(InventoryItem { item: Some(item) });
        }
        let generated = Items { items: items.clone() }.encode_to_vec();
        assert_eq!(inventory.encode_to_vec(), generated);
        assert_eq!(inventory, Inventory::from_items(&items));
        assert_eq!(inventory.items(), Ok(items));
        assert_eq!(Inventory::decode(generated.as_slice()), Ok(inventory.clone()));
        // From input in two pieces, split inside an entry: that one takes prost's decoder.
        for split in [1, 2, 40, generated.len() - 1] {
            let (first, second) = generated.split_at(split);
            assert_eq!(Inventory::decode(first.chain(second)), Ok(inventory.clone()), "split at {split}");
        }
    }

    #[test]
    fn entry_len_is_each_kinds_encoded_size() {
        for (inv_type, hash) in every_kind() {
            let mut inventory = Inventory::default();
            inventory.push(inv_type, &hash);
            assert_eq!(inventory.encoded_len(), Inventory::entry_len(inv_type), "type {inv_type:#x}");
        }
    }

    #[test]
    fn decoding_skips_other_fields_and_refuses_a_truncated_item() {
        let mut with_extra = Items { items: vec![InventoryItem { item: Some(Item::Error(true)) }] }.encode_to_vec();
        with_extra.extend_from_slice(&[0x10, 0x05]);
        let decoded = Inventory::decode(with_extra.as_slice()).map(|i| i.items());
        assert_eq!(decoded, Ok(Ok(vec![InventoryItem { item: Some(Item::Error(true)) }])));
        assert!(Inventory::decode(&[0x0a, 0x22, 0x0a][..]).is_err());
        // An entry that is length-delimited but no InventoryItem decodes as a message and fails
        // when its items are asked for.
        let bad = Inventory::decode(&[0x0a, 0x02, 0x0a, 0x05][..]).map(|i| i.items().is_err());
        assert_eq!(bad, Ok(true));
    }
}
