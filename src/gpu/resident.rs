//! Resident GPU state for programs that run many dispatches over buffers that stay in VRAM (a
//! decoder's token step): weight matrices kept in a format the kernels read directly
//! (shaders/matrix.wgsl), bind groups with explicit binding numbers, and recorded dispatches
//! replayed into one compute pass.

use super::context::Context;
use super::GpuWeights;
use crate::codec::Packed;
use crate::dtype::DType;
use crate::error::{Error, Result};

const MATRIX_WGSL: &str = include_str!("../../shaders/matrix.wgsl");
const MATRIX_DOT_WGSL: &str = include_str!("../../shaders/matrix_dot.wgsl");

/// A [rows × cols] weight matrix in VRAM, rows of whole 32-value blocks: `size` bytes at
/// `offset` of `buffer` (a stack's layers share one buffer). `format` is the
/// shaders/matrix.wgsl format number; `bits` the code width of format 6.
pub(crate) struct ResidentMatrix {
    pub buffer: wgpu::Buffer,
    pub offset: u64,
    pub size: u64,
    pub format: u32,
    pub bits: u32,
    pub rows: usize,
    pub cols: usize,
}

/// The same matrix of every layer (all q projections, …) when they share a format: one buffer,
/// layer l's matrix at `l · stride` bytes, so one kernel can reach every layer's.
pub(crate) struct Stack {
    pub buffer: wgpu::Buffer,
    pub stride: u64,
}

/// Where a stack's layers start: bindable offsets (WebGPU's largest offset alignment).
const STACK_ALIGN: u64 = 256;

/// A byte range of a buffer bound on its own.
#[derive(Clone, Copy)]
pub(crate) struct Range<'a> {
    pub buffer: &'a wgpu::Buffer,
    pub offset: u64,
    pub size: u64,
}

impl<'a> Range<'a> {
    pub fn whole(buffer: &'a wgpu::Buffer) -> Range<'a> {
        Range { buffer, offset: 0, size: buffer.size() }
    }
}

const F32: u32 = 0;
const F16: u32 = 1;
const BF16: u32 = 2;
const Q4_0: u32 = 3;
const Q4_1: u32 = 4;
const Q8_0: u32 = 5;
const CODES: u32 = 6;
/// The code width other formats carry: any valid one (the shader's constant expressions for
/// format 6 must still evaluate).
const UNUSED_BITS: u32 = 8;

/// GGML blocks re-laid to whole words: the f16 scale (and Q4_1's minimum) in the first word,
/// then the codes. Q4_1's 20-byte blocks already are; Q4_0 (18) and Q8_0 (34) gain 2 padding
/// bytes after the scale.
fn word_aligned_blocks(p: &Packed) -> Vec<u8> {
    let block = p.dtype.block_bytes().expect("a block dtype");
    let blocks = p.n / DType::BLOCK_VALUES;
    if block.is_multiple_of(4) {
        return p.bytes[..blocks * block].to_vec();
    }
    let mut out = Vec::with_capacity(blocks * (block + 2));
    for b in p.bytes[..blocks * block].chunks_exact(block) {
        out.extend_from_slice(&b[..2]);
        out.extend_from_slice(&[0, 0]);
        out.extend_from_slice(&b[2..]);
    }
    out
}

impl ResidentMatrix {
    /// Uploads `weights` as a [rows × cols] matrix. Packed codes stay packed (decoded in the
    /// shader); 16- to 64-bit integer codes and float64, which no kernel reads directly, are
    /// converted once to the f32 values the CPU computes with.
    pub fn upload(ctx: &Context, label: &str, weights: GpuWeights<'_>, rows: usize, cols: usize) -> Result<ResidentMatrix> {
        let (format, bits, bytes) = encode(label, weights, rows, cols)?;
        let buffer = ctx.buffer_with(label, &bytes, wgpu::BufferUsages::STORAGE)?;
        Ok(ResidentMatrix { size: buffer.size(), buffer, offset: 0, format, bits, rows, cols })
    }

    /// Uploads one [rows × cols] matrix per layer: as a `Stack` when they all share a format,
    /// else each on its own (and no stack).
    pub fn upload_stack(ctx: &Context, label: &str, layers: Vec<GpuWeights<'_>>, rows: usize, cols: usize) -> Result<(Vec<ResidentMatrix>, Option<Stack>)> {
        let encoded = layers.into_iter().map(|w| encode(label, w, rows, cols)).collect::<Result<Vec<_>>>()?;
        let uniform = encoded.windows(2).all(|w| (w[0].0, w[0].1, w[0].2.len()) == (w[1].0, w[1].1, w[1].2.len()));
        if !uniform || encoded.is_empty() {
            let matrices = encoded
                .into_iter()
                .map(|(format, bits, bytes)| {
                    let buffer = ctx.buffer_with(label, &bytes, wgpu::BufferUsages::STORAGE)?;
                    Ok(ResidentMatrix { size: buffer.size(), buffer, offset: 0, format, bits, rows, cols })
                })
                .collect::<Result<_>>()?;
            return Ok((matrices, None));
        }
        let (format, bits, size) = (encoded[0].0, encoded[0].1, encoded[0].2.len() as u64);
        let stride = size.next_multiple_of(STACK_ALIGN);
        let mut all = vec![0u8; (stride * encoded.len() as u64) as usize];
        for (l, (_, _, bytes)) in encoded.iter().enumerate() {
            let at = l * stride as usize;
            all[at..at + bytes.len()].copy_from_slice(bytes);
        }
        drop(encoded);
        let buffer = ctx.buffer_with(label, &all, wgpu::BufferUsages::STORAGE)?;
        let matrices = (0..all.len() as u64 / stride)
            .map(|l| ResidentMatrix { buffer: buffer.clone(), offset: l * stride, size, format, bits, rows, cols })
            .collect();
        Ok((matrices, Some(Stack { buffer, stride })))
    }

