//! Being asked to stop, and picking a seed: the two things every command needs from the
//! process around it.

/// A future that resolves when the process is asked to stop (Ctrl-C or SIGTERM). The handlers
/// are installed when this is called, not when the future is first awaited: call it before
/// announcing readiness, so a stop signal that arrives right after the banner is never the
/// default action (an abrupt exit).
pub fn stop_signal() -> impl std::future::Future<Output = ()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let term = signal(SignalKind::terminate());
        let int = signal(SignalKind::interrupt());
        async move {
            match (term, int) {
                (Ok(mut term), Ok(mut int)) => {
                    tokio::select! {
                        _ = term.recv() => {},
                        _ = int.recv() => {},
                    }
                }
                (Err(e), _) | (_, Err(e)) => {
                    tracing::warn!(error = %e, "cannot listen for SIGTERM/SIGINT; only Ctrl-C stops rtap");
                    let _ = tokio::signal::ctrl_c().await;
                }
            }
        }
    }
    #[cfg(not(unix))]
    async move {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// A seed nobody chose (printed, and saved with the checkpoint, so a run can be replayed).
pub fn random_seed() -> u64 {
    use std::hash::{BuildHasher, RandomState};
    RandomState::new().hash_one(std::time::SystemTime::now())
}
