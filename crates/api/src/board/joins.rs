//! How legs are joined: a bridge (api.md §3.8) or a listener (§3.10). A join is data; the audio
//! links between media legs follow from the joins of live legs ([`sync_links`]), so a leg that
//! answers, holds or hangs up changes who hears whom by recomputing, never by special cases.

use std::collections::BTreeSet;
use std::time::Instant;

use media::mix::{Feed, Tap};

use super::leg::{BridgeRole, Direction, LegState};
use super::{dialog, LegId, Output, Switchboard};
use crate::cause::HangupCause;
use crate::request::SnoopMode;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Join {
    /// The original call and its answered agent leg hear each other.
    Bridge { call: LegId, agent: LegId },
    /// `listener` hears both parties of `target`; in whisper the agent hears the listener too,
    /// in barge both parties do.
    Snoop {
        target: LegId,
        listener: LegId,
        mode: SnoopMode,
    },
}

/// One one-way audio link.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct Link {
    pub from: LegId,
    pub to: LegId,
    pub tap: Tap,
    pub feed: Feed,
}

fn live(sb: &Switchboard, leg: LegId) -> bool {
    sb.legs.get(&leg).is_some_and(|l| l.is_confirmed())
}

/// The other party of `leg`'s bridge, while both are up.
pub(super) fn bridged_to(sb: &Switchboard, leg: LegId) -> Option<LegId> {
    sb.joins.iter().find_map(|j| match *j {
        Join::Bridge { call, agent } if call == leg && live(sb, agent) && live(sb, call) => {
            Some(agent)
        }
        Join::Bridge { call, agent } if agent == leg && live(sb, agent) && live(sb, call) => {
            Some(call)
        }
        _ => None,
    })
}

/// The agent of a call: the leg itself if it is an agent leg, else the agent it is bridged to.
pub(super) fn agent_of(sb: &Switchboard, leg: LegId) -> Option<LegId> {
    let l = sb.legs.get(&leg)?;
    if l.direction == Direction::Bridge {
        return Some(leg);
    }
    bridged_to(sb, leg)
}

fn desired(sb: &Switchboard) -> BTreeSet<Link> {
    let mut out = BTreeSet::new();
    let mut add = |from, tap, to, feed| {
        out.insert(Link {
            from,
            to,
            tap,
            feed,
        });
    };
    for j in &sb.joins {
        match *j {
            Join::Bridge { call, agent } => {
                if live(sb, call) && live(sb, agent) {
                    add(call, Tap::Received, agent, Feed::Main);
                    add(agent, Tap::Received, call, Feed::Main);
                }
            }
            Join::Snoop {
                target,
                listener,
                mode,
            } => {
                if !live(sb, target) || !live(sb, listener) {
                    continue;
                }
                // What the target's far end says, and what it hears (the other party, the app).
                add(target, Tap::Received, listener, Feed::Main);
                add(target, Tap::Sent, listener, Feed::Main);
                match mode {
                    SnoopMode::Listen => {}
                    SnoopMode::Whisper => {
                        if let Some(agent) = agent_of(sb, target) {
                            add(listener, Tap::Received, agent, Feed::Inject);
                        }
                    }
                    SnoopMode::Barge => {
                        add(listener, Tap::Received, target, Feed::Inject);
                        if let Some(other) = bridged_to(sb, target) {
                            add(listener, Tap::Received, other, Feed::Inject);
                        }
                    }
                }
            }
        }
    }
    out
}

/// Tells the shell the links that changed: every pair whose links differ is unlinked and linked
/// again as it should be.
pub(super) fn sync_links(sb: &mut Switchboard) {
    let want = desired(sb);
    let pairs: BTreeSet<(LegId, LegId)> = want
        .symmetric_difference(&sb.links)
        .map(|l| (l.from, l.to))
        .collect();
    for (from, to) in pairs {
        if sb.links.iter().any(|l| l.from == from && l.to == to) {
            sb.out.push_back(Output::Unlink { from, to });
        }
        for l in want.iter().filter(|l| l.from == from && l.to == to) {
            sb.out.push_back(Output::Link {
                from: l.from,
                tap: l.tap,
                to: l.to,
                feed: l.feed,
            });
        }
    }
    sb.links = want;
}

/// An agent leg answered: the parties hear each other (the call's stream stops first if asked).
pub(super) fn answered(sb: &mut Switchboard, _now: Instant, leg: LegId) {
    let Some(BridgeRole::Agent { call, stop_stream }) = sb.legs.get(&leg).map(|l| l.bridge) else {
        return;
    };
    if !live(sb, call) {
        return;
    }
    if stop_stream && sb.legs[&call].streaming {
        sb.media(
            call,
            media::leg::Command::StopStream {
                req: None,
                reason: "bridge".into(),
            },
        );
    }
    sb.joins.push(Join::Bridge { call, agent: leg });
    sync_links(sb);
}

/// A leg is ending: what depends on it follows (api.md §3.8, §3.10), its joins go, and so do
/// its links.
pub(super) fn leg_ended(sb: &mut Switchboard, now: Instant, leg: LegId) {
    let Some(role) = sb.legs.get(&leg).map(|l| l.bridge) else {
        return;
    };
    let was_answered = sb.legs[&leg].answered.is_some();
    sb.joins.retain(|j| match *j {
        Join::Bridge { call, agent } => call != leg && agent != leg,
        Join::Snoop {
            target, listener, ..
        } => target != leg && listener != leg,
    });
    sync_links(sb);
    match role {
        BridgeRole::None => {}
        // The original call ended: its agent leg goes too (CANCEL if still ringing).
        BridgeRole::Call { agent } => {
            let ringing = matches!(
                sb.legs.get(&agent).map(|l| &l.state),
                Some(LegState::Dialing(_))
            );
            let cause = if ringing {
                HangupCause::ORIGINATOR_CANCEL
            } else {
                HangupCause::NORMAL_CLEARING
            };
            dialog::hang_up(sb, now, agent, cause, None);
        }
        // The agent leg ended: the call is let go of it, and ends with it unless it parks
        // (`park_after_bridge`) or the agent never answered.
        BridgeRole::Agent { call, .. } => {
            let Some(c) = sb.legs.get_mut(&call) else {
                return;
            };
            if c.bridge == (BridgeRole::Call { agent: leg }) {
                c.bridge = BridgeRole::None;
            }
            let park = c
                .vars
                .get("park_after_bridge")
                .is_some_and(|v| v.eq_ignore_ascii_case("true"));
            if was_answered && !park {
                dialog::hang_up(sb, now, call, HangupCause::NORMAL_CLEARING, None);
            }
        }
    }
}
