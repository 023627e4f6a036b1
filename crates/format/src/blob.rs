//! MILBlob storage v2 weight files (`weights/weight.bin`), memory-mapped.
//!
//! Layout (little-endian): a 64-byte header (`u32` blob count, `u32` version = 2, reserved), then one 64-byte
//! metadata record per blob at a 64-aligned offset (`u32` sentinel `0xDEADBEEF`, `u32` dtype code, `u64` data size in
//! bytes, `u64` absolute data offset, `u64` padding bits, reserved) followed by its data. Programs refer to a blob by
//! the offset of its metadata record.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use memmap2::Mmap;

use crate::error::{FormatError, Result};
use crate::mil::{Binding, BlobRef, Block, DataType, Program, Value, ValueData};

/// Size of the file header and of each blob metadata record.
pub const RECORD_SIZE: u64 = 64;
/// The only storage format version this reader accepts.
pub const STORAGE_VERSION: u32 = 2;
/// Marker at the start of every blob metadata record.
pub const BLOB_SENTINEL: u32 = 0xDEAD_BEEF;
/// Prefix of blob paths in programs, standing for the model's root directory.
pub const MODEL_PATH_PREFIX: &str = "@model_path/";

/// Maps a MILBlob dtype code to the element type.
pub fn dtype_from_code(code: u32) -> Option<DataType> {
    Some(match code {
        1 => DataType::Float16,
        2 => DataType::Float32,
        3 => DataType::UInt8,
        4 => DataType::Int8,
        5 => DataType::BFloat16,
        6 => DataType::Int16,
        7 => DataType::UInt16,
        8 => DataType::Int4,
        9 => DataType::UInt1,
        10 => DataType::UInt2,
        11 => DataType::UInt4,
        12 => DataType::UInt3,
        13 => DataType::UInt6,
        14 => DataType::Int32,
        15 => DataType::UInt32,
        16 => DataType::Float8E4M3FN,
        17 => DataType::Float8E5M2,
        _ => return None,
    })
}

/// Maps an element type to its MILBlob dtype code (`None` for types that cannot be stored in a blob file).
pub fn dtype_code(dtype: DataType) -> Option<u32> {
    (1..=17).find(|&c| dtype_from_code(c) == Some(dtype))
}

struct Inner {
    path: PathBuf,
    map: Mmap,
    count: u32,
}

/// A memory-mapped MILBlob v2 weight file. Cheap to clone: clones share one mapping.
#[derive(Clone)]
pub struct WeightFile {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for WeightFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WeightFile")
            .field("path", &self.inner.path)
            .field("len", &self.len())
            .field("blob_count", &self.inner.count)
            .finish()
    }
}

