//! The process-wide GPU context: instance, adapter choice (use_gpu, POLYVTD_ADAPTER), a device
//! with the adapter's own limits, buffer helpers, and device errors (a lost device included)
//! turned into `Error` values.

use super::cache::{PipelineCache, WeightCache};
use super::{GpuAdapter, GpuInfo};
use crate::error::{Error, Result};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{mpsc, Arc, Mutex, MutexGuard, OnceLock};
use wgpu::util::DeviceExt;

/// How long a readback polls the device before it blocks: longer than a prefill pass's GPU time,
/// so a blocking wait's wake-up (which can come milliseconds late) is left for long waits.
const SPIN_BEFORE_BLOCKING: std::time::Duration = std::time::Duration::from_millis(20);

pub(crate) struct Context {
    pub device: wgpu::Device,
    pub queue: wgpu::Queue,
    pub info: GpuInfo,
    pub limits: wgpu::Limits,
    pub weights: Mutex<WeightCache>,
    pub pipelines: Mutex<PipelineCache>,
    /// Set by the device-lost callback; every later call fails with its message.
    lost: Arc<Mutex<Option<String>>>,
    /// An error raised outside our error scopes (wgpu's default handler would panic).
    uncaptured: Arc<Mutex<Option<String>>>,
}

/// One dispatch of a pipeline over a grid of workgroups, its buffers bound in order.
pub(crate) struct Dispatch<'a> {
    pub pipeline: &'a wgpu::ComputePipeline,
    pub bindings: &'a [&'a wgpu::Buffer],
    pub grid: (u32, u32, u32),
}

/// A dispatch that owns its pipeline and buffers (wgpu handles: a clone shares the GPU buffer),
/// so a kernel's recorder can return it and callers can chain kernels through buffers they made;
/// run a list of them with `Context::run_steps`.
pub(crate) struct Step {
    pub pipeline: wgpu::ComputePipeline,
    pub buffers: Vec<wgpu::Buffer>,
    pub grid: (u32, u32, u32),
}

static INSTANCE: OnceLock<wgpu::Instance> = OnceLock::new();
static CONTEXT: OnceLock<Context> = OnceLock::new();
/// The last failed creation and the adapter name it asked for. Asked again for the same adapter
/// it fails the same way at once (adapters do not appear later); another name is tried afresh.
static FAILED: Mutex<Option<(Option<String>, String)>> = Mutex::new(None);

/// The context, created on first use on the POLYVTD_ADAPTER adapter, else the default one.
pub(crate) fn context() -> Result<&'static Context> {
    open(None)
}

/// The context; when none exists yet, created on the adapter whose name contains `requested`
/// (case-insensitive; None: POLYVTD_ADAPTER, else the high-performance default).
fn open(requested: Option<&str>) -> Result<&'static Context> {
    if let Some(ctx) = CONTEXT.get() {
        return Ok(ctx);
    }
    let mut failed = lock(&FAILED);
    if let Some(ctx) = CONTEXT.get() {
        return Ok(ctx);
    }
    let wanted = requested.map(str::to_string).or_else(|| {
        std::env::var("POLYVTD_ADAPTER")
            .ok()
            .filter(|s| !s.trim().is_empty())
    });
    if let Some((_, message)) = failed.as_ref().filter(|(asked, _)| *asked == wanted) {
        return Err(Error::GpuUnavailable(message.clone()));
    }
    // A driver that panics inside wgpu must not take the caller's process down.
    let created = catch_unwind(AssertUnwindSafe(|| create(wanted.as_deref())))
        .unwrap_or_else(|_| Err("no GPU adapter found: GPU initialisation panicked".into()));
    match created {
        Ok(ctx) => {
            *failed = None;
            // Only this function sets CONTEXT, under the FAILED lock: it is still empty here.
            Ok(CONTEXT.get_or_init(|| ctx))
        }
        Err(message) => {
            *failed = Some((wanted, message.clone()));
            Err(Error::GpuUnavailable(message))
        }
    }
}

/// The context if it was created already (never creates it).
pub(crate) fn existing() -> Option<&'static Context> {
    CONTEXT.get()
}

