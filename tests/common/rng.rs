//! A seeded source of random numbers for the randomized tests (the soak,
//! the storm): a seed gives the same run every time, with no dependency.

/// xorshift64*: good enough for test data.
#[derive(Clone)]
pub struct Rng(u64);

impl Rng {
    /// Seeds are mixed, so that neighbouring seeds give unrelated runs
    /// (and never 0, where xorshift stays).
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Below `n` (not 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    /// One of `xs` (not empty).
    pub fn pick<T: Copy>(&mut self, xs: &[T]) -> T {
        xs[self.below(xs.len() as u64) as usize]
    }
}