fn read_u32(bytes: &[u8], at: usize) -> Option<u32> {
    let b = bytes.get(at..at.checked_add(4)?)?;
    Some(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

fn read_u64(bytes: &[u8], at: usize) -> Option<u64> {
    let b = bytes.get(at..at.checked_add(8)?)?;
    let mut a = [0u8; 8];
    a.copy_from_slice(b);
    Some(u64::from_le_bytes(a))
}

impl WeightFile {
    /// Maps `path` and validates its 64-byte header (blob count, storage version 2).
    ///
    /// The file must not be modified by another process while it is mapped.
    pub fn open(path: &Path) -> Result<WeightFile> {
        let io_err = |source| FormatError::Io {
            path: path.to_path_buf(),
            source,
        };
        let file = File::open(path).map_err(io_err)?;
        let len = file.metadata().map_err(io_err)?.len();
        let blob_err = |message: String| FormatError::Blob {
            path: path.to_path_buf(),
            offset: 0,
            message,
        };
        if len < RECORD_SIZE {
            return Err(blob_err(format!(
                "file is {len} bytes, shorter than the {RECORD_SIZE}-byte header"
            )));
        }
        // SAFETY: the mapping is read-only and lives as long as `Inner`; every access is bounds-checked against
        // its length. Concurrent modification of the file by another process is documented as unsupported.
        let map = unsafe { Mmap::map(&file) }.map_err(io_err)?;
        let count = read_u32(&map, 0).unwrap_or_default();
        let version = read_u32(&map, 4).unwrap_or_default();
        if version != STORAGE_VERSION {
            return Err(blob_err(format!(
                "unsupported storage version {version} (expected {STORAGE_VERSION})"
            )));
        }
        Ok(WeightFile {
            inner: Arc::new(Inner {
                path: path.to_path_buf(),
                map,
                count,
            }),
        })
    }

    /// Drops this process's resident pages of the mapping (the data stays in the OS page cache and is read back
    /// on the next access). Loaders call it once the weights they need have been copied out, so that resident
    /// memory counts each weight once. Advisory: errors are ignored.
    pub fn release_resident_pages(&self) {
        #[cfg(unix)]
        {
            // SAFETY: the mapping is a read-only shared file mapping, for which MADV_DONTNEED only drops page
            // table entries; later reads fault the unchanged file contents back in.
            let _ = unsafe {
                self.inner
                    .map
                    .unchecked_advise(memmap2::UncheckedAdvice::DontNeed)
            };
        }
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// The blob count written in the header.
    pub fn blob_count(&self) -> u32 {
        self.inner.count
    }

    /// File size in bytes.
    pub fn len(&self) -> u64 {
        self.bytes().len() as u64
    }

    /// True when the file is empty (never the case for an opened file, whose header is validated).
    pub fn is_empty(&self) -> bool {
        self.bytes().is_empty()
    }

    fn bytes(&self) -> &[u8] {
        &self.inner.map
    }

    fn error(&self, offset: u64, message: impl Into<String>) -> FormatError {
        FormatError::Blob {
            path: self.inner.path.clone(),
            offset,
            message: message.into(),
        }
    }

    /// The blob whose metadata record starts at `metadata_offset` (the offset written in `BLOBFILE(...)`), after
    /// validating the sentinel, the dtype code, the data range and the padding bits against the file.
    pub fn blob(&self, metadata_offset: u64) -> Result<Blob<'_>> {
        let bytes = self.bytes();
        let len = bytes.len() as u64;
        let err = |m: String| self.error(metadata_offset, m);
        if metadata_offset < RECORD_SIZE || !metadata_offset.is_multiple_of(RECORD_SIZE) {
            return Err(err(format!(
                "metadata offset is not a 64-byte-aligned position after the header (file is {len} bytes)"
            )));
        }
        match metadata_offset.checked_add(RECORD_SIZE) {
            Some(end) if end <= len => {}
            _ => {
                return Err(err(format!(
                    "metadata record extends past the end of the file ({len} bytes)"
                )))
            }
        }
        let at = usize::try_from(metadata_offset).map_err(|_| err("offset too large".into()))?;
        let field = |o: usize| read_u64(bytes, at + o).unwrap_or_default();
        let sentinel = read_u32(bytes, at).unwrap_or_default();
        if sentinel != BLOB_SENTINEL {
            return Err(err(format!(
                "bad sentinel 0x{sentinel:08X} (expected 0xDEADBEEF)"
            )));
        }
        let code = read_u32(bytes, at + 4).unwrap_or_default();
        let dtype =
            dtype_from_code(code).ok_or_else(|| err(format!("unknown dtype code {code}")))?;
        let size = field(8);
        let data_offset = field(16);
        let padding_bits = field(24);
        let data_end = data_offset.checked_add(size).filter(|&e| e <= len).ok_or_else(|| {
            err(format!(
                "data range [{data_offset}, {data_offset} + {size}) lies outside the file ({len} bytes)"
            ))
        })?;
        if data_offset < RECORD_SIZE {
            return Err(err(format!(
                "data offset {data_offset} overlaps the file header"
            )));
        }
        let total_bits = size
            .checked_mul(8)
            .ok_or_else(|| err(format!("data size {size} overflows")))?;
        let bits = u64::from(dtype.bit_width());
        if padding_bits > total_bits || !(total_bits - padding_bits).is_multiple_of(bits) {
            return Err(err(format!(
                "{padding_bits} padding bits do not fit {size} bytes of {dtype} elements"
            )));
        }
        let range = usize::try_from(data_offset)
            .ok()
            .zip(usize::try_from(data_end).ok());
        let data = range
            .and_then(|(s, e)| bytes.get(s..e))
            .ok_or_else(|| err("data range not addressable".into()))?;
        Ok(Blob {
            dtype,
            metadata_offset,
            data_offset,
            padding_bits,
            data,
            path: &self.inner.path,
        })
    }

    /// Offsets of every metadata record, found by walking the records from the header in file order; errors when the
    /// chain does not hold exactly [`WeightFile::blob_count`] valid records.
    pub fn record_offsets(&self) -> Result<Vec<u64>> {
        let mut offsets = Vec::new();
        let mut next = RECORD_SIZE;
        for _ in 0..self.inner.count {
            let blob = self.blob(next)?;
            offsets.push(next);
            let end = blob.data_offset + blob.bytes().len() as u64;
            next = end
                .div_ceil(RECORD_SIZE)
                .checked_mul(RECORD_SIZE)
                .ok_or_else(|| self.error(next, "record chain overflows"))?;
        }
        Ok(offsets)
    }
}

/// One blob of a weight file: its element type and a view of its bytes.
#[derive(Debug, Clone, Copy)]
pub struct Blob<'a> {
    /// Element type.
    pub dtype: DataType,
    /// Offset of the metadata record (what programs refer to).
    pub metadata_offset: u64,
    /// Absolute offset of the data.
    pub data_offset: u64,
    /// Unused bits at the end of the data (sub-byte types).
    pub padding_bits: u64,
    data: &'a [u8],
    path: &'a Path,
}

macro_rules! typed_view {
    ($(#[$doc:meta])* $name:ident, $ty:ty, $dtype:expr) => {
        $(#[$doc])*
        pub fn $name(&self) -> Result<&'a [$ty]> {
            self.expect_dtype($dtype)?;
            bytemuck::try_cast_slice(self.data).map_err(|e| {
                self.error(format!("cannot view data as {}: {e:?}", $dtype))
            })
        }
    };
}

impl<'a> Blob<'a> {
    /// The raw data bytes.
    pub fn bytes(&self) -> &'a [u8] {
        self.data
    }

    /// The weight file this blob belongs to.
    pub fn path(&self) -> &'a Path {
        self.path
    }

    /// Number of elements: `(size * 8 - padding_bits) / bit_width`.
    pub fn element_count(&self) -> u64 {
        let bits = u64::from(self.dtype.bit_width()).max(1);
        (self.data.len() as u64 * 8).saturating_sub(self.padding_bits) / bits
    }

    fn error(&self, message: String) -> FormatError {
        FormatError::Blob {
            path: self.path.to_path_buf(),
            offset: self.metadata_offset,
            message,
        }
    }

    fn expect_dtype(&self, dtype: DataType) -> Result<()> {
        if self.dtype == dtype {
            Ok(())
        } else {
            Err(self.error(format!("blob holds {} data, not {dtype}", self.dtype)))
        }
    }

    typed_view!(
        /// Zero-copy view of `fp16` data.
        as_f16, half::f16, DataType::Float16);
    typed_view!(
        /// Zero-copy view of `bf16` data.
        as_bf16, half::bf16, DataType::BFloat16);
    typed_view!(
        /// Zero-copy view of `fp32` data.
        as_f32, f32, DataType::Float32);
    typed_view!(
        /// Zero-copy view of `uint8` data.
        as_u8, u8, DataType::UInt8);
    typed_view!(
        /// Zero-copy view of `int8` data.
        as_i8, i8, DataType::Int8);
    typed_view!(
        /// Zero-copy view of `uint16` data.
        as_u16, u16, DataType::UInt16);
    typed_view!(
        /// Zero-copy view of `int16` data.
        as_i16, i16, DataType::Int16);
    typed_view!(
        /// Zero-copy view of `uint32` data.
        as_u32, u32, DataType::UInt32);
    typed_view!(
        /// Zero-copy view of `int32` data.
        as_i32, i32, DataType::Int32);

    /// Unpacks `uint1`/`uint2`/`uint3`/`uint4`/`uint6` data (element i at bits `[n*i, n*i+n)` counted from the LSB
    /// of byte 0) or copies `uint8` data, one element per byte.
    pub fn unpack_unsigned(&self) -> Result<Vec<u8>> {
        match self.dtype {
            DataType::UInt1
            | DataType::UInt2
            | DataType::UInt3
            | DataType::UInt4
            | DataType::UInt6
            | DataType::UInt8 => {}
            other => {
                return Err(self.error(format!(
                    "blob holds {other} data, not an unsigned integer of at most 8 bits"
                )))
            }
        }
        let count = usize::try_from(self.element_count())
            .map_err(|_| self.error("too many elements".into()))?;
        unpack_bits(self.data, self.dtype.bit_width(), count)
            .ok_or_else(|| self.error("packed data shorter than its element count".into()))
    }

    /// Unpacks `int4` data (LSB-first, two's complement), sign-extended to `i8`.
    pub fn unpack_int4(&self) -> Result<Vec<i8>> {
        self.expect_dtype(DataType::Int4)?;
        let count = usize::try_from(self.element_count())
            .map_err(|_| self.error("too many elements".into()))?;
        let raw = unpack_bits(self.data, 4, count)
            .ok_or_else(|| self.error("packed data shorter than its element count".into()))?;
        Ok(raw.into_iter().map(sign_extend_int4).collect())
    }
}

