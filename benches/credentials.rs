//! What one AUTH costs: a device-password check (HMAC under the server key)
//! beside one argon2id verify. Run:
//! `cargo bench --features testing --bench credentials`.

use std::hint::black_box;
use std::time::Instant;

use mailwarden::accounts::{device, password};
use mailwarden::secrets::ServerKey;

fn main() {
    let key = ServerKey::ephemeral();
    let typed = device::generate();
    let stored = device::hash(
        &key,
        "alice@example.com",
        &device::normalize(&typed).unwrap(),
    );

    let rounds = 100_000;
    let start = Instant::now();
    for _ in 0..rounds {
        let letters = device::normalize(black_box(&typed)).unwrap();
        let computed = device::hash(&key, black_box("alice@example.com"), &letters);
        assert!(device::matches(&stored, &computed));
    }
    let device_ns = start.elapsed().as_nanos() as f64 / rounds as f64;

    let phc = password::hash_blocking("correct horse battery staple").unwrap();
    let rounds = 30;
    let start = Instant::now();
    for _ in 0..rounds {
        assert!(password::verify_blocking(
            black_box("correct horse battery staple"),
            &phc
        ));
    }
    let argon_ns = start.elapsed().as_nanos() as f64 / rounds as f64;

    println!("device password check: {:.2} µs", device_ns / 1000.0);
    println!("argon2id verify:       {:.2} ms", argon_ns / 1_000_000.0);
    println!(
        "ratio:                 {:.0}x cheaper",
        argon_ns / device_ns
    );
}
