//! One request sent to several servers at once: a `parallel` route's request (the key's server
//! in each of its pools), or a warm_first write (the cold tier and the warm one). Each reply is
//! read whole; which one answers the client is the [`Answer`] rule's. Once the answer is out,
//! the replies still to come are read in the background and dropped: they never reach the
//! client and never hold up its next request (the exchange says [`super::Flow::Background`]).
//!
//! Grading replies, for the write policies: a success (`STORED`, `DELETED`, `TOUCHED`, `OK`,
//! `HD`, a number, an empty quiet reply) is best; a refusal (`NOT_STORED`, `EXISTS`,
//! `NOT_FOUND`, `NS`, `EX`, `NF`) next; then the client's own errors (`ERROR`, `CLIENT_ERROR`);
//! a backend failure (`SERVER_ERROR`, a timeout, a lost or down server) is the worst.

use bytes::Bytes;

use super::{Effects, Send};
use crate::config::WritePolicy;
use crate::upstream::Completion;

/// Which reply answers the client.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Answer {
    /// A read: the first hit to arrive answers at once; when all miss, the first server's
    /// miss (or failure).
    FirstHit,
    /// A read: the hit of the first server in order that has the key (each earlier server's
    /// reply is awaited), so the answer's cas token is always that server's.
    InOrder,
    /// A write: per the route's `writes` policy.
    Writes(WritePolicy),
    /// The reply of request number `.0` answers, whatever it is; the others finish in the
    /// background (warm_first's writes: the cold tier answers).
    Of(usize),
}

/// How good a reply is, for the write policies (higher is worse).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Grade {
    Success,
    Refused,
    ClientError,
    Failure,
}

fn grade(c: &Completion) -> Grade {
    let r = &c.reply[..];
    let token = |t: &[u8]| {
        r.strip_prefix(t)
            .is_some_and(|rest| matches!(rest.first(), None | Some(b' ' | b'\r' | b'\n')))
    };
    if c.failed.is_some() || r.starts_with(b"SERVER_ERROR") {
        Grade::Failure
    } else if r.starts_with(b"CLIENT_ERROR") || token(b"ERROR") {
        Grade::ClientError
    } else if ["NOT_STORED", "EXISTS", "NOT_FOUND", "NS", "EX", "NF"]
        .iter()
        .any(|t| token(t.as_bytes()))
    {
        Grade::Refused
    } else {
        Grade::Success
    }
}

/// One reply as it arrived.
#[derive(Clone, Debug)]
struct Reply {
    bytes: Bytes,
    grade: Grade,
    hit: bool,
}

/// State of a parallel request.
#[derive(Debug)]
pub struct Parallel {
    answer: Answer,
    /// Per request, its reply once in.
    replies: Vec<Option<Reply>>,
    arrived: usize,
    /// The request looks up a key (its hit or miss is counted once, by this exchange).
    lookup: bool,
    finished: bool,
    silent: bool,
}

impl Parallel {
    /// Sends `sends` (their parts numbered in order, read whole); `lookup` when the request is
    /// a read whose hit or miss the exchange counts once.
    pub fn start(
        sends: impl Iterator<Item = Send>,
        answer: Answer,
        lookup: bool,
        fx: &mut Effects,
    ) -> Parallel {
        let mut silent = false;
        let mut count = 0;
        for (part, mut send) in sends.enumerate() {
            send.part = u32::try_from(part).unwrap_or(u32::MAX);
            send.stream = false;
            if part == 0 {
                // The first request's framing is the client's (a warm_first invalidation
                // after it is read whole whatever the client asked).
                silent = send.framing.discard_reply;
            }
            fx.sends.push(send);
            count += 1;
        }
        Parallel {
            answer,
            replies: vec![None; count],
            arrived: 0,
            lookup,
            finished: count == 0,
            silent,
        }
    }

    /// True when the client gets nothing back (`noreply`).
    pub fn is_silent(&self) -> bool {
        self.silent
    }

    /// True once the client's answer is out.
    pub fn finished(&self) -> bool {
        self.finished
    }

