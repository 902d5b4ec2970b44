//! A slot address in the volumetric grid: (z, y, x, l), reference network.md §1.

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Coord {
    pub z: usize,
    pub y: usize,
    pub x: usize,
    pub l: usize,
}

impl Coord {
    pub const ORIGIN: Coord = Coord { z: 0, y: 0, x: 0, l: 0 };
}

impl std::fmt::Display for Coord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "({},{},{},{})", self.z, self.y, self.x, self.l)
    }
}
