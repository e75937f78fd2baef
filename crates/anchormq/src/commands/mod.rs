//! One module per command; each command is a struct with an `execute`.

pub mod audit;
pub mod bench;
pub mod bridge;
pub mod demo;
pub mod deploy;
pub mod group;
pub mod node;
pub mod pubsub;
pub mod registrar;
pub mod stack;
pub mod up;
pub mod verify;

use tokio_util::sync::CancellationToken;

/// A token cancelled on SIGINT or SIGTERM. The handlers are installed before this returns, so a
/// signal sent once the caller has printed that it is ready stops it cleanly instead of killing it.
pub fn shutdown_on_signal() -> CancellationToken {
    let shutdown = CancellationToken::new();
    let cancel = shutdown.clone();
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match (
            signal(SignalKind::interrupt()),
            signal(SignalKind::terminate()),
        ) {
            (Ok(mut interrupt), Ok(mut terminate)) => {
                tokio::spawn(async move {
                    tokio::select! {
                        _ = interrupt.recv() => {}
                        _ = terminate.recv() => {}
                    }
                    eprintln!("shutting down…");
                    cancel.cancel();
                });
            }
            (Err(error), _) | (_, Err(error)) => {
                eprintln!(
                    "warning: cannot install the signal handlers ({error}); Ctrl-C kills without cleanup"
                );
            }
        }
    }
    #[cfg(not(unix))]
    {
        let ctrl_c = tokio::signal::ctrl_c();
        tokio::spawn(async move {
            let _ = ctrl_c.await;
            eprintln!("shutting down…");
            cancel.cancel();
        });
    }
    shutdown
}
