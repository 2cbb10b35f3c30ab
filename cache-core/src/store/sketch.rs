//! How often each key was asked for lately: a count-min sketch of 4-bit
//! counters, halved every `32 × capacity` additions so old popularity fades
//! (TinyLFU's "reset").
//!
//! A key's four counters sit in one 64-byte block (eight words of sixteen
//! counters), picked by its hash, so counting a key touches one cache line:
//! two of its words, two counters in each (see `Sketch::place`). The
//! estimate is the smallest of the four.

/// Words per block: 64 bytes.
const BLOCK: usize = 8;

/// One cache line of counters. Aligned: a plain `u64` allocation starts 16
/// or 32 bytes into a line here (glibc), so every block straddled two lines,
/// and half of all counts and estimates or more touched both.
#[derive(Debug, Clone, Copy, Default)]
#[repr(align(64))]
struct Block([u64; BLOCK]);

const _: () = assert!(size_of::<Block>() == 64 && align_of::<Block>() == 64);

/// The low bit of every counter.
const LOW_BITS: u64 = 0x1111_1111_1111_1111;
/// Every counter's low bit cleared by a halving.
const HALVE: u64 = 0x7777_7777_7777_7777;
/// Additions between halvings, per entry of capacity. Caffeine uses 10;
/// 32 measured better on every Zipf cell of the benchmark (by 0.002-0.01
/// over 10, most at capacity 1,000: a small cache sees too few repeats in
/// 10 × capacity requests to rank keys well), and no worse on its scan
/// and recency workloads. Longer memory would adapt more slowly to a
/// popular set that changes.
const PERIOD: usize = 32;
/// Up to 2^24 words (128 MiB) however large the capacity: beyond that the
/// estimates blur, nothing breaks.
const MAX_WORDS: usize = 1 << 24;

#[derive(Debug)]
pub(super) struct Sketch {
    blocks: Box<[Block]>,
    /// Blocks - 1 (a power of two less one).
    block_mask: usize,
    /// Increments since the last halving.
    additions: usize,
    /// Additions between halvings.
    period: usize,
}

impl Sketch {
    /// A sketch for a cache of `capacity` entries: two words (32 counters)
    /// per entry, rounded up to a power of two, and at least 4,096 words
    /// (32 KiB): a cache sees many more distinct keys than it holds, and a
    /// crowded sketch blurs their counts (one word per entry, Caffeine's
    /// size, measured 0.003-0.005 lower hit ratios at capacity 10,000). Zeroed memory is paged in only as
    /// it is written.
    pub(super) fn new(capacity: usize) -> Self {
        let words = capacity.saturating_mul(2).clamp(4_096, MAX_WORDS).next_power_of_two();
        Sketch {
            blocks: vec![Block::default(); words / BLOCK].into_boxed_slice(),
            block_mask: words / BLOCK - 1,
            additions: 0,
            period: capacity.clamp(1, MAX_WORDS).saturating_mul(PERIOD),
        }
    }

    /// `hash`'s block, its two words there (one in each half) and, for
    /// each, the shifts of the two counters it has there: rows 0 and 1 in
    /// the low and high half of the first word, rows 2 and 3 in the
    /// second, each a counter of eight picked by the hash. Per row that is
    /// as many counters to choose from as two whole words, while a count
    /// touches two words, each with one read-modify-write.
    #[inline]
    fn place(&self, hash: u32) -> (usize, [(usize, [u32; 2]); 2]) {
        // Spread the 32-bit hash over 64 bits: the block index and the
        // counters' choices come from different bits.
        let spread = u64::from(hash).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        let block = (spread >> 40) as usize & self.block_mask;
        let choice = spread as u32 ^ (spread >> 32) as u32;
        let words = std::array::from_fn(|half| {
            let bits = choice >> (half * 8);
            let word = half * (BLOCK / 2) + (bits & 3) as usize;
            let low = ((bits >> 2) & 7) * 4;
            let high = (8 + ((bits >> 5) & 7)) * 4;
            (word, [low, high])
        });
        (block, words)
    }

    /// How often `hash` was counted lately: 0 to 15.
    #[inline]
    pub(super) fn frequency(&self, hash: u32) -> u8 {
        let (block, words) = self.place(hash);
        let block = &self.blocks[block].0;
        words
            .iter()
            .flat_map(|&(word, shifts)| shifts.map(|shift| ((block[word] >> shift) & 15) as u8))
            .min()
            .unwrap_or(0)
    }

    /// Counts `hash` once more (counters stop at 15).
    #[inline]
    pub(super) fn increment(&mut self, hash: u32) {
        let mut added = 0;
        let (block, words) = self.place(hash);
        let block = &mut self.blocks[block].0;
        for (word, [low, high]) in words {
            let w = &mut block[word];
            // The low bit of every counter at 15: those stay. No carry: a
            // counter gets 1 only below 15.
            let full = *w & (*w >> 1) & (*w >> 2) & (*w >> 3) & LOW_BITS;
            let add = ((1 << low) | (1 << high)) & !full;
            *w += add;
            added |= add;
        }
        if added != 0 {
            self.additions += 1;
            if self.additions >= self.period {
                self.halve();
            }
        }
    }

    /// Halves every counter, so a key's count is mostly about the last
    /// period or two.
    #[cold]
    fn halve(&mut self) {
        let mut odd = 0;
        for w in self.blocks.iter_mut().flat_map(|block| &mut block.0) {
            odd += (*w & LOW_BITS).count_ones() as usize;
            *w = (*w >> 1) & HALVE;
        }
        // Each key added 4 counters: the halving lost about a quarter of
        // the odd ones' halves.
        self.additions = (self.additions - (odd / 4).min(self.additions)) / 2;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_saturate_at_fifteen_and_halve() {
        let mut sketch = Sketch::new(1_000);
        for _ in 0..20 {
            sketch.increment(42);
        }
        assert_eq!(sketch.frequency(42), 15);
        assert_eq!(sketch.frequency(43), 0, "a fresh sketch counts nothing else");
        sketch.halve();
        assert_eq!(sketch.frequency(42), 7);
    }

    #[test]
    fn estimates_never_undercount_and_rank_hot_over_cold() {
        let mut sketch = Sketch::new(4_096);
        // Key i is counted i % 8 times: below the halving period.
        for key in 0..2_000u32 {
            for _ in 0..key % 8 {
                sketch.increment(key.wrapping_mul(2_654_435_761));
            }
        }
        let mut over = 0;
        for key in 0..2_000u32 {
            let estimate = sketch.frequency(key.wrapping_mul(2_654_435_761));
            assert!(u32::from(estimate) >= key % 8, "count-min never undercounts");
            over += u32::from(estimate) - key % 8;
        }
        assert!(over < 200, "{over} overcounts in 2,000 keys: the rows collide too often");
    }

    #[test]
    fn old_popularity_fades_after_a_period() {
        let mut sketch = Sketch::new(16);
        for _ in 0..15 {
            sketch.increment(7);
        }
        // A period of additions of other keys triggers a halving or more.
        for key in 100..100 + sketch.period as u32 {
            sketch.increment(key);
        }
        assert!(sketch.frequency(7) < 15, "a halving ran");
    }
}
