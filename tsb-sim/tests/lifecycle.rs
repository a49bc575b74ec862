//! Starting and dropping simulators leaks no threads; dropping inside a tokio runtime works.

mod common;

use common::*;

fn thread_count() -> usize {
    std::fs::read_dir("/proc/self/task")
        .map(|d| d.count())
        .unwrap_or(0)
}

#[test]
fn drop_stops_everything() {
    // Warm the key cache so the measurement only sees server threads.
    drop(start(test_config()));
    std::thread::sleep(std::time::Duration::from_millis(100));
    let before = thread_count();
    for _ in 0..5 {
        let sim = start(test_config());
        let http = Http::new(&sim.url());
        assert_eq!(http.get("/v1/versionInfo").status, 200);
        let url = sim.url();
        drop(sim);
        assert!(
            Http::new(&url)
                .try_send("GET", "/v1/versionInfo", None)
                .is_err(),
            "stopped"
        );
    }
    std::thread::sleep(std::time::Duration::from_millis(100));
    assert_eq!(thread_count(), before, "no leaked threads");

    // Dropping from inside another tokio runtime does not panic.
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    rt.block_on(async {
        let sim = start(test_config());
        drop(sim);
    });
}