/// Sign-extends a 4-bit two's-complement value held in the low bits of `v`.
pub fn sign_extend_int4(v: u8) -> i8 {
    (((v & 0x0F) << 4) as i8) >> 4
}

/// Unpacks `count` elements of `bits` bits (1 to 8) from a little-endian, LSB-first bitstream: element i occupies
/// bits `[bits*i, bits*i + bits)` counted from the least significant bit of byte 0. `None` when `data` is too short.
pub fn unpack_bits(data: &[u8], bits: u32, count: usize) -> Option<Vec<u8>> {
    if !(1..=8).contains(&bits) {
        return None;
    }
    let needed = count.checked_mul(bits as usize)?.div_ceil(8);
    if data.len() < needed {
        return None;
    }
    let mask = (1u16 << bits) - 1;
    let mut out = Vec::with_capacity(count);
    for i in 0..count {
        let bit = i * bits as usize;
        let byte = bit / 8;
        let shift = bit % 8;
        let lo = u16::from(*data.get(byte)?);
        let hi = u16::from(data.get(byte + 1).copied().unwrap_or(0));
        out.push((((lo | (hi << 8)) >> shift) & mask) as u8);
    }
    Some(out)
}

/// The weight files of one model, keyed by the path written in its program (`@model_path/weights/weight.bin`).
#[derive(Debug, Clone, Default)]
pub struct WeightStore {
    root: PathBuf,
    files: BTreeMap<String, WeightFile>,
    missing: BTreeMap<String, PathBuf>,
}