    pub fn bytes(&self) -> u64 {
        self.size
    }

    pub fn range(&self) -> Range<'_> {
        Range { buffer: &self.buffer, offset: self.offset, size: self.size }
    }

    /// The WGSL that binds this matrix as `name` at `binding`: `name_at(row, k, blocks_per_row)`,
    /// and with `dot` also `name_block_dot(row, blk, blocks_per_row, x0)`.
    pub fn source(&self, name: &str, binding: u32, dot: bool) -> String {
        let fill = |text: &str| {
            text.replace("{{name}}", name)
                .replace("{{binding}}", &binding.to_string())
                .replace("{{format}}", &self.format.to_string())
                .replace("{{bits}}", &self.bits.to_string())
        };
        let mut source = fill(MATRIX_WGSL);
        if dot {
            source += &fill(MATRIX_DOT_WGSL);
        }
        source
    }

    /// What distinguishes this matrix's WGSL from another's (pipelines are cached by it).
    pub fn format_key(&self) -> String {
        format!("{}:{}", self.format, self.bits)
    }
}

/// A matrix's (format, bits, bytes) as the kernels read it.
fn encode(label: &str, weights: GpuWeights<'_>, rows: usize, cols: usize) -> Result<(u32, u32, Vec<u8>)> {
    if weights.len() != rows * cols {
        return Err(Error::Shape(format!("{label}: {} weights for a {rows} × {cols} matrix", weights.len())));
    }
    if !cols.is_multiple_of(DType::BLOCK_VALUES) {
        return Err(Error::Shape(format!(
            "{label}: rows of {cols} values; the GPU decoder kernels need rows of whole 32-value blocks"
        )));
    }
    let decoded;
    let (format, bits, bytes): (u32, u32, Vec<u8>) = match weights {
        GpuWeights::F32 { values, .. } => (F32, UNUSED_BITS, bytemuck::cast_slice(values).to_vec()),
        GpuWeights::Packed(p) => match p.dtype {
            DType::Float32 => (F32, UNUSED_BITS, p.bytes.clone()),
            DType::Float16 => (F16, UNUSED_BITS, p.bytes.clone()),
            DType::BFloat16 => (BF16, UNUSED_BITS, p.bytes.clone()),
            DType::Q4_0 => (Q4_0, UNUSED_BITS, word_aligned_blocks(p)),
            DType::Q4_1 => (Q4_1, UNUSED_BITS, word_aligned_blocks(p)),
            DType::Q8_0 => (Q8_0, UNUSED_BITS, word_aligned_blocks(p)),
            dtype if dtype.bits() <= 8 => {
                let codes = 1u64 << dtype.bits();
                let mut bytes: Vec<u8> = (0..codes).flat_map(|c| p.value_of_code(c).to_le_bytes()).collect();
                bytes.extend_from_slice(&p.bytes);
                (CODES, dtype.bits() as u32, bytes)
            }
            _ => {
                decoded = p.decode_all();
                (F32, UNUSED_BITS, bytemuck::cast_slice(&decoded).to_vec())
            }
        },
    };
    Ok((format, bits, bytes))
}

/// A bind group for `pipeline` with each buffer at its binding number.
pub(crate) fn bind(ctx: &Context, pipeline: &wgpu::ComputePipeline, entries: &[(u32, &wgpu::Buffer)]) -> wgpu::BindGroup {
    let ranges: Vec<(u32, Range<'_>)> = entries.iter().map(|&(binding, buffer)| (binding, Range::whole(buffer))).collect();
    bind_ranges(ctx, pipeline, &ranges)
}

/// A bind group for `pipeline` with each buffer range at its binding number.
pub(crate) fn bind_ranges(ctx: &Context, pipeline: &wgpu::ComputePipeline, entries: &[(u32, Range<'_>)]) -> wgpu::BindGroup {
    let entries: Vec<wgpu::BindGroupEntry> = entries
        .iter()
        .map(|&(binding, r)| wgpu::BindGroupEntry {
            binding,
            resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding { buffer: r.buffer, offset: r.offset, size: wgpu::BufferSize::new(r.size) }),
        })
        .collect();
    ctx.device.create_bind_group(&wgpu::BindGroupDescriptor {
        label: None,
        layout: &pipeline.get_bind_group_layout(0),
        entries: &entries,
    })
}

/// How a dispatch's grid follows the step: fixed, or along `axis` one workgroup per `per` new
/// rows or per `per` positions (those cached plus the new ones). Kernels read the actual counts
/// from the step record.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Scale {
    Fixed,
    Rows { axis: usize, per: usize },
    Positions { axis: usize, per: usize },
}

/// One dispatch with everything bound, ready to be recorded again and again.
pub(crate) struct Recorded {
    pub pipeline: wgpu::ComputePipeline,
    pub group: wgpu::BindGroup,
    pub grid: (u32, u32, u32),
    pub scale: Scale,
}

impl Recorded {
    pub fn record(&self, pass: &mut wgpu::ComputePass<'_>, rows: usize, positions: usize) {
        let mut grid = [self.grid.0, self.grid.1, self.grid.2];
        match self.scale {
            Scale::Fixed => {}
            Scale::Rows { axis, per } => grid[axis] = rows.div_ceil(per).max(1) as u32,
            Scale::Positions { axis, per } => grid[axis] = positions.div_ceil(per).max(1) as u32,
        }
        pass.set_pipeline(&self.pipeline);
        pass.set_bind_group(0, &self.group, &[]);
        pass.dispatch_workgroups(grid[0], grid[1], grid[2]);
    }
}
