//! How the embedded store keeps one order: a fixed header and a zstd frame of its JSON,
//! compressed against a dictionary.
//!
//! Orders are small (about 3.2 KB) and alike: on its own, one compresses 2.8x (1,157 B at
//! level 3); against a dictionary of the store's first 128 orders (their keys, categories,
//! cities, the shape of line items) 6.3x (517 B), at the same speed (about 11 us an order). The dictionary is zstd's "raw content" kind, the sample orders
//! concatenated, because building a trained one needs zstd's dictionary builder, which the
//! Parquet writer's zstd build leaves out (turning it on would rebuild Arrow and DataFusion for
//! a few percent). It is made once, from the store's first orders, and kept in the file.

use std::collections::HashMap;

use zstd::bulk::{Compressor, Decompressor};
use zstd::dict::{DecoderDictionary, EncoderDictionary};

use crate::{NewOrder, StoreError};

/// Orders a dictionary is made from (at most).
pub(crate) const DICTIONARY_SAMPLES: usize = 128;
/// Largest dictionary: zstd looks back this far into it.
const DICTIONARY_BYTES: usize = 384 * 1024;
/// A dictionary is made only once the samples hold this much (a few orders' worth).
const MIN_DICTIONARY_BYTES: usize = 24 * 1024;
/// Bytes before the zstd frame: event time, id hash, dictionary id, JSON length.
pub(crate) const HEADER_BYTES: usize = 8 + 16 + 4 + 4;
/// Batches at least this large are compressed on two threads.
const PARALLEL_FROM: usize = 256;

/// What precedes an order's compressed JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Header {
    pub time_ms: i64,
    pub id_hash: u128,
    pub dictionary: u32,
    pub json_len: u32,
}

impl Header {
    pub fn read(value: &[u8]) -> Result<Header, StoreError> {
        if value.len() < HEADER_BYTES {
            return Err(StoreError::Failed(format!(
                "a stored order is {} bytes, shorter than its header",
                value.len()
            )));
        }
        let mut time = [0u8; 8];
        time.copy_from_slice(&value[..8]);
        let mut id = [0u8; 16];
        id.copy_from_slice(&value[8..24]);
        let mut dict = [0u8; 4];
        dict.copy_from_slice(&value[24..28]);
        let mut len = [0u8; 4];
        len.copy_from_slice(&value[28..32]);
        Ok(Header {
            time_ms: i64::from_le_bytes(time),
            id_hash: u128::from_le_bytes(id),
            dictionary: u32::from_le_bytes(dict),
            json_len: u32::from_le_bytes(len),
        })
    }

    fn write(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.time_ms.to_le_bytes());
        out.extend_from_slice(&self.id_hash.to_le_bytes());
        out.extend_from_slice(&self.dictionary.to_le_bytes());
        out.extend_from_slice(&self.json_len.to_le_bytes());
    }
}

/// The hash of an order id in the store's keys (with the event time).
pub(crate) fn id_hash(order_id: &str) -> u128 {
    xxhash_rust::xxh3::xxh3_128(order_id.as_bytes())
}

/// Whether a dictionary of `bytes` is as large as one gets.
pub(crate) fn is_full(bytes: usize) -> bool {
    bytes >= DICTIONARY_BYTES * 9 / 10
}

/// A dictionary's bytes from sample orders (newest last), or None while they are too few.
pub(crate) fn dictionary_from(samples: &[String]) -> Option<Vec<u8>> {
    let total: usize = samples.iter().map(String::len).sum();
    if total < MIN_DICTIONARY_BYTES {
        return None;
    }
    // zstd finds matches best in the dictionary's end: keep the newest samples whole.
    let mut chosen: Vec<&str> = Vec::new();
    let mut bytes = 0;
    for s in samples.iter().rev() {
        if bytes + s.len() > DICTIONARY_BYTES {
            break;
        }
        bytes += s.len();
        chosen.push(s);
    }
    let mut out = Vec::with_capacity(bytes);
    for s in chosen.iter().rev() {
        out.extend_from_slice(s.as_bytes());
    }
    (!out.is_empty()).then_some(out)
}

struct Dictionary {
    decoder: DecoderDictionary<'static>,
    bytes: usize,
}

