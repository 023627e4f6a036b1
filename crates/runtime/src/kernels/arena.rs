//! Weight memory: large anonymous mappings, advised for transparent huge pages on Linux (fewer TLB misses
//! while a decode step streams every weight), carved into 64-byte aligned slices that are written once.

use std::sync::{Arc, Mutex};

use memmap2::MmapMut;

/// Size of one shared region; allocations larger than this get a region of their own.
const REGION_BYTES: usize = 64 << 20;
/// Regions are sized in whole huge pages.
const HUGE_PAGE: usize = 2 << 20;
/// Alignment of every slice handed out.
const ALIGN: usize = 64;

/// One anonymous mapping. Slices of it are handed out once each and never overlap.
struct Region {
    map: MmapMut,
    base: *mut u8,
    len: usize,
}

// SAFETY: the mapping lives as long as the Region; slices handed out never overlap, each is written only while
// being filled (under the arena's lock, before it is shared) and read-only afterwards.
unsafe impl Send for Region {}
// SAFETY: see above.
unsafe impl Sync for Region {}

impl Region {
    /// Faults in the pages of `[offset, offset + len)` on every kernel thread at once: the kernel zeroes fresh
    /// pages as they are first touched, which dominates loading large weights when done by one thread.
    fn prefault(&self, offset: usize, len: usize) {
        #[cfg(target_os = "linux")]
        {
            let start = offset / HUGE_PAGE * HUGE_PAGE;
            let end = (offset + len).min(self.len);
            let pieces = (end - start).div_ceil(HUGE_PAGE);
            super::pool::parallel_for(pieces, |i| {
                let at = start + i * HUGE_PAGE;
                let n = HUGE_PAGE.min(end - at);
                // Advisory: pages that are not prefaulted here fault in when `fill` writes them.
                let _ = self.map.advise_range(memmap2::Advice::PopulateWrite, at, n);
            });
        }
        #[cfg(not(target_os = "linux"))]
        let _ = (offset, len);
    }

    fn anon(len: usize) -> std::io::Result<Region> {
        let len = len.div_ceil(HUGE_PAGE) * HUGE_PAGE;
        let mut map = MmapMut::map_anon(len)?;
        #[cfg(target_os = "linux")]
        {
            // Advisory only: without transparent huge pages the memory still works with 4 KiB pages.
            let _ = map.advise(memmap2::Advice::HugePage);
        }
        let base = map.as_mut_ptr();
        Ok(Region { map, base, len })
    }
}

/// Allocator of write-once weight buffers (see the module docs). Cheap to share behind a reference.
#[derive(Default)]
pub struct WeightArena {
    open: Mutex<Option<(Arc<Region>, usize)>>,
}

/// Immutable bytes in a [`WeightArena`] region.
pub struct ArenaBytes {
    region: Arc<Region>,
    offset: usize,
    len: usize,
}

impl ArenaBytes {
    /// The bytes.
    pub fn as_slice(&self) -> &[u8] {
        // SAFETY: [offset, offset + len) lies inside the live region and was fully written before `self` existed.
        unsafe { std::slice::from_raw_parts(self.region.base.add(self.offset), self.len) }
    }

    /// Number of bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl WeightArena {
    /// An empty arena; regions are mapped on demand.
    pub fn new() -> WeightArena {
        WeightArena::default()
    }

    /// `len` zeroed bytes, filled by `fill` and then frozen.
    pub fn alloc_filled(
        &self,
        len: usize,
        fill: impl FnOnce(&mut [u8]),
    ) -> std::io::Result<ArenaBytes> {
        let need = len.max(1);
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let (region, offset) = if need > REGION_BYTES / 4 {
            (Arc::new(Region::anon(need)?), 0)
        } else {
            let fits = matches!(&*open, Some((r, used)) if r.len - used >= need);
            if !fits {
                *open = Some((Arc::new(Region::anon(REGION_BYTES)?), 0));
            }
            let Some((region, used)) = open.as_mut() else {
                return Err(std::io::Error::other("weight arena has no open region"));
            };
            let offset = *used;
            *used = (offset + need).div_ceil(ALIGN) * ALIGN;
            *used = (*used).min(region.len);
            (region.clone(), offset)
        };
        region.prefault(offset, len);
        // SAFETY: [offset, offset + len) lies inside the region and has never been handed out, so no other
        // reference to these bytes exists while `fill` writes them.
        let buf = unsafe { std::slice::from_raw_parts_mut(region.base.add(offset), len) };
        fill(buf);
        Ok(ArenaBytes {
            region,
            offset,
            len,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slices_keep_their_contents_and_alignment() {
        let arena = WeightArena::new();
        let a = arena.alloc_filled(100, |b| b.fill(7)).unwrap();
        let b = arena
            .alloc_filled(3, |b| b.copy_from_slice(&[1, 2, 3]))
            .unwrap();
        let big = arena
            .alloc_filled(REGION_BYTES, |b| b[REGION_BYTES - 1] = 9)
            .unwrap();
        assert!(a.as_slice().iter().all(|&x| x == 7));
        assert_eq!(b.as_slice(), &[1, 2, 3]);
        assert_eq!(big.as_slice()[REGION_BYTES - 1], 9);
        assert_eq!(big.as_slice()[0], 0);
        assert_eq!(b.as_slice().as_ptr() as usize % ALIGN, 0);
    }
}