impl WeightStore {
    /// Opens every weight file the program refers to. `root` is the directory `@model_path` stands for
    /// (`Data/com.apple.CoreML/` in a `.mlpackage`, the bundle directory of a `.mlmodelc`). A program path naming
    /// `weight.bin` that does not exist falls back to `weights.bin` in the same directory, and vice versa.
    ///
    /// A weight file that is absent (compiled bundles are often shared without their weights) does not fail the
    /// open: it is listed by [`WeightStore::missing_files`] and resolving a blob in it is an error naming the file.
    pub fn open(root: &Path, program: &Program) -> Result<WeightStore> {
        let mut files = BTreeMap::new();
        let mut missing = BTreeMap::new();
        for blob in program_blob_refs(program) {
            if files.contains_key(&blob.path) || missing.contains_key(&blob.path) {
                continue;
            }
            match resolve_model_path(root, &blob.path) {
                Ok(file_path) => {
                    files.insert(blob.path.clone(), WeightFile::open(&file_path)?);
                }
                Err(FormatError::Io { path, source })
                    if source.kind() == std::io::ErrorKind::NotFound =>
                {
                    missing.insert(blob.path.clone(), path);
                }
                Err(e) => return Err(e),
            }
        }
        let store = WeightStore {
            root: root.to_path_buf(),
            files,
            missing,
        };
        store.check_program(program)?;
        Ok(store)
    }

    /// Checks that every blob the program refers to is a valid record whose element type and element count match
    /// the value's declared type.
    pub fn check_program(&self, program: &Program) -> Result<()> {
        for value in program_blob_values(program) {
            let ValueData::Blob(r) = &value.data else {
                continue;
            };
            if self.missing.contains_key(&r.path) {
                continue;
            }
            let blob = self.resolve(r)?;
            let mismatch = |what: String| FormatError::Blob {
                path: blob.path().to_path_buf(),
                offset: r.offset,
                message: what,
            };
            match value.ty.dtype() {
                Some(d) if d == blob.dtype => {}
                declared => {
                    return Err(mismatch(format!(
                        "blob holds {} data but the program declares {}",
                        blob.dtype,
                        declared.map_or("a non-tensor type".to_string(), |d| d.to_string())
                    )))
                }
            }
            if let Some(n) = value.ty.element_count() {
                if n != blob.element_count() {
                    return Err(mismatch(format!(
                        "blob holds {} elements but the program declares {n}",
                        blob.element_count()
                    )));
                }
            }
        }
        Ok(())
    }

    /// The directory `@model_path` stands for.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The weight files, keyed by the path written in the program.
    pub fn files(&self) -> &BTreeMap<String, WeightFile> {
        &self.files
    }

    /// Drops the resident pages of every mapped weight file (see [`WeightFile::release_resident_pages`]).
    pub fn release_resident_pages(&self) {
        for file in self.files.values() {
            file.release_resident_pages();
        }
    }