/// The context on the adapter whose name contains `adapter` (case-insensitive), created now if
/// none exists yet; None keeps the default choice. Once created, the context cannot move to
/// another adapter: asking for one it is not on is an error naming the adapter it is on.
pub(crate) fn use_adapter(adapter: Option<&str>) -> Result<&'static Context> {
    let wanted = adapter.map(str::trim).filter(|s| !s.is_empty());
    let ctx = open(wanted)?;
    ctx.check_lost()?;
    if let Some(wanted) = wanted {
        if !ctx.info.name.to_lowercase().contains(&wanted.to_lowercase()) {
            return Err(Error::GpuUnavailable(format!(
                "the GPU context is already created on {:?} ({}); use_gpu({wanted:?}) must come \
                 before the first GPU use in this process (or set POLYVTD_ADAPTER before starting it)",
                ctx.info.name, ctx.info.backend
            )));
        }
    }
    Ok(ctx)
}

/// The wgpu instance every adapter query and the context share (backends from WGPU_BACKEND).
fn instance() -> &'static wgpu::Instance {
    INSTANCE.get_or_init(|| {
        wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle_from_env())
    })
}

/// Every adapter wgpu sees, in its order; empty when there is none (or probing panicked).
pub(crate) fn adapters() -> Vec<GpuAdapter> {
    catch_unwind(|| {
        pollster::block_on(instance().enumerate_adapters(wgpu::Backends::all()))
            .iter()
            .map(|adapter| {
                let info = adapter.get_info();
                GpuAdapter {
                    name: info.name.clone(),
                    backend: info.backend.to_str().to_string(),
                    device_type: format!("{:?}", info.device_type),
                    driver: driver_of(&info),
                }
            })
            .collect()
    })
    .unwrap_or_default()
}

fn driver_of(info: &wgpu::AdapterInfo) -> String {
    match info.driver_info.trim() {
        "" => info.driver.clone(),
        details => format!("{} ({details})", info.driver),
    }
}

/// Locks a mutex, ignoring poison: every guarded value here stays consistent between statements.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn create(wanted: Option<&str>) -> std::result::Result<Context, String> {
    let adapter = pollster::block_on(select_adapter(instance(), wanted))?;
    let adapter_info = adapter.get_info();
    let limits = adapter.limits();
    let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
        label: Some("polyvtd"),
        required_limits: limits.clone(),
        ..Default::default()
    }))
    .map_err(|e| {
        format!(
            "GPU adapter {:?} refused to open a device: {e}",
            adapter_info.name
        )
    })?;

    let lost = Arc::new(Mutex::new(None));
    let lost_sink = lost.clone();
    device.set_device_lost_callback(move |reason, message| {
        *lock(&lost_sink) = Some(match message.trim() {
            "" => format!("{reason:?}"),
            message => format!("{reason:?}: {message}"),
        });
    });
    let uncaptured = Arc::new(Mutex::new(None));
    let uncaptured_sink = uncaptured.clone();
    device.on_uncaptured_error(Arc::new(move |error: wgpu::Error| {
        lock(&uncaptured_sink).get_or_insert(error.to_string());
    }));

    let driver = driver_of(&adapter_info);
    let info = GpuInfo {
        name: adapter_info.name.clone(),
        backend: adapter_info.backend.to_str().to_string(),
        device_type: format!("{:?}", adapter_info.device_type),
        driver,
        max_compute_workgroup_size_x: limits.max_compute_workgroup_size_x,
        max_compute_invocations_per_workgroup: limits.max_compute_invocations_per_workgroup,
        max_compute_workgroup_storage_size: limits.max_compute_workgroup_storage_size,
        max_storage_buffer_binding_size: limits.max_storage_buffer_binding_size,
        max_buffer_size: limits.max_buffer_size,
    };
    Ok(Context {
        device,
        queue,
        info,
        weights: Mutex::new(WeightCache::for_limits(&limits)),
        pipelines: Mutex::new(PipelineCache::default()),
        limits,
        lost,
        uncaptured,
    })
}

