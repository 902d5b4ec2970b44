//! ConvTransposed1D/2D/3D: what differs from the convolution — PyTorch's output size, with the
//! `output_padding` the reference ignores, and its initialisation fan-in. The layer itself is
//! `Conv` with `transposed` set (the kernel computes the transposed convolution's gather form).

use super::conv::ConvConfig;
use crate::error::{Error, Result};

/// (n − 1)·s − 2p + k + output_padding along one axis; `name` is the input field (for errors).
pub fn output_size(kind: &str, name: &str, n: usize, c: &ConvConfig) -> Result<usize> {
    let (s, p, k, extra) = (c.stride, c.padding, c.kernel_size, c.output_padding);
    if extra >= s {
        return Err(Error::Spec(format!("{kind}: output_padding {extra} must be smaller than stride {s}")));
    }
    let full = (n - 1).saturating_mul(s).saturating_add(k).saturating_add(extra);
    let cropped = p.saturating_mul(2);
    if full <= cropped {
        return Err(Error::Spec(format!(
            "{kind}: no output positions along {name}: ({name} {n} − 1)·stride {s} + kernel_size {k} + \
             output_padding {extra} − 2·padding {p} ≤ 0"
        )));
    }
    Ok(full - cropped)
}

/// PyTorch stores a transposed conv's weight as [in][out][k…] and takes fan-in from axis 1, so
/// its initialisation bound comes from filters·taps (not input_channels·taps as for Conv).
pub fn fan_in(filters: usize, taps: usize) -> usize {
    filters * taps
}