    /// Weight files the program refers to that are absent, keyed by the path written in the program, with the
    /// location where they were looked for.
    pub fn missing_files(&self) -> &BTreeMap<String, PathBuf> {
        &self.missing
    }

    /// The blob a `BLOBFILE(path, offset)` reference points at.
    pub fn resolve(&self, blob: &BlobRef) -> Result<Blob<'_>> {
        if let Some(path) = self.missing.get(&blob.path) {
            return Err(FormatError::Io {
                path: path.clone(),
                source: std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    format!(
                        "weight file `{}` referenced by the program is missing (needed for the blob at offset {})",
                        blob.path, blob.offset
                    ),
                ),
            });
        }
        match self.files.get(&blob.path) {
            Some(file) => file.blob(blob.offset),
            None => Err(FormatError::Blob {
                path: self
                    .root
                    .join(blob.path.trim_start_matches(MODEL_PATH_PREFIX)),
                offset: blob.offset,
                message: format!("weight file `{}` is not part of this model", blob.path),
            }),
        }
    }

    /// Total size in bytes of the weight files.
    pub fn total_bytes(&self) -> u64 {
        self.files.values().map(WeightFile::len).sum()
    }

    /// Total number of blobs declared in the weight files' headers.
    pub fn blob_count(&self) -> u64 {
        self.files.values().map(|f| u64::from(f.blob_count())).sum()
    }
}

/// Maps a program blob path (`@model_path/weights/weight.bin`) to a file under `root`, rejecting absolute paths and
/// `..`; `weight.bin` and `weights.bin` stand in for each other when only one exists.
pub fn resolve_model_path(root: &Path, program_path: &str) -> Result<PathBuf> {
    let relative = program_path
        .strip_prefix(MODEL_PATH_PREFIX)
        .unwrap_or(program_path);
    let rel = Path::new(relative);
    if relative.is_empty() || !rel.components().all(|c| matches!(c, Component::Normal(_))) {
        return Err(FormatError::Invalid {
            path: root.to_path_buf(),
            message: format!(
                "weight path `{program_path}` must be a relative path below `@model_path` without `..`"
            ),
        });
    }
    let candidate = root.join(rel);
    if candidate.is_file() {
        return Ok(candidate);
    }
    let alternative = match candidate.file_name().and_then(|n| n.to_str()) {
        Some("weight.bin") => Some(candidate.with_file_name("weights.bin")),
        Some("weights.bin") => Some(candidate.with_file_name("weight.bin")),
        _ => None,
    };
    match alternative {
        Some(alt) if alt.is_file() => Ok(alt),
        _ => Err(FormatError::Io {
            path: candidate,
            source: std::io::Error::new(
                std::io::ErrorKind::NotFound,
                format!("weight file `{program_path}` referenced by the program is missing"),
            ),
        }),
    }
}

/// Every blob-backed value of a program (constants, inline arguments, attributes, nested blocks), in program order.
pub fn program_blob_values(program: &Program) -> Vec<&Value> {
    let mut out = Vec::new();
    for v in program.attributes.values() {
        collect_blob_values(v, &mut out);
    }
    for f in program.functions.values() {
        for v in f.attributes.values() {
            collect_blob_values(v, &mut out);
        }
        block_blob_values(&f.block, &mut out);
    }
    out
}

/// Every blob reference of a program, in program order.
pub fn program_blob_refs(program: &Program) -> Vec<&BlobRef> {
    program_blob_values(program)
        .into_iter()
        .filter_map(|v| match &v.data {
            ValueData::Blob(b) => Some(b),
            _ => None,
        })
        .collect()
}

/// Every blob-backed value of a block and its nested blocks, in order.
pub fn block_blob_values<'a>(block: &'a Block, out: &mut Vec<&'a Value>) {
    for op in &block.operations {
        for arg in op.inputs.values() {
            for b in arg {
                if let Binding::Value(v) = b {
                    collect_blob_values(v, out);
                }
            }
        }
        for v in op.attributes.values() {
            collect_blob_values(v, out);
        }
        for b in &op.blocks {
            block_blob_values(b, out);
        }
    }
}

fn collect_blob_values<'a>(value: &'a Value, out: &mut Vec<&'a Value>) {
    match &value.data {
        ValueData::Blob(_) => out.push(value),
        ValueData::Tensor(_) => {}
        ValueData::Tuple(vs) | ValueData::List(vs) => {
            for v in vs {
                collect_blob_values(v, out);
            }
        }
        ValueData::Dict(kvs) => {
            for (k, v) in kvs {
                collect_blob_values(k, out);
                collect_blob_values(v, out);
            }
        }
    }
}