/// The adapter whose name contains `wanted` (case-insensitive), else the high-performance
/// default. Software adapters (lavapipe) are accepted.
pub(crate) async fn select_adapter(
    instance: &wgpu::Instance,
    wanted: Option<&str>,
) -> std::result::Result<wgpu::Adapter, String> {
    const INSTALL: &str = "install a Vulkan, Metal or DX12 driver; on Linux without a GPU, \
                           Mesa's lavapipe: mesa-vulkan-drivers";
    let Some(wanted) = wanted else {
        let options = wgpu::RequestAdapterOptions {
            power_preference: wgpu::PowerPreference::HighPerformance,
            ..Default::default()
        };
        return instance
            .request_adapter(&options)
            .await
            .map_err(|e| format!("no GPU adapter found: {e} ({INSTALL})"));
    };
    let needle = wanted.trim().to_lowercase();
    let adapters = instance.enumerate_adapters(wgpu::Backends::all()).await;
    if adapters.is_empty() {
        return Err(format!(
            "no GPU adapter found: wgpu sees none, so {wanted:?} (use_gpu or POLYVTD_ADAPTER) \
             cannot match ({INSTALL})"
        ));
    }
    let names: Vec<String> = adapters.iter().map(|a| a.get_info().name).collect();
    adapters
        .into_iter()
        .find(|a| a.get_info().name.to_lowercase().contains(&needle))
        .ok_or_else(|| {
            format!("no GPU adapter found: the name {wanted:?} (use_gpu or POLYVTD_ADAPTER) matches none of {names:?}")
        })
}

impl Context {
    /// Runs `f` inside out-of-memory, validation and internal error scopes. A lost device gives
    /// `Error::GpuUnavailable`; a captured error `Error::Gpu("<what>: <error>")`.
    pub fn scoped<T>(&self, what: &str, f: impl FnOnce() -> Result<T>) -> Result<T> {
        self.check_lost()?;
        let scopes = [
            wgpu::ErrorFilter::OutOfMemory,
            wgpu::ErrorFilter::Validation,
            wgpu::ErrorFilter::Internal,
        ]
        .map(|filter| self.device.push_error_scope(filter));
        let result = f();
        let mut captured = None;
        for scope in scopes.into_iter().rev() {
            if let Some(error) = pollster::block_on(scope.pop()) {
                captured.get_or_insert(error.to_string());
            }
        }
        if captured.is_some() || result.is_err() {
            // A failure may be the first sign of a lost device: a poll runs its callback, so the
            // caller learns the cause rather than a symptom. The poll's own error says no more.
            let _ = self.device.poll(wgpu::PollType::Poll);
        }
        self.check_lost()?;
        if let Some(error) = captured.or_else(|| lock(&self.uncaptured).take()) {
            return Err(Error::Gpu(format!("{what}: {error}")));
        }
        result
    }

    /// Fails once the device is lost: nothing can run on it any more.
    pub fn check_lost(&self) -> Result<()> {
        match lock(&self.lost).as_ref() {
            Some(reason) => Err(Error::GpuUnavailable(format!(
                "the GPU device was lost ({reason}); restart the process to use the GPU again"
            ))),
            None => Ok(()),
        }
    }

    /// Destroys the device, as a driver reset or a removed GPU would, and polls so that its
    /// device-lost callback runs now (tests of the lost-device path only).
    pub fn destroy_device(&self) -> Result<()> {
        self.device.destroy();
        // The poll fails on a destroyed device; the callback it runs is what matters.
        let _ = self.device.poll(wgpu::PollType::Poll);
        match self.check_lost() {
            Err(_) => Ok(()),
            Ok(()) => Err(Error::Gpu("destroying the device did not report it lost".into())),
        }
    }

    /// Fails with a clear message when `bytes` exceed what one buffer binding may hold.
    pub fn check_size(&self, what: &str, bytes: u64) -> Result<()> {
        let max = self
            .limits
            .max_storage_buffer_binding_size
            .min(self.limits.max_buffer_size);
        if bytes > max {
            return Err(Error::Gpu(format!(
                "{what} needs {bytes} bytes; this GPU binds at most {max} bytes per buffer"
            )));
        }
        Ok(())
    }

    /// A buffer holding `bytes`, zero padded to a multiple of 4 and at least 16 bytes (WebGPU
    /// cannot bind empty ranges).
    pub fn buffer_with(
        &self,
        label: &str,
        bytes: &[u8],
        usage: wgpu::BufferUsages,
    ) -> Result<wgpu::Buffer> {
        self.check_size(label, bytes.len() as u64)?;
        let padded_len = bytes.len().max(16).next_multiple_of(4);
        let padded;
        let contents = if padded_len == bytes.len() {
            bytes
        } else {
            padded = [bytes, &vec![0u8; padded_len - bytes.len()]].concat();
            &padded
        };
        Ok(self
            .device
            .create_buffer_init(&wgpu::util::BufferInitDescriptor {
                label: Some(label),
                contents,
                usage,
            }))
    }

