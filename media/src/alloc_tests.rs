//! Checks that the per-frame paths (Opus encode/decode/conceal, jitter push/pop, G.711, rewriting)
//! never allocate, with a test-only allocator that counts allocations per thread.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

struct Counting;

thread_local! {
    static ALLOCS: Cell<usize> = const { Cell::new(0) };
}

// SAFETY: forwards to the system allocator unchanged; only counts calls.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCS.with(|c| c.set(c.get() + 1));
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn allocations_during(f: impl FnOnce()) -> usize {
    let before = ALLOCS.with(Cell::get);
    f();
    ALLOCS.with(Cell::get) - before
}

#[test]
fn per_frame_paths_do_not_allocate() {
    // The counter works: a boxed buffer is seen.
    assert!(allocations_during(|| drop(std::hint::black_box(vec![0u8; 64]))) >= 1);
    let mut enc = crate::OpusEncoder::new(48_000, 1).unwrap();
    let mut dec = crate::OpusDecoder::new(48_000, 1).unwrap();
    let mut jb = crate::JitterBuffer::new(48_000);
    let mut fwd = crate::SeqTsRewriter::new();
    fwd.switch_source(1, 960);
    let pcm: Vec<i16> = (0..960).map(|i| ((i * 37) % 2000) as i16 - 1000).collect();
    let mut packet = [0u8; crate::opus_codec::MAX_PACKET_BYTES];
    let mut out = [0i16; 960];
    let mut ulaw = [0u8; 960];
    let n = allocations_during(|| {
        for i in 0..100u16 {
            let now = std::time::Duration::from_millis(u64::from(i) * 20);
            let len = enc.encode(&pcm, &mut packet).unwrap();
            jb.push(now, i, u32::from(i) * 960, &packet[..len]);
            let (seq, _) = fwd.rewrite(1, i, u32::from(i) * 960).unwrap();
            assert_eq!(seq, i);
            if let crate::Playout::Packet(p) = jb.pop(now) {
                dec.decode(p.payload, &mut out).unwrap();
            } else {
                dec.conceal(&mut out).unwrap();
            }
            crate::g711::ulaw_encode_slice(&out, &mut ulaw);
            crate::g711::ulaw_decode_slice(&ulaw, &mut out);
        }
    });
    assert_eq!(n, 0, "allocations on the per-frame path");
}