/// The store's dictionaries and which one new orders use.
pub(crate) struct Codec {
    level: i32,
    /// Every dictionary, for reading.
    dictionaries: HashMap<u32, Dictionary>,
    /// The newest one, prepared for compressing.
    encoder: Option<(u32, EncoderDictionary<'static>)>,
    /// Dictionary of new orders; 0 = none.
    current: u32,
    /// No better dictionary can be made from the store's first orders (not stored: one more
    /// attempt after a restart).
    settled: bool,
}

impl std::fmt::Debug for Codec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Codec")
            .field("level", &self.level)
            .field("dictionaries", &self.dictionaries.len())
            .field("current", &self.current)
            .finish()
    }
}

fn broken(what: &str, e: std::io::Error) -> StoreError {
    StoreError::Failed(format!("{what}: {e}"))
}

impl Codec {
    pub fn new(level: i32) -> Self {
        Codec {
            level,
            dictionaries: HashMap::new(),
            encoder: None,
            current: 0,
            settled: false,
        }
    }

    /// Learns dictionary `id` (its raw bytes, as stored). Only the newest can compress.
    pub fn add(&mut self, id: u32, raw: &[u8]) {
        self.dictionaries.insert(
            id,
            Dictionary {
                decoder: DecoderDictionary::copy(raw),
                bytes: raw.len(),
            },
        );
        if self.encoder.as_ref().is_none_or(|(newest, _)| id > *newest) {
            self.encoder = Some((id, EncoderDictionary::copy(raw, self.level)));
        }
    }

    /// Forgets dictionary `id` (made in a transaction that did not commit): new orders are
    /// compressed without a dictionary until another is made.
    pub fn forget(&mut self, id: u32) {
        self.dictionaries.remove(&id);
        if self
            .encoder
            .as_ref()
            .is_some_and(|(newest, _)| *newest == id)
        {
            self.encoder = None;
        }
        if self.current == id {
            self.current = 0;
        }
        self.settled = false;
    }

    /// New orders are compressed with dictionary `id` if it is the newest (else none).
    pub fn use_dictionary(&mut self, id: u32) {
        self.current = match &self.encoder {
            Some((newest, _)) if *newest == id => id,
            _ => 0,
        };
    }

    #[cfg(test)]
    pub fn current(&self) -> u32 {
        self.current
    }

    /// Bytes of the current dictionary (0: none).
    pub fn current_bytes(&self) -> usize {
        self.dictionaries.get(&self.current).map_or(0, |d| d.bytes)
    }

    pub fn settled(&self) -> bool {
        self.settled
    }

    pub fn settle(&mut self, settled: bool) {
        self.settled = settled;
    }

    fn compressor(&self) -> Result<Compressor<'_>, StoreError> {
        match &self.encoder {
            Some((id, encoder)) if *id == self.current => {
                Compressor::with_prepared_dictionary(encoder)
            }
            _ => Compressor::new(self.level),
        }
        .map_err(|e| broken("cannot start zstd", e))
    }

    fn compress_part(&self, orders: &[&NewOrder]) -> Result<Vec<Vec<u8>>, StoreError> {
        let mut zstd = self.compressor()?;
        // 4 bytes an order: a frame read with the wrong dictionary is an error, not garbage.
        zstd.set_parameter(zstd::zstd_safe::CParameter::ChecksumFlag(true))
            .map_err(|e| broken("cannot start zstd", e))?;
        orders
            .iter()
            .map(|order| {
                let frame = zstd
                    .compress(order.json.as_bytes())
                    .map_err(|e| broken("cannot compress an order", e))?;
                let json_len = u32::try_from(order.json.len()).map_err(|_| {
                    StoreError::Failed(format!(
                        "order {} is {} bytes, more than the store keeps",
                        order.order_id,
                        order.json.len()
                    ))
                })?;
                let mut value = Vec::with_capacity(HEADER_BYTES + frame.len());
                Header {
                    time_ms: order.time_ms,
                    id_hash: id_hash(&order.order_id),
                    dictionary: self.current,
                    json_len,
                }
                .write(&mut value);
                value.extend_from_slice(&frame);
                Ok(value)
            })
            .collect()
    }

    /// Each order as a stored value, in order; large batches on two threads.
    pub fn compress_all<'a>(
        &self,
        orders: impl Iterator<Item = &'a NewOrder>,
    ) -> Result<Vec<Vec<u8>>, StoreError> {
        let orders: Vec<&NewOrder> = orders.collect();
        if orders.len() < PARALLEL_FROM {
            return self.compress_part(&orders);
        }
        let (a, b) = orders.split_at(orders.len() / 2);
        let (first, second) = std::thread::scope(|scope| {
            let other = scope.spawn(|| self.compress_part(b));
            let mine = self.compress_part(a);
            let theirs = other
                .join()
                .unwrap_or_else(|_| Err(StoreError::Failed("compressing orders panicked".into())));
            (mine, theirs)
        });
        let mut all = first?;
        all.extend(second?);
        Ok(all)
    }

    /// A reader of stored values (keeps one zstd context per dictionary it meets).
    pub fn decoder(&self) -> Decoder<'_> {
        Decoder {
            codec: self,
            contexts: HashMap::new(),
        }
    }
}