    /// The reply (or failure) of request `part`.
    pub fn on_completion(&mut self, part: u32, c: &Completion, fx: &mut Effects) {
        if !c.end || self.finished {
            return;
        }
        let part = part as usize;
        let Some(slot) = self.replies.get_mut(part).filter(|s| s.is_none()) else {
            return;
        };
        let grade = grade(c);
        *slot = Some(Reply {
            bytes: c.reply.clone(),
            grade,
            hit: grade == Grade::Success && c.values > 0,
        });
        self.arrived += 1;
        let all_in = self.arrived == self.replies.len();
        let pick = match self.answer {
            Answer::FirstHit => {
                if c.values > 0 && grade == Grade::Success {
                    Some(part)
                } else if all_in {
                    Some(self.first_answered().unwrap_or(0))
                } else {
                    None
                }
            }
            Answer::InOrder => self.first_hit_in_order(),
            Answer::Of(p) => (p == part).then_some(p),
            Answer::Writes(WritePolicy::First) => {
                if grade == Grade::Success {
                    Some(part)
                } else if all_in {
                    Some(self.worst())
                } else {
                    None
                }
            }
            Answer::Writes(WritePolicy::All) => all_in.then(|| {
                let worst = self.worst();
                let all_good = self.grade_of(worst) == Some(Grade::Success);
                if all_good {
                    0
                } else {
                    worst
                }
            }),
            Answer::Writes(WritePolicy::Majority) => self.majority(part),
        };
        if let Some(pick) = pick {
            self.answer_with(pick, fx);
        }
    }

    fn grade_of(&self, part: usize) -> Option<Grade> {
        self.replies.get(part)?.as_ref().map(|r| r.grade)
    }

    /// The first request in order whose server answered (a miss rather than a failure).
    fn first_answered(&self) -> Option<usize> {
        self.replies
            .iter()
            .position(|r| r.as_ref().is_some_and(|r| r.grade != Grade::Failure))
    }

    /// `InOrder`: the first request in order that hit, once every one before it answered;
    /// when none hit and all answered, the first that answered.
    fn first_hit_in_order(&self) -> Option<usize> {
        for (part, reply) in self.replies.iter().enumerate() {
            match reply {
                None => return None,
                Some(r) if r.hit => return Some(part),
                Some(_) => {}
            }
        }
        Some(self.first_answered().unwrap_or(0))
    }

    /// The worst reply in (ties: the earliest request).
    fn worst(&self) -> usize {
        let mut worst = (Grade::Success, 0);
        for (part, r) in self.replies.iter().enumerate() {
            if let Some(r) = r {
                if r.grade > worst.0 {
                    worst = (r.grade, part);
                }
            }
        }
        worst.1
    }

    /// `majority`: the success that makes more than half; or, once that cannot happen, the
    /// most common other reply (ties: the worse, then the earlier).
    fn majority(&self, part: usize) -> Option<usize> {
        let n = self.replies.len();
        let quorum = n / 2 + 1;
        let in_: Vec<&Reply> = self.replies.iter().flatten().collect();
        let successes = in_.iter().filter(|r| r.grade == Grade::Success).count();
        if successes >= quorum {
            return Some(part);
        }
        let others = in_.len() - successes;
        if others <= n - quorum {
            return None;
        }
        let mut best: Option<(usize, Grade, usize)> = None;
        for (i, r) in self.replies.iter().enumerate() {
            let Some(r) = r.as_ref().filter(|r| r.grade != Grade::Success) else {
                continue;
            };
            let same = self
                .replies
                .iter()
                .flatten()
                .filter(|o| o.grade == r.grade && o.bytes == r.bytes)
                .count();
            let better = match best {
                None => true,
                Some((count, grade, _)) => same > count || (same == count && r.grade > grade),
            };
            if better {
                best = Some((same, r.grade, i));
            }
        }
        best.map(|(_, _, i)| i)
    }

