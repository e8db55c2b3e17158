//! The owner tokens this worker gives its backend requests: the backend layer carries them
//! back opaque, and only this module knows they name an exchange or a job.

use crate::exchange::ExchangeId;
use crate::upstream::jobs::JobId;
use crate::upstream::Owner;

/// Set in the tokens of jobs (the slab index's top bit, which no slab of this process
/// reaches).
const JOB: u64 = 1 << 63;

/// Who a token names.
pub(crate) enum Addressee {
    /// An exchange (it may have gone: its generation decides).
    Exchange(ExchangeId),
    /// A job (likewise).
    Job(JobId),
}

/// The owner of request `part` of exchange `id`.
pub(crate) fn exchange(id: ExchangeId, part: u32) -> Owner {
    let token = id.to_bits();
    debug_assert!(token & JOB == 0, "exchange slab index over 2^31");
    Owner { token, part }
}

/// The owner of request `part` of job `id`.
pub(crate) fn job(id: JobId, part: u32) -> Owner {
    Owner {
        token: id.to_bits() | JOB,
        part,
    }
}

/// Who `owner` names.
pub(crate) fn addressee(owner: Owner) -> Addressee {
    if owner.token & JOB == 0 {
        Addressee::Exchange(ExchangeId::from_bits(owner.token))
    } else {
        Addressee::Job(JobId::from_bits(owner.token & !JOB))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::gen_slab::GenSlab;

    #[test]
    fn tokens_name_their_exchange_or_job_and_nothing_else() {
        let mut exchanges: GenSlab<u8> = GenSlab::default();
        let mut jobs: GenSlab<u16> = GenSlab::default();
        for _ in 0..3 {
            exchanges.insert(0);
            jobs.insert(0);
        }
        let e = ExchangeId::from_bits(exchanges.insert(7).to_bits());
        let j = JobId::from_bits(jobs.insert(9).to_bits());
        match addressee(exchange(e, 4)) {
            Addressee::Exchange(id) => assert_eq!(id, e),
            Addressee::Job(_) => panic!("an exchange token decoded as a job"),
        }
        match addressee(job(j, 5)) {
            Addressee::Job(id) => assert_eq!(id, j),
            Addressee::Exchange(_) => panic!("a job token decoded as an exchange"),
        }
        assert_eq!(job(j, 5).part, 5);
        assert_ne!(
            exchange(e, 0).token,
            job(JobId::from_bits(e.to_bits()), 0).token
        );
    }
}
