//! Audio between legs. A bridge is two one-way links (each party's received audio into the
//! other's outgoing frame); a supervisor listening is two more (the target's received and sent
//! audio into the supervisor's frame); whisper and barge inject the supervisor into a party's
//! frame after what the supervisor hears of it was taken, so nobody hears themselves.
//!
//! The call core decides which links exist; the shell creates each as a bounded queue whose
//! sending end goes to the source leg and receiving end to the destination leg. A leg pushes a
//! frame the moment its RTP packet is decoded and pulls one per 20 ms tick, so a frame waits at
//! most one tick plus what the queue holds: at most [`MAX_QUEUED`] frames are kept, older ones are
//! dropped to keep the added delay near one packet.

use std::time::Instant;

use tokio::sync::mpsc;

/// Samples in a 20 ms frame at 8 kHz, the bridge's common format (each leg transcodes to its own
/// codec).
pub const SAMPLES: usize = 160;
/// Frames a link may hold: enough for a burst of two packets, small enough to bound the delay.
const CAPACITY: usize = 8;
/// Frames kept behind the one pulled; more are late and dropped.
const MAX_QUEUED: usize = 2;

/// Which of a leg's audio a link carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Tap {
    /// What the leg's far end says (decoded RTP, as it arrives).
    Received,
    /// What the leg sends its far end, before any injected audio (the app's playout and the
    /// legs it is bridged to).
    Sent,
}

/// How a link's audio enters its destination's outgoing frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Feed {
    /// Mixed with the playout: part of what the leg's [`Tap::Sent`] carries.
    Main,
    /// Added last (whisper, barge): heard by the far end, not passed on to listeners.
    Inject,
}

/// One 20 ms frame and when its packet arrived (for the added-delay figure).
#[derive(Debug, Clone)]
pub struct Frame {
    pub pcm: [i16; SAMPLES],
    pub arrived: Instant,
}

/// The sending end, held by the source leg.
#[derive(Debug)]
pub struct LinkTx {
    pub peer: u64,
    pub tap: Tap,
    tx: mpsc::Sender<Frame>,
}

/// The receiving end, held by the destination leg.
#[derive(Debug)]
pub struct LinkRx {
    pub peer: u64,
    pub feed: Feed,
    rx: mpsc::Receiver<Frame>,
}

/// A link from leg `from` (its `tap`) to leg `to` (as `feed`).
pub fn link(from: u64, tap: Tap, to: u64, feed: Feed) -> (LinkTx, LinkRx) {
    let (tx, rx) = mpsc::channel(CAPACITY);
    (
        LinkTx { peer: to, tap, tx },
        LinkRx {
            peer: from,
            feed,
            rx,
        },
    )
}

impl LinkTx {
    /// Never waits: a full queue means the destination is not pulling, and the frame is lost.
    /// `false` once the destination has gone.
    pub fn push(&self, frame: &Frame) -> bool {
        match self.tx.try_send(frame.clone()) {
            Ok(()) | Err(mpsc::error::TrySendError::Full(_)) => true,
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        }
    }
}

/// The source leg of a link has gone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SourceGone;

impl LinkRx {
    /// This tick's frame, if one came; frames beyond [`MAX_QUEUED`] behind it are dropped.
    pub fn pull(&mut self) -> Result<Option<Frame>, SourceGone> {
        let frame = match self.rx.try_recv() {
            Ok(f) => f,
            Err(mpsc::error::TryRecvError::Empty) => return Ok(None),
            Err(mpsc::error::TryRecvError::Disconnected) => return Err(SourceGone),
        };
        let mut latest = frame;
        while self.rx.len() > MAX_QUEUED {
            match self.rx.try_recv() {
                Ok(f) => latest = f,
                Err(_) => break,
            }
        }
        Ok(Some(latest))
    }
}

/// Adds `from` into `into`, saturating (as far as the shorter goes).
pub fn add(into: &mut [i16], from: &[i16]) {
    for (a, b) in into.iter_mut().zip(from) {
        *a = a.saturating_add(*b);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(v: i16) -> Frame {
        Frame {
            pcm: [v; SAMPLES],
            arrived: Instant::now(),
        }
    }

    #[test]
    fn a_frame_crosses_and_a_backlog_is_trimmed() {
        let (tx, mut rx) = link(1, Tap::Received, 2, Feed::Main);
        assert_eq!(rx.pull().unwrap().map(|f| f.pcm[0]), None);
        for v in 1..=5 {
            assert!(tx.push(&frame(v)));
        }
        // 5 queued: the oldest two go so that two stay behind the one played.
        assert_eq!(rx.pull().unwrap().map(|f| f.pcm[0]), Some(3));
        assert_eq!(rx.pull().unwrap().map(|f| f.pcm[0]), Some(4));
        assert_eq!(rx.pull().unwrap().map(|f| f.pcm[0]), Some(5));
        assert_eq!(rx.pull().unwrap().map(|f| f.pcm[0]), None);
        drop(tx);
        assert!(rx.pull().is_err(), "the source leg ended");
    }

    #[test]
    fn a_gone_destination_is_reported() {
        let (tx, rx) = link(1, Tap::Sent, 2, Feed::Inject);
        drop(rx);
        assert!(!tx.push(&frame(1)));
    }

    #[test]
    fn mixing_saturates() {
        let mut a = [30000i16; SAMPLES];
        add(&mut a, &[10000; SAMPLES]);
        assert_eq!(a[0], i16::MAX);
    }
}