pub(crate) struct Decoder<'c> {
    codec: &'c Codec,
    contexts: HashMap<u32, Decompressor<'c>>,
}

impl Decoder<'_> {
    pub fn decompress(&mut self, value: &[u8]) -> Result<String, StoreError> {
        let header = Header::read(value)?;
        let zstd = match self.contexts.entry(header.dictionary) {
            std::collections::hash_map::Entry::Occupied(o) => o.into_mut(),
            std::collections::hash_map::Entry::Vacant(v) => {
                let made = if header.dictionary == 0 {
                    Decompressor::new()
                } else {
                    let d = self
                        .codec
                        .dictionaries
                        .get(&header.dictionary)
                        .ok_or_else(|| {
                            StoreError::Failed(format!(
                                "a stored order needs dictionary {}, which the store does not hold",
                                header.dictionary
                            ))
                        })?;
                    Decompressor::with_prepared_dictionary(&d.decoder)
                };
                v.insert(made.map_err(|e| broken("cannot start zstd", e))?)
            }
        };
        let json = zstd
            .decompress(&value[HEADER_BYTES..], header.json_len as usize)
            .map_err(|e| broken("a stored order cannot be decompressed", e))?;
        String::from_utf8(json)
            .map_err(|_| StoreError::Failed("a stored order is not UTF-8 text".into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn order(n: usize) -> NewOrder {
        NewOrder {
            order_id: format!("id-{n}"),
            time_ms: 1_700_000_000_000 + n as i64,
            json: format!(
                "{{\"order_id\":\"id-{n}\",\"items\":[{}],\"city\":\"Springfield\"}}",
                (0..40)
                    .map(|i| format!("{{\"sku\":\"SKU-{}\",\"qty\":{}}}", (n * 7 + i) % 97, i % 5))
                    .collect::<Vec<_>>()
                    .join(",")
            ),
        }
    }

    #[test]
    fn round_trips_with_and_without_a_dictionary() {
        let orders: Vec<NewOrder> = (0..600).map(order).collect();
        let mut codec = Codec::new(3);
        let plain = codec.compress_all(orders.iter()).expect("compress");
        let samples: Vec<String> = orders[..64].iter().map(|o| o.json.clone()).collect();
        let raw = dictionary_from(&samples).expect("enough samples");
        assert!(raw.len() <= DICTIONARY_BYTES);
        codec.add(1, &raw);
        codec.use_dictionary(1);
        let with_dict = codec.compress_all(orders.iter()).expect("compress");
        let mut decoder = codec.decoder();
        for ((o, p), d) in orders.iter().zip(&plain).zip(&with_dict) {
            assert_eq!(decoder.decompress(p).expect("plain"), o.json);
            assert_eq!(decoder.decompress(d).expect("dict"), o.json);
            let h = Header::read(d).expect("header");
            assert_eq!(
                (h.time_ms, h.id_hash, h.dictionary),
                (o.time_ms, id_hash(&o.order_id), 1)
            );
        }
        let size = |v: &[Vec<u8>]| v.iter().map(Vec::len).sum::<usize>();
        assert!(size(&with_dict) < size(&plain), "the dictionary must pay");
    }

    #[test]
    fn too_few_samples_make_no_dictionary_and_unknown_ones_are_refused() {
        assert!(dictionary_from(&["{}".to_string()]).is_none());
        let mut codec = Codec::new(3);
        codec.use_dictionary(7);
        assert_eq!(codec.current(), 0);
        let mut value = codec
            .compress_all([order(1)].iter())
            .expect("compress")
            .remove(0);
        value[24] = 9;
        let err = codec
            .decoder()
            .decompress(&value)
            .expect_err("dictionary 9 is unknown");
        assert!(err.to_string().contains("dictionary 9"), "{err}");
        assert!(Header::read(&value[..10]).is_err());
    }
}
