//! The byte budget between a source and the ingest loop: a source takes a share of it for
//! every batch it hands over (the batch's payload bytes) and the share returns when the batch
//! has been ingested (the batch is dropped). A source that cannot get its share waits (the
//! in-process generator) or pauses its partitions (Kafka), so what sits in the channel is bounded
//! in bytes, not only in batches: a burst of 1 MiB messages cannot pile up gigabytes.

use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The budget; cheap to clone (all clones share it).
#[derive(Debug, Clone)]
pub struct ByteBudget {
    semaphore: Arc<Semaphore>,
    total: u32,
}

/// A share of the budget, given back when dropped.
#[derive(Debug)]
pub struct BudgetPermit {
    _permit: Option<OwnedSemaphorePermit>,
}

impl ByteBudget {
    /// A budget of `bytes` (at most 4 GiB).
    pub fn new(bytes: usize) -> Self {
        let total = u32::try_from(bytes.max(1)).unwrap_or(u32::MAX);
        ByteBudget {
            semaphore: Arc::new(Semaphore::new(total as usize)),
            total,
        }
    }

    /// A batch larger than the whole budget takes the whole budget (it still goes through).
    fn share(&self, bytes: usize) -> u32 {
        u32::try_from(bytes.max(1))
            .unwrap_or(u32::MAX)
            .min(self.total)
    }

    /// Waits for `bytes` of the budget.
    pub async fn acquire(&self, bytes: usize) -> BudgetPermit {
        let share = self.share(bytes);
        match self.semaphore.clone().acquire_many_owned(share).await {
            Ok(permit) => BudgetPermit {
                _permit: Some(permit),
            },
            // The semaphore is never closed; if it were, going on unbounded beats deadlock.
            Err(_) => BudgetPermit { _permit: None },
        }
    }

    /// `bytes` of the budget if they are free now.
    pub fn try_acquire(&self, bytes: usize) -> Option<BudgetPermit> {
        self.semaphore
            .clone()
            .try_acquire_many_owned(self.share(bytes))
            .ok()
            .map(|permit| BudgetPermit {
                _permit: Some(permit),
            })
    }

    /// Bytes of the budget free now.
    pub fn available(&self) -> usize {
        self.semaphore.available_permits()
    }

    pub fn total(&self) -> usize {
        self.total as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn shares_come_back_when_dropped() {
        let budget = ByteBudget::new(100);
        let a = budget.acquire(60).await;
        assert_eq!(budget.available(), 40);
        assert!(budget.try_acquire(50).is_none(), "over the budget");
        let b = budget.try_acquire(40).expect("fits");
        assert_eq!(budget.available(), 0);
        drop(a);
        assert_eq!(budget.available(), 60);
        drop(b);
        // A batch larger than the whole budget takes all of it, and still goes through.
        let big = budget.try_acquire(1_000).expect("the whole budget");
        assert_eq!(budget.available(), 0);
        drop(big);
        assert_eq!(budget.available(), 100);
    }
}
