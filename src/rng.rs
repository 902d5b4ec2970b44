//! A small seeded PRNG (SplitMix64) for reproducible weight initialisation and shuffling.

#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed ^ 0x9E37_79B9_7F4A_7C15)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in [0, 1).
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
    /// Uniform in (−bound, bound).
    pub fn uniform(&mut self, bound: f32) -> f32 {
        ((self.next_f64() * 2.0 - 1.0) * bound as f64) as f32
    }
    /// Standard normal (Box–Muller; one of the pair is used).
    pub fn normal(&mut self) -> f32 {
        let radius = (-2.0 * (1.0 - self.next_f64()).ln()).sqrt();
        (radius * (std::f64::consts::TAU * self.next_f64()).cos()) as f32
    }
    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = (self.next_u64() % (i as u64 + 1)) as usize;
            items.swap(i, j);
        }
    }
}