    fn answer_with(&mut self, part: usize, fx: &mut Effects) {
        self.finished = true;
        let Some(reply) = self.replies.get(part).and_then(|r| r.as_ref()) else {
            return;
        };
        if self.lookup {
            fx.lookups = if reply.hit { (1, 0) } else { (0, 1) };
        }
        if !reply.bytes.is_empty() {
            fx.deliver.push(reply.bytes.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exchange::Framing;
    use crate::protocol::ReplyKind;
    use crate::upstream::{FailReason, Owner};

    fn send(server: usize) -> Send {
        Send {
            server,
            part: 0,
            bytes: Bytes::from_static(b"set k 0 0 1\r\nv\r\n"),
            value: None,
            framing: Framing {
                kind: ReplyKind::Line,
                on_failure: crate::upstream::Failure::Error,
                discard_reply: false,
                noop_tail: false,
            },
            stream: true,
        }
    }

    fn reply(text: &'static [u8], values: usize, failed: bool) -> Completion {
        let owner = Owner { token: 0, part: 0 };
        Completion::whole(owner, text, values, failed.then_some(FailReason::Timeout))
    }

    /// Runs `answer` over three servers whose replies arrive in `order` (part, reply); returns
    /// what the client got and after how many replies.
    fn run(answer: Answer, order: &[(u32, Completion)]) -> (Vec<u8>, usize) {
        let mut fx = Effects::default();
        let mut p = Parallel::start((0..3).map(send), answer, false, &mut fx);
        assert_eq!(fx.sends.len(), 3);
        assert!(fx.sends.iter().all(|s| !s.stream));
        for (n, (part, c)) in order.iter().enumerate() {
            fx.reset(true);
            p.on_completion(*part, c, &mut fx);
            if p.finished() {
                return (fx.deliver.concat(), n + 1);
            }
        }
        (Vec::new(), order.len())
    }

    #[test]
    fn write_policies_pick_the_reply_they_promise() {
        let ok = || reply(b"STORED\r\n", 0, false);
        let ns = || reply(b"NOT_STORED\r\n", 0, false);
        let err = || reply(b"SERVER_ERROR timeout\r\n", 0, true);
        let all = Answer::Writes(WritePolicy::All);
        let majority = Answer::Writes(WritePolicy::Majority);
        let first = Answer::Writes(WritePolicy::First);
        assert_eq!(
            run(all, &[(1, ok()), (0, ok()), (2, ok())]),
            (b"STORED\r\n".to_vec(), 3)
        );
        assert_eq!(
            run(all, &[(1, ok()), (0, ns()), (2, err())]),
            (b"SERVER_ERROR timeout\r\n".to_vec(), 3)
        );
        assert_eq!(
            run(majority, &[(2, err()), (0, ok()), (1, ok())]),
            (b"STORED\r\n".to_vec(), 3)
        );
        assert_eq!(
            run(majority, &[(0, ok()), (1, ok()), (2, err())]),
            (b"STORED\r\n".to_vec(), 2)
        );
        assert_eq!(
            run(majority, &[(0, ns()), (1, ns()), (2, ok())]),
            (b"NOT_STORED\r\n".to_vec(), 2),
            "two of three refused: a majority can no longer succeed"
        );
        assert_eq!(
            run(majority, &[(0, ns()), (2, err()), (1, ok())]),
            (b"SERVER_ERROR timeout\r\n".to_vec(), 2),
            "a tie between refusals goes to the worse"
        );
        assert_eq!(
            run(first, &[(2, err()), (1, ok()), (0, ok())]),
            (b"STORED\r\n".to_vec(), 2)
        );
        assert_eq!(
            run(first, &[(2, ns()), (1, err()), (0, ns())]),
            (b"SERVER_ERROR timeout\r\n".to_vec(), 3)
        );
        assert_eq!(
            run(Answer::Of(1), &[(0, err()), (1, ns())]),
            (b"NOT_STORED\r\n".to_vec(), 2)
        );
    }

    #[test]
    fn reads_take_the_first_hit_or_the_first_in_order() {
        let hit = || reply(b"VALUE k 0 1\r\nv\r\nEND\r\n", 1, false);
        let miss = || reply(b"END\r\n", 0, false);
        let fail = || reply(b"END\r\n", 0, true);
        assert_eq!(run(Answer::FirstHit, &[(2, hit())]).1, 1);
        assert_eq!(
            run(Answer::FirstHit, &[(0, fail()), (2, miss()), (1, miss())]),
            (b"END\r\n".to_vec(), 3)
        );
        assert_eq!(
            run(Answer::InOrder, &[(1, hit()), (2, hit()), (0, miss())]).1,
            3
        );
        assert_eq!(run(Answer::InOrder, &[(0, hit())]).1, 1);
    }
}
