//! One record in bytes, the same for every backend: postcard, which refuses
//! a length longer than its input, so a damaged record is an error and never
//! a huge allocation. Encoded by the core (`RecordRef::encode_into`, what a
//! `PackedRecords` holds); decoded here, and the round trip is tested below.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use cache_core::Record;
use serde::Deserialize;

/// Seconds and nanoseconds since the Unix epoch.
type WallClock = (u64, u32);

#[derive(Deserialize)]
struct Decoding {
    #[serde(with = "serde_bytes")]
    key: Vec<u8>,
    #[serde(with = "serde_bytes")]
    value: Vec<u8>,
    expires_at: Option<WallClock>,
}

/// Expiry as wall-clock parts; times before 1970 count as 1970 (long past).
#[cfg_attr(not(feature = "sqlite"), allow(dead_code))]
pub(crate) fn to_parts(at: SystemTime) -> WallClock {
    let since = at.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO);
    (since.as_secs(), since.subsec_nanos())
}

/// Wall-clock parts back to a time; `None` if they are out of range.
pub(crate) fn from_parts((secs, nanos): WallClock) -> Option<SystemTime> {
    if nanos >= 1_000_000_000 {
        return None;
    }
    UNIX_EPOCH.checked_add(Duration::new(secs, nanos))
}

/// Decodes one record off the front of `bytes`, returning it and the rest.
pub(crate) fn decode_from(bytes: &[u8]) -> Result<(Record, &[u8]), String> {
    let (decoding, rest) = postcard::take_from_bytes::<Decoding>(bytes).map_err(|e| e.to_string())?;
    let expires_at = match decoding.expires_at {
        None => None,
        Some(parts) => Some(from_parts(parts).ok_or("an expiry out of range")?),
    };
    Ok((Record { key: decoding.key, value: decoding.value, expires_at }, rest))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn arb_record() -> impl Strategy<Value = Record> {
        (
            prop::collection::vec(any::<u8>(), 0..64),
            prop::collection::vec(any::<u8>(), 0..256),
            prop::option::of((0u64..1 << 40, 0u32..1_000_000_000)),
        )
            .prop_map(|(key, value, at)| Record { key, value, expires_at: at.and_then(from_parts) })
    }

    proptest! {
        #[test]
        fn records_round_trip(records in prop::collection::vec(arb_record(), 0..20)) {
            let mut bytes = Vec::new();
            for record in &records {
                record.as_ref().encode_into(&mut bytes);
            }
            let mut rest = bytes.as_slice();
            let mut back = Vec::new();
            while !rest.is_empty() {
                let (record, tail) = decode_from(rest).unwrap();
                back.push(record);
                rest = tail;
            }
            prop_assert_eq!(back, records);
        }

        #[test]
        fn garbage_is_an_error_or_a_record_no_larger_than_its_input(bytes in prop::collection::vec(any::<u8>(), 0..64)) {
            if let Ok((record, rest)) = decode_from(&bytes) {
                prop_assert!(record.key.len() + record.value.len() + rest.len() <= bytes.len());
            }
        }
    }

    #[test]
    fn a_forged_length_is_refused_without_allocating_it() {
        // A key claiming 2^40 bytes (varint), with 3 bytes behind it.
        let forged = [0x80, 0x80, 0x80, 0x80, 0x80, 0x20, 1, 2, 3];
        assert!(decode_from(&forged).is_err());
    }
}