    /// An uninitialised buffer of `bytes` (at least 16).
    pub fn empty_buffer(
        &self,
        label: &str,
        bytes: u64,
        usage: wgpu::BufferUsages,
    ) -> Result<wgpu::Buffer> {
        self.check_size(label, bytes)?;
        Ok(self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(label),
            size: bytes.max(16).next_multiple_of(4),
            usage,
            mapped_at_creation: false,
        }))
    }

    /// A uniform buffer holding `value`.
    pub fn uniform<T: bytemuck::Pod>(&self, label: &str, value: &T) -> Result<wgpu::Buffer> {
        self.buffer_with(label, bytemuck::bytes_of(value), wgpu::BufferUsages::UNIFORM)
    }

    /// A read-only storage buffer holding `values`.
    pub fn storage(&self, label: &str, values: &[f32]) -> Result<wgpu::Buffer> {
        self.buffer_with(label, bytemuck::cast_slice(values), wgpu::BufferUsages::STORAGE)
    }

    /// A storage buffer of `len` f32 that kernels write and that can be read back.
    pub fn output(&self, label: &str, len: usize) -> Result<wgpu::Buffer> {
        use wgpu::BufferUsages as U;
        self.empty_buffer(label, (len * 4) as u64, U::STORAGE | U::COPY_SRC)
    }

    /// A bind group binding `buffers` as bindings 0, 1, ... of group 0 of `pipeline`.
    pub fn bind(&self, pipeline: &wgpu::ComputePipeline, buffers: &[&wgpu::Buffer]) -> wgpu::BindGroup {
        let entries: Vec<wgpu::BindGroupEntry> = (0u32..)
            .zip(buffers)
            .map(|(binding, buffer)| wgpu::BindGroupEntry { binding, resource: buffer.as_entire_binding() })
            .collect();
        self.device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: None,
            layout: &pipeline.get_bind_group_layout(0),
            entries: &entries,
        })
    }

    /// Records `dispatches` in order into one compute pass (WebGPU makes each dispatch's writes
    /// visible to the next), copies the first `len` f32 of `result` to a staging buffer in the
    /// same encoder, submits once and reads them back.
    pub fn run_and_read(&self, dispatches: &[Dispatch<'_>], result: &wgpu::Buffer, len: usize) -> Result<Vec<f32>> {
        let bytes = (len * 4) as u64;
        let staging = self.empty_buffer("staging", bytes, wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST)?;
        let groups: Vec<wgpu::BindGroup> = dispatches.iter().map(|d| self.bind(d.pipeline, d.bindings)).collect();
        let mut encoder = self.device.create_command_encoder(&Default::default());
        {
            let mut pass = encoder.begin_compute_pass(&Default::default());
            for (dispatch, group) in dispatches.iter().zip(&groups) {
                let (x, y, z) = dispatch.grid;
                pass.set_pipeline(dispatch.pipeline);
                pass.set_bind_group(0, group, &[]);
                pass.dispatch_workgroups(x, y, z);
            }
        }
        if bytes > 0 {
            encoder.copy_buffer_to_buffer(result, 0, &staging, 0, bytes);
        }
        self.queue.submit([encoder.finish()]);
        self.read_f32(&staging, len)
    }

    /// `run_and_read` over `steps`: each step's buffers bound as bindings 0, 1, ... in order.
    pub fn run_steps(&self, steps: &[Step], result: &wgpu::Buffer, len: usize) -> Result<Vec<f32>> {
        let bindings: Vec<Vec<&wgpu::Buffer>> = steps.iter().map(|s| s.buffers.iter().collect()).collect();
        let dispatches: Vec<Dispatch<'_>> = steps
            .iter()
            .zip(&bindings)
            .map(|(step, bindings)| Dispatch { pipeline: &step.pipeline, bindings, grid: step.grid })
            .collect();
        self.run_and_read(&dispatches, result, len)
    }

    /// Dispatches `pipeline` once over `grid` and reads back `len` f32 of `result`.
    pub fn dispatch_and_read(
        &self,
        pipeline: &wgpu::ComputePipeline,
        bindings: &[&wgpu::Buffer],
        grid: (u32, u32, u32),
        result: &wgpu::Buffer,
        len: usize,
    ) -> Result<Vec<f32>> {
        self.run_and_read(&[Dispatch { pipeline, bindings, grid }], result, len)
    }

    /// A workgroup grid of `groups` along x, folded into y when x would pass the device limit;
    /// kernels recover the linear group as `id.x + id.y · num_workgroups.x`.
    pub fn grid(&self, groups: usize) -> Result<(u32, u32, u32)> {
        let max = self.limits.max_compute_workgroups_per_dimension.max(1) as usize;
        let rows = groups.div_ceil(max).max(1);
        if rows > max {
            return Err(Error::Gpu(format!("{groups} workgroups exceed what this GPU dispatches ({max}²)")));
        }
        Ok((groups.div_ceil(rows).max(1) as u32, rows as u32, 1))
    }

    /// Maps `staging` (a MAP_READ buffer the submitted work copied into), waits for the GPU, and
    /// returns its first `len` f32 values.
    pub fn read_f32(&self, staging: &wgpu::Buffer, len: usize) -> Result<Vec<f32>> {
        self.read_f32_after(staging, len, None)
    }

    /// `read_f32` waiting only for `submission` (None: everything submitted), so work submitted
    /// after it keeps running.
    pub fn read_f32_after(
        &self,
        staging: &wgpu::Buffer,
        len: usize,
        submission: Option<wgpu::SubmissionIndex>,
    ) -> Result<Vec<f32>> {
        let (sender, receiver) = mpsc::channel();
        staging.map_async(wgpu::MapMode::Read, .., move |result| {
            // The receiver outlives the poll below; a failed send only means it already gave up.
            let _ = sender.send(result);
        });
        // Poll without blocking for up to SPIN_BEFORE_BLOCKING first: a blocking wait can sleep
        // for milliseconds past the GPU's finish (the OS timer's granularity), many times a short
        // step's own time.
        let started = std::time::Instant::now();
        let mut mapped = None;
        while started.elapsed() < SPIN_BEFORE_BLOCKING {
            self.device.poll(wgpu::PollType::Poll).map_err(|e| Error::Gpu(format!("waiting for the GPU: {e}")))?;
            if let Ok(result) = receiver.try_recv() {
                mapped = Some(result);
                break;
            }
            std::hint::spin_loop();
        }
        if mapped.is_none() {
            let wait = wgpu::PollType::Wait { submission_index: submission, timeout: None };
            self.device
                .poll(wait)
                .map_err(|e| Error::Gpu(format!("waiting for the GPU: {e}")))?;
        }
        // The wait above covered our submission; the callback may still be finishing on a
        // thread that polled concurrently.
        match mapped.map_or_else(|| receiver.recv_timeout(std::time::Duration::from_secs(10)), Ok) {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(Error::Gpu(format!("reading results back: {e}"))),
            Err(_) => {
                return Err(Error::Gpu(
                    "reading results back: the buffer was never mapped".into(),
                ))
            }
        }
        let values = {
            let view = staging
                .get_mapped_range(..)
                .map_err(|e| Error::Gpu(format!("reading results back: {e}")))?;
            // Copies through an aligned Vec: a mapped range carries no alignment guarantee.
            bytemuck::pod_collect_to_vec::<u8, f32>(&view[..len * 4])
        };
        staging.unmap();
        Ok(values)
    }
}

#[cfg(test)]
mod tests {
    use super::{adapters, context, use_adapter};
    use crate::error::Error;

    #[test]
    fn the_context_stays_on_its_adapter() {
        let Ok(ctx) = context() else {
            eprintln!("no GPU adapter: skipping the_context_stays_on_its_adapter");
            assert!(use_adapter(None).is_err());
            return;
        };
        let name = ctx.info.name.clone();
        assert!(adapters().iter().any(|a| a.name == name));
        let same = use_adapter(Some(&name.to_uppercase())).map(|c| c.info.name.clone());
        assert_eq!(same, Ok(name.clone()));
        match use_adapter(Some("no-such-adapter-42")) {
            Err(Error::GpuUnavailable(message)) => {
                assert!(message.contains("already created on") && message.contains(&name), "{message}")
            }
            other => panic!("expected GpuUnavailable, got {:?}", other.map(|c| c.info.name.clone())),
        }
    }
}
